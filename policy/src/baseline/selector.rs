//! Compiled selectors: what an edge's `from` or `to` matches, with
//! Kubernetes label-selector semantics, and the index key the matcher
//! files it under.

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;

use super::format::{LabelOperator, LabelSelector, Selector};
use crate::identity::{Identity, WorkloadKind};

/// The cluster's SPIFFE trust domain: a `spiffeId` in another never
/// matches.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// A name, or every name (`"*"`, spelled out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    Any,
}

impl Pattern {
    pub fn parse(text: &str) -> Self {
        if text == "*" {
            Self::Any
        } else {
            Self::Exact(text.to_owned())
        }
    }

    pub fn matches(&self, text: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(want) => want == text,
        }
    }
}

/// A cgroup, or a subtree spelled `/path/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupPattern {
    Exact(String),
    /// The path with its trailing `/`: matches every cgroup below it.
    Subtree(String),
}

impl CgroupPattern {
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(want) => want == path,
            Self::Subtree(prefix) => path.starts_with(prefix.as_str()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMatcher {
    match_labels: BTreeMap<String, String>,
    expressions: Vec<(String, LabelOperator, Vec<String>)>,
}

impl LabelMatcher {
    pub fn new(selector: &LabelSelector) -> Self {
        Self {
            match_labels: selector.match_labels.clone(),
            expressions: selector
                .match_expressions
                .iter()
                .map(|r| (r.key.clone(), r.operator, r.values.clone()))
                .collect(),
        }
    }

    /// Kubernetes semantics: `NotIn` also holds when the label is absent.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.mismatch(labels).is_none()
    }

    fn mismatch(&self, labels: &BTreeMap<String, String>) -> Option<String> {
        for (key, want) in &self.match_labels {
            match labels.get(key) {
                Some(have) if have == want => {}
                Some(have) => return Some(format!("label {key}={have}, not {want}")),
                None => return Some(format!("no label {key}")),
            }
        }
        for (key, operator, values) in &self.expressions {
            let have = labels.get(key);
            let holds = match operator {
                LabelOperator::In => have.is_some_and(|v| values.contains(v)),
                LabelOperator::NotIn => have.is_none_or(|v| !values.contains(v)),
                LabelOperator::Exists => have.is_some(),
                LabelOperator::DoesNotExist => have.is_none(),
            };
            if !holds {
                return Some(format!(
                    "label expression {key} {operator:?} {values:?} does not hold (label is {})",
                    have.map_or("absent".to_owned(), |v| format!("{v:?}"))
                ));
            }
        }
        None
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadMatcher {
    pub namespace: Pattern,
    pub kind: Option<WorkloadKind>,
    pub name: Option<Pattern>,
    pub service_account: Option<String>,
    pub labels: Option<LabelMatcher>,
    /// From a SPIFFE ID: its trust domain must be the cluster's.
    pub trust_domain: Option<String>,
}

/// A checked selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectorMatcher {
    Any,
    Workload(WorkloadMatcher),
    Cgroup(CgroupPattern),
    Systemd(String),
    /// `<runtime>/<name>`, as in the identity's canonical form.
    Container(String),
    Node(Pattern),
    Cidr(IpNet),
}

/// Where the matcher files a selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IndexKey {
    /// Exactly one identity (its canonical form) or one namespace
    /// (`namespace:<ns>`) or one cgroup subtree (`cgroup-tree:<prefix>`).
    Exact(String),
    Cidr(IpNet),
    /// Anything broader: checked for every flow.
    Broad,
}

pub fn namespace_key(namespace: &str) -> String {
    format!("namespace:{namespace}")
}

pub fn cgroup_tree_key(prefix: &str) -> String {
    format!("cgroup-tree:{prefix}")
}

impl SelectorMatcher {
    /// Compiles a selector that [`super::validate`] has checked; `None` for
    /// one that cannot be compiled (the validator reports why).
    pub fn compile(selector: &Selector) -> Result<Self, String> {
        let workload_fields = selector.namespace.is_some()
            || selector.workload.is_some()
            || selector.service_account.is_some()
            || selector.labels.is_some()
            || selector.spiffe_id.is_some();
        let host_fields = [
            selector.cgroup.is_some(),
            selector.systemd.is_some(),
            selector.container.is_some(),
            selector.node.is_some(),
        ]
        .iter()
        .filter(|f| **f)
        .count();
        let cidr = selector.cidr.is_some();
        let kinds = usize::from(workload_fields) + host_fields + usize::from(cidr);
        if let Some(any) = selector.any {
            if !any {
                return Err("`any: false` means nothing; remove it".into());
            }
            if kinds > 0 {
                return Err("`any: true` must be the whole selector".into());
            }
            return Ok(Self::Any);
        }
        if kinds == 0 {
            return Err("empty selector matches nothing; write `any: true` for every peer".into());
        }
        if kinds > 1 {
            return Err(
                "selector mixes workload, host and cidr fields; an end is only one of them, so it can never match"
                    .into(),
            );
        }
        if let Some(cidr) = &selector.cidr {
            return parse_cidr(cidr).map(Self::Cidr);
        }
        if let Some(path) = &selector.cgroup {
            return cgroup_pattern(path).map(Self::Cgroup);
        }
        if let Some(unit) = &selector.systemd {
            no_wildcard("systemd", unit)?;
            return Ok(Self::Systemd(unit.clone()));
        }
        if let Some(container) = &selector.container {
            no_wildcard("container", container)?;
            let Some((runtime, name)) = container.split_once('/') else {
                return Err(format!(
                    "container {container:?} must be <runtime>/<name>, e.g. docker/redis"
                ));
            };
            if !["containerd", "crio", "docker", "podman"].contains(&runtime) || name.is_empty() {
                return Err(format!(
                    "container runtime {runtime:?} is not one of containerd, crio, docker, podman"
                ));
            }
            return Ok(Self::Container(container.clone()));
        }
        if let Some(node) = &selector.node {
            whole_wildcard("node", node)?;
            return Ok(Self::Node(Pattern::parse(node)));
        }
        workload(selector).map(Self::Workload)
    }

