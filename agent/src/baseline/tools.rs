//! The tool chain on baseline files: diff, merge, explain and the
//! least-privilege report.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::SystemTime,
};

use serde::Serialize;

use super::{
    format::{BaselineDoc, Edge, Located, Selector},
    learn::Evidence,
    matcher::{Matcher, ObservedEdge, Verdict, mismatches, nearest},
    validate::{Baseline, PortRange, describe},
};
use crate::{
    flow::Transport,
    identity::model::{ContainerRuntime, Identity, Workload, WorkloadKind},
};

/// Ports in their natural order (transport, then number).
fn sorted_ports(ports: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut ports: Vec<String> = ports
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    ports.sort_by_key(|p| PortRange::parse(p).ok());
    ports
}

// ---- diff ----

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EdgeSummary {
    pub from: String,
    pub to: String,
    pub ports: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EdgeChange {
    pub from: String,
    pub to: String,
    pub ports_added: Vec<String>,
    pub ports_removed: Vec<String>,
    /// Other fields that changed: reason, owner, expires.
    pub fields: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Diff {
    pub added: Vec<EdgeSummary>,
    pub removed: Vec<EdgeSummary>,
    pub changed: Vec<EdgeChange>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

struct Pair {
    ports: BTreeSet<String>,
    reason: BTreeSet<String>,
    owner: BTreeSet<String>,
    expires: BTreeSet<String>,
}

/// Edges by (from, to), every edge between the same ends folded together.
fn pairs(doc: &BaselineDoc) -> BTreeMap<(Selector, Selector), Pair> {
    let mut map: BTreeMap<(Selector, Selector), Pair> = BTreeMap::new();
    for edge in &doc.spec.edges {
        let pair = map
            .entry((edge.from.value.clone(), edge.to.value.clone()))
            .or_insert_with(|| Pair {
                ports: BTreeSet::new(),
                reason: BTreeSet::new(),
                owner: BTreeSet::new(),
                expires: BTreeSet::new(),
            });
        pair.ports
            .extend(edge.ports.iter().map(|p| p.value.clone()));
        pair.reason.extend(edge.reason.clone());
        pair.owner.extend(edge.owner.clone());
        pair.expires
            .extend(edge.expires.as_ref().map(|e| e.value.clone()));
    }
    map
}

/// Edge-level differences from `old` to `new`.
pub fn diff(old: &BaselineDoc, new: &BaselineDoc) -> Diff {
    let (old, new) = (pairs(old), pairs(new));
    let mut diff = Diff::default();
    let summary = |(from, to): &(Selector, Selector), pair: &Pair| EdgeSummary {
        from: describe(from),
        to: describe(to),
        ports: sorted_ports(pair.ports.iter().cloned()),
    };
    for (key, pair) in &old {
        match new.get(key) {
            None => diff.removed.push(summary(key, pair)),
            Some(now) => {
                let mut fields = Vec::new();
                for (name, a, b) in [
                    ("reason", &pair.reason, &now.reason),
                    ("owner", &pair.owner, &now.owner),
                    ("expires", &pair.expires, &now.expires),
                ] {
                    if a != b {
                        fields.push(name.to_owned());
                    }
                }
                let added = sorted_ports(now.ports.difference(&pair.ports).cloned());
                let removed = sorted_ports(pair.ports.difference(&now.ports).cloned());
                if !added.is_empty() || !removed.is_empty() || !fields.is_empty() {
                    diff.changed.push(EdgeChange {
                        from: describe(&key.0),
                        to: describe(&key.1),
                        ports_added: added,
                        ports_removed: removed,
                        fields,
                    });
                }
            }
        }
    }
    for (key, pair) in &new {
        if !old.contains_key(key) {
            diff.added.push(summary(key, pair));
        }
    }
    diff
}

/// `+`, `-` and `~` lines for people.
pub fn diff_text(diff: &Diff) -> String {
    let mut out = String::new();
    for e in &diff.added {
        out.push_str(&format!("+ {} -> {} {}\n", e.from, e.to, e.ports.join(",")));
    }
    for e in &diff.removed {
        out.push_str(&format!("- {} -> {} {}\n", e.from, e.to, e.ports.join(",")));
    }
    for c in &diff.changed {
        let mut what = Vec::new();
        if !c.ports_added.is_empty() {
            what.push(format!("ports +{}", c.ports_added.join(",+")));
        }
        if !c.ports_removed.is_empty() {
            what.push(format!("ports -{}", c.ports_removed.join(",-")));
        }
        if !c.fields.is_empty() {
            what.push(format!("{} changed", c.fields.join(", ")));
        }
        out.push_str(&format!("~ {} -> {}: {}\n", c.from, c.to, what.join("; ")));
    }
    if out.is_empty() {
        out.push_str("no edge changed\n");
    }
    out
}

// ---- merge ----

/// One baseline with every edge of `docs`: edges with the same ends and the
/// same reason, owner and expiry become one with all their ports; the
/// result is sorted, so the order of the inputs does not matter.
pub fn merge(docs: &[BaselineDoc], name: &str) -> BaselineDoc {
    type Key = (
        Selector,
        Selector,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let mut edges: BTreeMap<Key, BTreeSet<String>> = BTreeMap::new();
    for doc in docs {
        for edge in &doc.spec.edges {
            let key = (
                edge.from.value.clone(),
                edge.to.value.clone(),
                edge.reason.clone(),
                edge.owner.clone(),
                edge.expires.as_ref().map(|e| e.value.clone()),
            );
            edges
                .entry(key)
                .or_default()
                .extend(edge.ports.iter().map(|p| p.value.clone()));
        }
    }
    let mut merged = BaselineDoc::new(name);
    for ((from, to, reason, owner, expires), ports) in edges {
        merged.spec.edges.push(Located::new(Edge {
            from: Located::new(from),
            to: Located::new(to),
            ports: Located::new(sorted_ports(ports).into_iter().map(Located::new).collect()),
            reason,
            owner,
            expires: expires.map(Located::new),
        }));
    }
    merged
}

// ---- explain ----

/// Parses an identity's canonical text (`workload:ns/kind/name`,
/// `cgroup:/path`, `systemd:unit`, `container:runtime/name`, `node:name`,
/// `external:addr`, or a bare address).
pub fn parse_identity(text: &str) -> Result<Identity, String> {
    if let Ok(address) = text.parse::<IpAddr>() {
        return Ok(Identity::External {
            address: address.to_canonical(),
        });
    }
    let Some((kind, rest)) = text.split_once(':') else {
        return Err(format!(
            "{text:?} is not an identity: workload:NS/KIND/NAME, cgroup:PATH, systemd:UNIT, container:RUNTIME/NAME, node:NAME or external:ADDRESS"
        ));
    };
    Ok(match kind {
        "workload" => {
            let parts: Vec<&str> = rest.splitn(3, '/').collect();
            let [namespace, kind, name] = parts.as_slice() else {
                return Err(format!("{text:?}: a workload is workload:NS/KIND/NAME"));
            };
            Identity::Workload(Workload {
                cluster: String::new(),
                namespace: namespace.to_string(),
                kind: WorkloadKind::parse(kind),
                name: name.to_string(),
                service_account: String::new(),
                labels: BTreeMap::new(),
            })
        }
        "cgroup" => Identity::Cgroup {
            path: rest.to_owned(),
        },
        "systemd" => Identity::SystemdUnit {
            unit: rest.to_owned(),
        },
        "node" => Identity::Node {
            name: rest.to_owned(),
        },
        "external" => Identity::External {
            address: rest
                .parse::<IpAddr>()
                .map_err(|_| format!("{rest:?} is not an IP address"))?
                .to_canonical(),
        },
        "container" => {
            let (runtime, name) = rest
                .split_once('/')
                .ok_or_else(|| format!("{text:?}: a container is container:RUNTIME/NAME"))?;
            let runtime = match runtime {
                "containerd" => ContainerRuntime::Containerd,
                "crio" => ContainerRuntime::Crio,
                "docker" => ContainerRuntime::Docker,
                "podman" => ContainerRuntime::Podman,
                other => return Err(format!("unknown container runtime {other:?}")),
            };
            Identity::Container {
                runtime,
                id: name.to_owned(),
                name: Some(name.to_owned()),
            }
        }
        other => return Err(format!("unknown identity kind {other:?}")),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub edge: String,
    pub verdict: &'static str,
    /// The rule that allows it (or, for `expired-rule`, would).
    pub rule: Option<String>,
    /// Otherwise the nearest rules and why each does not allow it.
    pub nearest: Vec<NearRule>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NearRule {
    pub rule: String,
    pub reasons: Vec<String>,
}

pub fn explain(baseline: &Baseline, edge: &ObservedEdge, now: SystemTime) -> Explanation {
    let matcher = Matcher::new(std::sync::Arc::new(baseline.clone()));
    let verdict = matcher.judge(edge, now);
    let rule = match verdict {
        Verdict::Allowed(i) | Verdict::Expired(i) => Some(baseline.rules[i].label()),
        Verdict::Unauthorized => None,
    };
    let near = match verdict {
        Verdict::Allowed(_) => Vec::new(),
        Verdict::Expired(i) => vec![NearRule {
            rule: baseline.rules[i].label(),
            reasons: mismatches(&baseline.rules[i], edge, now),
        }],
        Verdict::Unauthorized => nearest(baseline, edge, now, 3)
            .into_iter()
            .map(|(rule, reasons)| NearRule {
                rule: rule.label(),
                reasons,
            })
            .collect(),
    };
    Explanation {
        edge: edge.to_string(),
        verdict: verdict.name(),
        rule,
        nearest: near,
    }
}

pub fn explanation_text(e: &Explanation) -> String {
    let mut out = format!("{}: {}\n", e.edge, e.verdict);
    if let Some(rule) = &e.rule {
        out.push_str(&format!("  rule: {rule}\n"));
    }
    if e.verdict == "unauthorized" && e.nearest.is_empty() {
        out.push_str("  no rule names either end\n");
    }
    for near in &e.nearest {
        out.push_str(&format!("  nearest: {}\n", near.rule));
        for reason in &near.reasons {
            out.push_str(&format!("    - {reason}\n"));
        }
    }
    out
}

// ---- least privilege ----

#[derive(Debug, Clone, Serialize)]
pub struct UnusedEdge {
    pub rule: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BlastRadius {
    pub identity: String,
    /// Known identities (from the evidence and the baseline) it may reach.
    pub reachable: usize,
    /// Distinct ports (per transport) it may reach on them.
    pub ports: u64,
    /// Rules that let it reach peers no list can bound (CIDRs, wildcards).
    pub open_ended_rules: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct PrivilegeReport {
    pub baseline_digest: String,
    pub observed_edges: usize,
    /// Edges nothing used during the evidence window: candidates to remove.
    pub unused: Vec<UnusedEdge>,
    pub blast_radius: Vec<BlastRadius>,
}

/// The one identity a selector names, if it names exactly one.
pub fn named_identity(selector: &Selector) -> Option<Identity> {
    let text = if let (Some(ns), Some(w)) = (&selector.namespace, &selector.workload) {
        format!(
            "workload:{ns}/{}/{}",
            w.kind.as_deref()?.to_ascii_lowercase(),
            w.name
        )
    } else if let Some(path) = &selector.cgroup {
        format!("cgroup:{path}")
    } else if let Some(unit) = &selector.systemd {
        format!("systemd:{unit}")
    } else if let Some(node) = &selector.node {
        format!("node:{node}")
    } else if let Some(cidr) = &selector.cidr {
        let net = super::selector::parse_cidr(cidr).ok()?;
        if net.prefix_len() != net.max_prefix_len() {
            return None;
        }
        format!("external:{}", net.addr())
    } else {
        return None;
    };
    if text.contains('*') {
        return None;
    }
    parse_identity(&text).ok()
}

pub fn privilege_report(
    baseline: &Baseline,
    evidence: &Evidence,
    now: SystemTime,
) -> PrivilegeReport {
    let observed: Vec<ObservedEdge> = evidence
        .edges
        .iter()
        .map(|e| ObservedEdge {
            from: e.from.clone(),
            to: e.to.clone(),
            port: e.port,
            transport: e.transport,
        })
        .collect();
    let matcher = Matcher::new(std::sync::Arc::new(baseline.clone()));
    let mut used = BTreeSet::new();
    for edge in &observed {
        if let Verdict::Allowed(i) = matcher.judge(edge, now) {
            used.insert(i);
        }
    }
    let unused = baseline
        .rules
        .iter()
        .enumerate()
        .filter(|(i, _)| !used.contains(i))
        .map(|(_, rule)| UnusedEdge { rule: rule.label() })
        .collect();

    let mut universe: BTreeSet<Identity> = BTreeSet::new();
    for edge in &observed {
        universe.insert(edge.from.clone());
        universe.insert(edge.to.clone());
    }
    for rule in &baseline.rules {
        universe.extend(named_identity(&rule.edge.from.value));
        universe.extend(named_identity(&rule.edge.to.value));
    }
    let mut blast_radius = Vec::new();
    for source in &universe {
        if matches!(source, Identity::External { .. }) {
            continue;
        }
        let rules: Vec<_> = baseline
            .rules
            .iter()
            .filter(|r| !r.expired(now) && r.from.matches(source))
            .collect();
        if rules.is_empty() {
            continue;
        }
        let reachable = universe
            .iter()
            .filter(|to| *to != source && rules.iter().any(|r| r.to.matches(to)))
            .count();
        let mut ports: BTreeSet<(Transport, u16, u16)> = BTreeSet::new();
        for rule in &rules {
            ports.extend(rule.ports.iter().map(|p| (p.transport, p.first, p.last)));
        }
        let open_ended_rules = rules
            .iter()
            .filter(|r| named_identity(&r.edge.to.value).is_none())
            .count();
        blast_radius.push(BlastRadius {
            identity: source.canonical(),
            reachable,
            ports: count_ports(&ports),
            open_ended_rules,
        });
    }
    blast_radius.sort_by(|a, b| {
        (b.reachable, b.ports, &a.identity).cmp(&(a.reachable, a.ports, &b.identity))
    });
    PrivilegeReport {
        baseline_digest: baseline.digest.clone(),
        observed_edges: observed.len(),
        unused,
        blast_radius,
    }
}

/// Ports covered by possibly overlapping ranges.
fn count_ports(ranges: &BTreeSet<(Transport, u16, u16)>) -> u64 {
    let mut total = 0u64;
    let mut current: Option<(Transport, u16, u16)> = None;
    for &(t, a, b) in ranges {
        match &mut current {
            Some((ct, _, cb)) if *ct == t && a <= cb.saturating_add(1) => *cb = (*cb).max(b),
            _ => {
                if let Some((_, ca, cb)) = current {
                    total += u64::from(cb - ca) + 1;
                }
                current = Some((t, a, b));
            }
        }
    }
    if let Some((_, ca, cb)) = current {
        total += u64::from(cb - ca) + 1;
    }
    total
}

pub fn privilege_text(report: &PrivilegeReport) -> String {
    let mut out = format!(
        "baseline {} against {} observed edges\n\nunused edges (candidates to remove): {}\n",
        report.baseline_digest,
        report.observed_edges,
        report.unused.len()
    );
    for u in &report.unused {
        out.push_str(&format!("  {}\n", u.rule));
    }
    out.push_str("\nblast radius (reachable identities, ports, open-ended rules):\n");
    for b in &report.blast_radius {
        out.push_str(&format!(
            "  {}: {} identities, {} ports, {} open-ended\n",
            b.identity, b.reachable, b.ports, b.open_ended_rules
        ));
    }
    out
}
