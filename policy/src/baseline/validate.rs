//! From a parsed file to checked rules: every semantic error with its
//! `file:line:col`, and lint warnings for rules a reviewer should look at.

use std::{collections::HashMap, fmt, path::Path, time::SystemTime};

use sha2::{Digest, Sha256};

use super::{
    diag::{Diagnostic, Rejected},
    format::{API_VERSION, BaselineDoc, Edge, KIND, Located, Pos, Selector},
    parse,
    selector::{Pattern, SelectorMatcher, TRUST_DOMAIN},
};
use crate::flow::Transport;

/// A port range of one transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub transport: Transport,
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16, transport: Transport) -> bool {
        self.transport == transport && self.first <= port && port <= self.last
    }

    fn covers(&self, other: &PortRange) -> bool {
        self.transport == other.transport && self.first <= other.first && other.last <= self.last
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let Some((ports, proto)) = text.split_once('/') else {
            return Err(format!(
                "port {text:?} needs a protocol: PORT/tcp, FIRST-LAST/udp or */tcp"
            ));
        };
        let transport = match proto {
            "tcp" => Transport::Tcp,
            "udp" => Transport::Udp,
            other => return Err(format!("protocol {other:?} is not tcp or udp")),
        };
        let number = |p: &str| -> Result<u16, String> {
            match p.parse::<u16>() {
                Ok(0) | Err(_) => Err(format!("port {p:?} is not a number from 1 to 65535")),
                Ok(n) => Ok(n),
            }
        };
        let (first, last) = if ports == "*" {
            (1, u16::MAX)
        } else if let Some((a, b)) = ports.split_once('-') {
            let (a, b) = (number(a)?, number(b)?);
            if a > b {
                return Err(format!("port range {ports} runs backwards"));
            }
            (a, b)
        } else {
            let n = number(ports)?;
            (n, n)
        };
        Ok(Self {
            transport,
            first,
            last,
        })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.first, self.last) {
            (1, u16::MAX) => write!(f, "*/{}", self.transport),
            (a, b) if a == b => write!(f, "{a}/{}", self.transport),
            (a, b) => write!(f, "{a}-{b}/{}", self.transport),
        }
    }
}

/// One checked edge.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its position in `spec.edges`.
    pub index: usize,
    pub at: Option<Pos>,
    pub from: SelectorMatcher,
    pub to: SelectorMatcher,
    pub ports: Vec<PortRange>,
    pub expires: Option<SystemTime>,
    pub edge: Edge,
}

impl Rule {
    pub fn allows_port(&self, port: u16, transport: Transport) -> bool {
        self.ports.iter().any(|r| r.contains(port, transport))
    }

    pub fn expired(&self, now: SystemTime) -> bool {
        self.expires.is_some_and(|at| at <= now)
    }

    /// `edges[3] (line 12): cgroup:/a -> cidr:10.0.0.0/8 5432/tcp`.
    pub fn label(&self) -> String {
        let ports: Vec<String> = self.ports.iter().map(PortRange::to_string).collect();
        let line = self
            .at
            .map(|p| format!(" (line {})", p.line))
            .unwrap_or_default();
        format!(
            "edges[{}]{line}: {} -> {} {}",
            self.index,
            describe(&self.edge.from),
            describe(&self.edge.to),
            ports.join(",")
        )
    }
}

/// A short text form of a selector, e.g. `namespace:shop workload:Deployment/web`.
pub fn describe(selector: &Selector) -> String {
    let mut parts = Vec::new();
    if selector.any == Some(true) {
        parts.push("any".to_owned());
    }
    let mut push = |name: &str, value: &Option<String>| {
        if let Some(v) = value {
            parts.push(format!("{name}:{v}"));
        }
    };
    push("namespace", &selector.namespace);
    push(
        "workload",
        &selector.workload.as_ref().map(|w| match &w.kind {
            Some(kind) => format!("{kind}/{}", w.name),
            None => w.name.clone(),
        }),
    );
    push("serviceAccount", &selector.service_account);
    push(
        "labels",
        &selector
            .labels
            .as_ref()
            .map(|l| serde_json::to_string(l).unwrap_or_default()),
    );
    push("spiffeId", &selector.spiffe_id);
    push("cgroup", &selector.cgroup);
    push("systemd", &selector.systemd);
    push("container", &selector.container);
    push("node", &selector.node);
    push("cidr", &selector.cidr);
    if parts.is_empty() {
        "(empty)".into()
    } else {
        parts.join(" ")
    }
}