    pub fn index_key(&self) -> IndexKey {
        match self {
            Self::Any => IndexKey::Broad,
            Self::Cidr(net) => IndexKey::Cidr(*net),
            Self::Cgroup(CgroupPattern::Exact(path)) => IndexKey::Exact(format!("cgroup:{path}")),
            Self::Cgroup(CgroupPattern::Subtree(prefix)) => {
                IndexKey::Exact(cgroup_tree_key(prefix))
            }
            Self::Systemd(unit) => IndexKey::Exact(format!("systemd:{unit}")),
            Self::Container(c) => IndexKey::Exact(format!("container:{c}")),
            Self::Node(Pattern::Exact(name)) => IndexKey::Exact(format!("node:{name}")),
            Self::Node(Pattern::Any) => IndexKey::Broad,
            Self::Workload(w) => match (&w.namespace, &w.kind, &w.name) {
                (Pattern::Exact(ns), Some(kind), Some(Pattern::Exact(name))) => {
                    IndexKey::Exact(format!(
                        "workload:{ns}/{}/{name}",
                        kind.as_str().to_ascii_lowercase()
                    ))
                }
                (Pattern::Exact(ns), _, _) => IndexKey::Exact(namespace_key(ns)),
                (Pattern::Any, _, _) => IndexKey::Broad,
            },
        }
    }

    pub fn matches(&self, identity: &Identity) -> bool {
        match (self, identity) {
            (Self::Any, _) => true,
            (Self::Cidr(net), Identity::External { address }) => net.contains(address),
            (Self::Cgroup(pattern), Identity::Cgroup { path }) => pattern.matches(path),
            (Self::Systemd(want), Identity::SystemdUnit { unit }) => want == unit,
            (Self::Container(want), Identity::Container { .. }) => {
                identity.canonical().strip_prefix("container:") == Some(want.as_str())
            }
            (Self::Node(pattern), Identity::Node { name }) => pattern.matches(name),
            (Self::Workload(want), Identity::Workload(w)) => {
                want.namespace.matches(&w.namespace)
                    && want.kind.as_ref().is_none_or(|k| *k == w.kind)
                    && want.name.as_ref().is_none_or(|n| n.matches(&w.name))
                    && want
                        .service_account
                        .as_ref()
                        .is_none_or(|sa| *sa == w.service_account)
                    && want.labels.as_ref().is_none_or(|l| l.matches(&w.labels))
                    && want
                        .trust_domain
                        .as_ref()
                        .is_none_or(|td| td == TRUST_DOMAIN)
            }
            _ => false,
        }
    }

