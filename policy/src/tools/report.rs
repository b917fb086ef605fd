//! Least privilege: edges the evidence never used, and each identity's
//! blast radius under the baseline.

use std::{collections::BTreeSet, path::Path, sync::Arc, time::SystemTime};

use serde::Serialize;

use super::{ToolError, load_valid, parse_identity};
use crate::{
    baseline::{
        format::Selector,
        matcher::{Matcher, ObservedEdge, RuleMatch},
        selector::parse_cidr,
        validate::Baseline,
    },
    flow::Transport,
    identity::Identity,
    learn::Evidence,
};

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
pub(crate) fn named_identity(selector: &Selector) -> Option<Identity> {
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
        let net = parse_cidr(cidr).ok()?;
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
    PrivilegeReport {
        baseline_digest: baseline.digest.clone(),
        observed_edges: observed.len(),
        unused: unused_rules(baseline, &observed, now),
        blast_radius: blast_radius(baseline, &observed, now),
    }
}

/// The rules no observed edge needed.
fn unused_rules(
    baseline: &Baseline,
    observed: &[ObservedEdge],
    now: SystemTime,
) -> Vec<UnusedEdge> {
    let matcher = Matcher::new(Arc::new(baseline.clone()));
    let mut used = BTreeSet::new();
    for edge in observed {
        if let RuleMatch::Allowed(i) = matcher.judge(edge, now) {
            used.insert(i);
        }
    }
    baseline
        .rules
        .iter()
        .enumerate()
        .filter(|(i, _)| !used.contains(i))
        .map(|(_, rule)| UnusedEdge { rule: rule.label() })
        .collect()
}

/// What each known identity (observed, or named by a rule) may reach,
/// widest first.
fn blast_radius(
    baseline: &Baseline,
    observed: &[ObservedEdge],
    now: SystemTime,
) -> Vec<BlastRadius> {
    let mut universe: BTreeSet<Identity> = BTreeSet::new();
    for edge in observed {
        universe.insert(edge.from.clone());
        universe.insert(edge.to.clone());
    }
    for rule in &baseline.rules {
        universe.extend(named_identity(&rule.edge.from.value));
        universe.extend(named_identity(&rule.edge.to.value));
    }
    let mut radii: Vec<BlastRadius> = universe
        .iter()
        .filter(|source| !matches!(source, Identity::External { .. }))
        .filter_map(|source| radius(baseline, &universe, source, now))
        .collect();
    radii.sort_by(|a, b| {
        (b.reachable, b.ports, &a.identity).cmp(&(a.reachable, a.ports, &b.identity))
    });
    radii
}

/// What `source` may reach among `universe`, when any rule lets it.
fn radius(
    baseline: &Baseline,
    universe: &BTreeSet<Identity>,
    source: &Identity,
    now: SystemTime,
) -> Option<BlastRadius> {
    let rules: Vec<_> = baseline
        .rules
        .iter()
        .filter(|r| !r.expired(now) && r.from.matches(source))
        .collect();
    if rules.is_empty() {
        return None;
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
    Some(BlastRadius {
        identity: source.canonical(),
        reachable,
        ports: count_ports(&ports),
        open_ended_rules,
    })
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

/// [`privilege_report`] of the baseline in `file` against the evidence in
/// `evidence` (from `eastwatch learn --evidence`).
pub fn report_files(
    file: &Path,
    evidence: &Path,
    now: SystemTime,
) -> Result<PrivilegeReport, ToolError> {
    let baseline = load_valid(file, now)?;
    let bytes =
        crate::file::read_bounded(evidence, crate::file::MAX_INPUT_BYTES).map_err(|source| {
            ToolError::Read {
                path: evidence.to_owned(),
                source: source.into(),
            }
        })?;
    let evidence: Evidence =
        serde_json::from_slice(&bytes).map_err(|source| ToolError::Evidence {
            path: evidence.to_owned(),
            source,
        })?;
    Ok(privilege_report(&baseline, &evidence, now))
}