/// A baseline that passed every check.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub name: String,
    pub file: String,
    pub doc: BaselineDoc,
    pub rules: Vec<Rule>,
    /// `sha256:<hex>` of the canonical (JSON) form: comments and layout do
    /// not change it.
    pub digest: String,
}

pub fn digest(doc: &BaselineDoc) -> String {
    let canonical = serde_json::to_vec(doc).unwrap_or_default();
    let hash = Sha256::digest(&canonical);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Reads, parses and checks a baseline file. `Ok` carries the warnings.
pub fn load(path: &Path, now: SystemTime) -> Result<(Baseline, Vec<Diagnostic>), Rejected> {
    let (doc, _) = parse::read::<BaselineDoc>(path).map_err(Rejected)?;
    check(doc, &path.display().to_string(), now)
}

/// Parses and checks baseline text named `file`.
pub fn from_str(
    text: &str,
    file: &str,
    now: SystemTime,
) -> Result<(Baseline, Vec<Diagnostic>), Rejected> {
    let doc = parse::from_str::<BaselineDoc>(text, file).map_err(Rejected)?;
    check(doc, file, now)
}

const SENSITIVE_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease"];
/// Remote administration, the kubelet, the API server and etcd.
const SENSITIVE_PORTS: &[u16] = &[
    22, 23, 135, 445, 2379, 2380, 3389, 5900, 5901, 5902, 5903, 5985, 5986, 6443, 10250, 10255,
];
const METADATA: &[&str] = &["169.254.169.254", "fd00:ec2::254"];

/// All checks; `Ok` when there is no error.
pub fn check(
    doc: BaselineDoc,
    file: &str,
    now: SystemTime,
) -> Result<(Baseline, Vec<Diagnostic>), Rejected> {
    let mut found = check_envelope(&doc, file);
    let rules: Vec<Rule> = doc
        .spec
        .edges
        .iter()
        .enumerate()
        .filter_map(|(index, edge)| check_edge(index, edge, file, &mut found))
        .collect();
    if found.iter().any(Diagnostic::is_error) {
        return Err(Rejected(found));
    }
    found.extend(lint(&rules, file, now));
    let baseline = Baseline {
        name: doc.metadata.name.value.clone(),
        file: file.to_owned(),
        digest: digest(&doc),
        doc,
        rules,
    };
    Ok((baseline, found))
}

/// The errors of the envelope: apiVersion, kind and name.
fn check_envelope(doc: &BaselineDoc, file: &str) -> Vec<Diagnostic> {
    let mut found = Vec::new();
    if doc.api_version.value != API_VERSION {
        found.push(Diagnostic::error(
            file,
            doc.api_version.at,
            format!(
                "apiVersion {:?} is not supported (expected {API_VERSION})",
                doc.api_version.value
            ),
        ));
    }
    if doc.kind.value != KIND {
        found.push(Diagnostic::error(
            file,
            doc.kind.at,
            format!("kind {:?} is not {KIND}", doc.kind.value),
        ));
    }
    if doc.metadata.name.trim().is_empty() {
        found.push(Diagnostic::error(
            file,
            doc.metadata.name.at,
            "metadata.name is empty",
        ));
    }
    found
}

/// The edge at `index` as a rule, its errors added to `found`; None when
/// it has any.
fn check_edge(
    index: usize,
    edge: &Located<Edge>,
    file: &str,
    found: &mut Vec<Diagnostic>,
) -> Option<Rule> {
    let mut error = |at: Option<Pos>, message: String| {
        found.push(Diagnostic::error(file, at, message));
    };
    let mut selector = |side: &Located<Selector>, name: &str| {
        SelectorMatcher::compile(&side.value)
            .map_err(|why| error(side.at.or(edge.at), format!("edges[{index}].{name}: {why}")))
            .ok()
    };
    let from = selector(&edge.from, "from");
    let to = selector(&edge.to, "to");
    if edge.ports.is_empty() {
        error(
            edge.ports.at.or(edge.at),
            format!("edges[{index}].ports is empty: an edge allows at least one port"),
        );
    }
    let mut ports = Vec::new();
    for port in edge.ports.iter() {
        match PortRange::parse(port) {
            Ok(range) => ports.push(range),
            Err(why) => error(port.at, format!("edges[{index}].ports: {why}")),
        }
    }
    let expires = match &edge.expires {
        Some(text) => match parse_expiry(text) {
            Ok(at) => Some(at),
            Err(why) => {
                error(text.at, format!("edges[{index}].expires: {why}"));
                None
            }
        },
        None => None,
    };
    let (from, to) = (from?, to?);
    (ports.len() == edge.ports.len()).then(|| Rule {
        index,
        at: edge.at,
        from,
        to,
        ports,
        expires,
        edge: edge.value.clone(),
    })
}

/// RFC 3339 date-time, or a date meaning its UTC midnight.
pub fn parse_expiry(text: &str) -> Result<SystemTime, String> {
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    humantime::parse_rfc3339_weak(&full)
        .map_err(|_| format!("{text:?} is not an RFC 3339 date-time or a YYYY-MM-DD date"))
}

fn sensitive_target(rule: &Rule) -> Option<String> {
    if let SelectorMatcher::Workload(w) = &rule.to
        && let Pattern::Exact(ns) = &w.namespace
        && SENSITIVE_NAMESPACES.contains(&ns.as_str())
    {
        return Some(format!("namespace {ns}"));
    }
    if let SelectorMatcher::Cidr(net) = &rule.to
        && let Some(addr) = METADATA.iter().find(|a| {
            a.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| net.contains(&ip))
        })
    {
        return Some(format!("cloud metadata address {addr}"));
    }
    SENSITIVE_PORTS
        .iter()
        .find(|port| {
            rule.ports
                .iter()
                .any(|r| r.first <= **port && **port <= r.last)
        })
        .map(|port| format!("port {port}"))
}