    /// Why `identity` does not match, for `explain` and alerts; None when it
    /// does.
    pub fn mismatch(&self, identity: &Identity) -> Option<String> {
        if self.matches(identity) {
            return None;
        }
        let reason = match (self, identity) {
            (Self::Cidr(net), Identity::External { address }) => {
                format!("{address} is outside {net}")
            }
            (Self::Cgroup(CgroupPattern::Exact(want)), Identity::Cgroup { path }) => {
                format!("cgroup {path} is not {want}")
            }
            (Self::Cgroup(CgroupPattern::Subtree(prefix)), Identity::Cgroup { path }) => {
                format!("cgroup {path} is not under {prefix}")
            }
            (Self::Systemd(want), Identity::SystemdUnit { unit }) => {
                format!("unit {unit} is not {want}")
            }
            (Self::Node(_), Identity::Node { name }) => format!("node {name} does not match"),
            (Self::Workload(want), Identity::Workload(w)) => {
                if !want.namespace.matches(&w.namespace) {
                    format!("namespace {} does not match", w.namespace)
                } else if !want.kind.as_ref().is_none_or(|k| *k == w.kind) {
                    format!("kind {} does not match", w.kind)
                } else if !want.name.as_ref().is_none_or(|n| n.matches(&w.name)) {
                    format!("workload name {} does not match", w.name)
                } else if !want
                    .service_account
                    .as_ref()
                    .is_none_or(|sa| *sa == w.service_account)
                {
                    format!("service account {} does not match", w.service_account)
                } else {
                    want.labels
                        .as_ref()
                        .and_then(|l| l.mismatch(&w.labels))
                        .unwrap_or_else(|| "labels do not match".into())
                }
            }
            _ => format!("{} is not a {}", identity.canonical(), self.describe_kind()),
        };
        Some(reason)
    }

    fn describe_kind(&self) -> &'static str {
        match self {
            Self::Any => "peer",
            Self::Workload(_) => "workload",
            Self::Cgroup(_) => "cgroup",
            Self::Systemd(_) => "systemd unit",
            Self::Container(_) => "container",
            Self::Node(_) => "node",
            Self::Cidr(_) => "external address",
        }
    }

    /// Every identity in a namespace (no narrower workload fields).
    pub fn is_whole_namespace_wildcard(&self) -> bool {
        matches!(self, Self::Any)
            || matches!(self, Self::Workload(w) if w.namespace == Pattern::Any
                && w.name.as_ref().is_none_or(|n| *n == Pattern::Any)
                && w.service_account.is_none() && w.labels.is_none())
    }
}

fn no_wildcard(field: &str, value: &str) -> Result<(), String> {
    if value.contains('*') {
        return Err(format!("{field} {value:?}: wildcards are not allowed here"));
    }
    if value.is_empty() {
        return Err(format!("{field} is empty"));
    }
    Ok(())
}

/// `*` only as the whole value.
fn whole_wildcard(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field} is empty"));
    }
    if value != "*" && value.contains('*') {
        return Err(format!(
            "{field} {value:?}: a wildcard must be the whole value (\"*\")"
        ));
    }
    Ok(())
}

fn cgroup_pattern(path: &str) -> Result<CgroupPattern, String> {
    if !path.starts_with('/') {
        return Err(format!("cgroup {path:?} must be an absolute path"));
    }
    if let Some(prefix) = path.strip_suffix("/*") {
        if prefix.contains('*') {
            return Err(format!("cgroup {path:?}: only a trailing /* is allowed"));
        }
        return Ok(CgroupPattern::Subtree(format!("{prefix}/")));
    }
    if path.contains('*') {
        return Err(format!(
            "cgroup {path:?}: a subtree is spelled /path/*; no other wildcards"
        ));
    }
    Ok(CgroupPattern::Exact(path.to_owned()))
}

pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        if net.trunc() != net {
            return Err(format!(
                "cidr {text} has host bits set; did you mean {}?",
                net.trunc()
            ));
        }
        return Ok(net);
    }
    text.parse::<IpAddr>()
        .map(|ip| IpNet::from(ip.to_canonical()))
        .map_err(|_| format!("cidr {text:?} is neither a network nor an address"))
}

fn workload(selector: &Selector) -> Result<WorkloadMatcher, String> {
    let mut namespace = selector.namespace.clone();
    let mut service_account = selector.service_account.clone();
    let mut trust_domain = None;
    if let Some(id) = &selector.spiffe_id {
        let (td, ns, sa) = parse_spiffe(id)?;
        for (field, given, from_id) in [
            ("namespace", &namespace, &ns),
            ("serviceAccount", &service_account, &sa),
        ] {
            if given.as_ref().is_some_and(|g| g != from_id) {
                return Err(format!(
                    "{field} contradicts spiffeId {id}; the selector can never match"
                ));
            }
        }
        namespace = Some(ns);
        service_account = Some(sa);
        trust_domain = Some(td);
    }
    let Some(namespace) = namespace else {
        return Err(
            "workload fields need a namespace (write namespace: \"*\" for every namespace)".into(),
        );
    };
    whole_wildcard("namespace", &namespace)?;
    let (kind, name) = match &selector.workload {
        Some(w) => {
            whole_wildcard("workload name", &w.name)?;
            let kind = match &w.kind {
                Some(kind) => {
                    no_wildcard("workload kind", kind)?;
                    Some(WorkloadKind::parse(kind))
                }
                None => None,
            };
            (kind, Some(Pattern::parse(&w.name)))
        }
        None => (None, None),
    };
    if let Some(sa) = &service_account {
        no_wildcard("serviceAccount", sa)?;
    }
    let labels = match &selector.labels {
        Some(labels) => {
            check_labels(labels)?;
            Some(LabelMatcher::new(labels))
        }
        None => None,
    };
    Ok(WorkloadMatcher {
        namespace: Pattern::parse(&namespace),
        kind,
        name,
        service_account,
        labels,
        trust_domain,
    })
}

fn parse_spiffe(id: &str) -> Result<(String, String, String), String> {
    let bad = || {
        format!(
            "spiffeId {id:?} is not spiffe://<trust domain>/ns/<namespace>/sa/<service account>"
        )
    };
    let rest = id.strip_prefix("spiffe://").ok_or_else(bad)?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [td, "ns", ns, "sa", sa] if !td.is_empty() && !ns.is_empty() && !sa.is_empty() => {
            if id.contains('*') {
                return Err(format!("spiffeId {id:?}: wildcards are not allowed"));
            }
            Ok((td.to_string(), ns.to_string(), sa.to_string()))
        }
        _ => Err(bad()),
    }
}