fn lint(rules: &[Rule], file: &str, now: SystemTime) -> Vec<Diagnostic> {
    let mut warnings = Vec::new();
    let mut seen: HashMap<(&Selector, &Selector), Vec<&Rule>> = HashMap::new();
    for rule in rules {
        warnings.extend(rule_warnings(rule, file, now));
        let earlier = seen
            .entry((&rule.edge.from.value, &rule.edge.to.value))
            .or_default();
        if let Some(original) = earlier.iter().find(|e| {
            rule.ports
                .iter()
                .all(|p| e.ports.iter().any(|q| q.covers(p)))
        }) {
            let line = original
                .at
                .map(|p| format!(" (line {})", p.line))
                .unwrap_or_default();
            warnings.push(Diagnostic::warning(
                file,
                rule.at,
                format!(
                    "edges[{}] duplicates edges[{}]{line}: same ends, ports already allowed",
                    rule.index, original.index
                ),
            ));
        }
        earlier.push(rule);
    }
    warnings
}

/// What a reviewer should look at in one rule: over-broad, a foreign
/// trust domain, expired.
fn rule_warnings(rule: &Rule, file: &str, now: SystemTime) -> Vec<Diagnostic> {
    let (at, i) = (rule.at, rule.index);
    let mut warnings = Vec::new();
    if rule.from == SelectorMatcher::Any && rule.to == SelectorMatcher::Any {
        warnings.push(Diagnostic::warning(
            file,
            at,
            format!("edges[{i}] is over-broad: any-to-any allows every lateral path"),
        ));
    } else if rule.from.is_whole_namespace_wildcard()
        && let Some(target) = sensitive_target(rule)
    {
        warnings.push(Diagnostic::warning(
            file,
            at,
            format!(
                "edges[{i}] is over-broad: every namespace may reach a sensitive target ({target})"
            ),
        ));
    }
    if let SelectorMatcher::Workload(w) = &rule.to
        && w.trust_domain
            .as_deref()
            .is_some_and(|td| td != TRUST_DOMAIN)
    {
        warnings.push(Diagnostic::warning(
            file,
            at,
            format!("edges[{i}]: spiffeId is not in trust domain {TRUST_DOMAIN}; it never matches"),
        ));
    }
    if rule.expired(now) {
        let expires = rule.edge.expires.as_ref();
        let when = expires.map(|e| e.value.clone()).unwrap_or_default();
        warnings.push(Diagnostic::warning(
            file,
            expires.and_then(|e| e.at).or(at),
            format!("edges[{i}] expired on {when}: it allows nothing"),
        ));
    }
    warnings
}