fn check_labels(labels: &LabelSelector) -> Result<(), String> {
    if labels.match_labels.is_empty() && labels.match_expressions.is_empty() {
        return Err("empty label selector matches every workload; remove it or name labels".into());
    }
    for key in labels
        .match_labels
        .keys()
        .chain(labels.match_expressions.iter().map(|r| &r.key))
    {
        if key.is_empty() || key.contains('*') || key.contains(char::is_whitespace) {
            return Err(format!("label key {key:?} is not a valid label key"));
        }
    }
    for r in &labels.match_expressions {
        match r.operator {
            LabelOperator::In | LabelOperator::NotIn if r.values.is_empty() => {
                return Err(format!(
                    "label expression on {}: {:?} needs at least one value",
                    r.key, r.operator
                ));
            }
            LabelOperator::Exists | LabelOperator::DoesNotExist if !r.values.is_empty() => {
                return Err(format!(
                    "label expression on {}: {:?} takes no values",
                    r.key, r.operator
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The selector that names exactly `identity` (what learn mode writes);
/// None for identities a baseline cannot name (unknown ends).
pub fn exact_selector(identity: &Identity) -> Option<Selector> {
    let mut selector = Selector::default();
    match identity {
        Identity::Workload(w) => {
            selector.namespace = Some(w.namespace.clone());
            selector.workload = Some(super::format::WorkloadSelector {
                kind: Some(w.kind.as_str().to_owned()),
                name: w.name.clone(),
            });
        }
        Identity::SystemdUnit { unit } => selector.systemd = Some(unit.clone()),
        Identity::Container { .. } => {
            selector.container = identity
                .canonical()
                .strip_prefix("container:")
                .map(str::to_owned)
        }
        Identity::Cgroup { path } => selector.cgroup = Some(path.clone()),
        Identity::Node { name } => selector.node = Some(name.clone()),
        Identity::External { address } => {
            selector.cidr = Some(IpNet::from(address.to_canonical()).to_string())
        }
        Identity::Unknown { .. } => return None,
    }
    Some(selector)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::format::LabelRequirement;
    use crate::identity::Workload;

    fn workload(labels: &[(&str, &str)]) -> Identity {
        Identity::Workload(Workload {
            cluster: "c".into(),
            namespace: "shop".into(),
            kind: WorkloadKind::Deployment,
            name: "web".into(),
            service_account: "web".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    fn expr(key: &str, operator: LabelOperator, values: &[&str]) -> LabelRequirement {
        LabelRequirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn labels_selector(expressions: Vec<LabelRequirement>) -> SelectorMatcher {
        SelectorMatcher::compile(&Selector {
            namespace: Some("shop".into()),
            labels: Some(LabelSelector {
                match_labels: BTreeMap::new(),
                match_expressions: expressions,
            }),
            ..Selector::default()
        })
        .expect("compiles")
    }

    #[test]
    fn label_expressions_follow_kubernetes() {
        let tier = workload(&[("tier", "front")]);
        let bare = workload(&[]);
        let cases = [
            (
                expr("tier", LabelOperator::In, &["front", "mid"]),
                true,
                false,
            ),
            (expr("tier", LabelOperator::NotIn, &["back"]), true, true),
            (expr("tier", LabelOperator::NotIn, &["front"]), false, true),
            (expr("tier", LabelOperator::Exists, &[]), true, false),
            (expr("tier", LabelOperator::DoesNotExist, &[]), false, true),
        ];
        for (requirement, on_tier, on_bare) in cases {
            let s = labels_selector(vec![requirement.clone()]);
            assert_eq!(s.matches(&tier), on_tier, "{requirement:?} on tier");
            assert_eq!(s.matches(&bare), on_bare, "{requirement:?} on bare");
        }
    }

    #[test]
    fn cidrs_match_external_addresses_only() {
        let s = SelectorMatcher::compile(&Selector {
            cidr: Some("10.0.0.0/8".into()),
            ..Selector::default()
        })
        .expect("compiles");
        let inside = Identity::External {
            address: "10.1.2.3".parse().expect("ip"),
        };
        let outside = Identity::External {
            address: "11.1.2.3".parse().expect("ip"),
        };
        assert!(s.matches(&inside));
        assert!(!s.matches(&outside));
        assert!(!s.matches(&workload(&[])));
        assert_eq!(
            s.mismatch(&outside).as_deref(),
            Some("11.1.2.3 is outside 10.0.0.0/8")
        );
    }

    #[test]
    fn spiffe_ids_name_namespace_and_account() {
        let s = SelectorMatcher::compile(&Selector {
            spiffe_id: Some("spiffe://cluster.local/ns/shop/sa/web".into()),
            ..Selector::default()
        })
        .expect("compiles");
        assert!(s.matches(&workload(&[])));
        assert_eq!(s.index_key(), IndexKey::Exact("namespace:shop".into()));
    }

    #[test]
    fn cgroup_subtrees_are_spelled_out() {
        let s = SelectorMatcher::compile(&Selector {
            cgroup: Some("/system.slice/*".into()),
            ..Selector::default()
        })
        .expect("compiles");
        assert!(s.matches(&Identity::Cgroup {
            path: "/system.slice/nginx.service".into()
        }));
        assert!(!s.matches(&Identity::Cgroup {
            path: "/user.slice/x".into()
        }));
        for bad in ["/system*", "relative", "/a/*/b"] {
            assert!(
                SelectorMatcher::compile(&Selector {
                    cgroup: Some(bad.into()),
                    ..Selector::default()
                })
                .is_err(),
                "{bad}"
            );
        }
    }
}
