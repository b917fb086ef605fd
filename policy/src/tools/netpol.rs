//! From a reviewed baseline to network policy: Kubernetes NetworkPolicies
//! or CiliumNetworkPolicies (`cilium.io/v2`) that admit exactly the
//! baseline's edges, one ingress policy per server (and with `egress`
//! one egress policy per client), and the check of observed flows against
//! them: what would enforcing them block?
//!
//! Never wider than the baseline. An end a policy cannot name exactly (a
//! host process, a node, a workload whose pod labels are unknown or shared
//! with another workload's pods) is a warning with the reason, never a
//! broader rule.
//!
//! Ports: a policy is enforced at the pod, after kube-proxy's DNAT, so it
//! sees the Service's targetPort, not the port the client dialled. A
//! baseline learns both (the client's side sees the Service port, the
//! server's side the pod port), so a port that a Service selecting the
//! server declares is exported as that Service's targetPort.
//!
//! Pure: the cluster's facts (pod labels, Services) come in as
//! [`ClusterFacts`], however they were read.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    sync::Arc,
    time::SystemTime,
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::observed::ObservedFlow;
use crate::{
    baseline::{
        diag::Diagnostic,
        format::{LabelOperator, LabelRequirement, LabelSelector, Selector},
        matcher::{Matcher, RuleMatch},
        selector::{LabelMatcher, Pattern, SelectorMatcher, TRUST_DOMAIN},
        validate::{Baseline, PortRange, Rule},
    },
    flow::Transport,
    identity::{Identity, WorkloadKind},
};

/// The namespace label every namespace carries (Kubernetes 1.22+).
const NAMESPACE_LABEL: &str = "kubernetes.io/metadata.name";
/// Cilium's labels of an endpoint's namespace and service account.
const CILIUM_NAMESPACE: &str = "k8s:io.kubernetes.pod.namespace";
const CILIUM_SERVICE_ACCOUNT: &str = "k8s:io.cilium.k8s.policy.serviceaccount";
/// Cilium takes at most this many ports in one port rule.
const CILIUM_MAX_PORTS: usize = 40;

// ---- what the cluster reports ----

/// What the cluster reports about its workloads and Services.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFacts {
    /// Where the facts came from, for messages.
    pub source: String,
    pub workloads: Vec<WorkloadFacts>,
    /// `None`: Services are unknown, so no port can be translated.
    pub services: Option<Vec<ServiceFacts>>,
}

/// One workload's pods as the cluster reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadFacts {
    pub namespace: String,
    /// As Kubernetes spells it: `Deployment`, `StatefulSet`, ...
    pub kind: String,
    pub name: String,
    /// Each distinct label set of its pods, without per-pod labels
    /// (`pod-template-hash`, ...).
    pub label_sets: BTreeSet<BTreeMap<String, String>>,
    pub service_accounts: BTreeSet<String>,
    /// Named container ports: name → port numbers.
    pub named_ports: BTreeMap<String, BTreeSet<u16>>,
}

impl WorkloadFacts {
    pub fn canonical(&self) -> String {
        format!(
            "workload:{}/{}/{}",
            self.namespace,
            self.kind.to_ascii_lowercase(),
            self.name
        )
    }

    /// The labels all its pods carry.
    fn common_labels(&self) -> BTreeMap<String, String> {
        let mut sets = self.label_sets.iter();
        let Some(first) = sets.next() else {
            return BTreeMap::new();
        };
        let mut common = first.clone();
        for set in sets {
            common.retain(|k, v| set.get(k) == Some(v));
        }
        common
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceFacts {
    pub namespace: String,
    pub name: String,
    /// Empty: the Service selects no pods (its endpoints are managed by
    /// hand), so it translates no port.
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePortFacts>,
}

impl ServiceFacts {
    fn selects(&self, workload: &WorkloadFacts) -> bool {
        self.namespace == workload.namespace
            && !self.selector.is_empty()
            && workload
                .label_sets
                .iter()
                .any(|labels| self.selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePortFacts {
    pub port: u16,
    pub transport: Transport,
    pub target: TargetPort,
}

/// A Service's targetPort: a number, or a container port's name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

impl ClusterFacts {
    /// Facts from identities as the agent resolved them (e.g. a learn
    /// evidence file's): each workload's labels and service account as the
    /// cluster reported them then. Services are not known this way.
    pub fn from_identities<'a>(
        source: &str,
        identities: impl IntoIterator<Item = &'a Identity>,
    ) -> Self {
        let mut workloads: BTreeMap<String, WorkloadFacts> = BTreeMap::new();
        for identity in identities {
            let Identity::Workload(w) = identity else {
                continue;
            };
            let facts = workloads
                .entry(identity.canonical())
                .or_insert_with(|| WorkloadFacts {
                    namespace: w.namespace.clone(),
                    kind: w.kind.as_str().to_owned(),
                    name: w.name.clone(),
                    ..WorkloadFacts::default()
                });
            if !w.labels.is_empty() {
                facts.label_sets.insert(w.labels.clone());
            }
            if !w.service_account.is_empty() {
                facts.service_accounts.insert(w.service_account.clone());
            }
        }
        Self {
            source: source.to_owned(),
            workloads: workloads.into_values().collect(),
            services: None,
        }
    }

    /// Adds what `other` knows and these facts do not: its workloads
    /// unknown here, and its Services when these have none.
    pub fn add(&mut self, other: ClusterFacts) {
        let known: BTreeSet<String> = self.workloads.iter().map(|w| w.canonical()).collect();
        let mut added = false;
        for workload in other.workloads {
            if !known.contains(&workload.canonical()) {
                self.workloads.push(workload);
                added = true;
            }
        }
        if self.services.is_none() && other.services.is_some() {
            self.services = other.services;
            added = true;
        }
        if added || self.source.is_empty() {
            self.source = match self.source.is_empty() {
                true => other.source,
                false => format!("{}, then {}", self.source, other.source),
            };
        }
    }

    pub fn workload(&self, canonical: &str) -> Option<&WorkloadFacts> {
        self.workloads.iter().find(|w| w.canonical() == canonical)
    }

    fn find(
        &self,
        namespace: &str,
        kind: Option<&WorkloadKind>,
        name: &str,
    ) -> Vec<&WorkloadFacts> {
        self.workloads
            .iter()
            .filter(|w| w.namespace == namespace && w.name == name)
            .filter(|w| kind.is_none_or(|k| WorkloadKind::parse(&w.kind) == *k))
            .collect()
    }

    /// An identity's pod label sets: its own labels when it carries them
    /// (an alert's), else what the facts say.
    fn label_sets_of(&self, identity: &Identity) -> Vec<BTreeMap<String, String>> {
        match identity {
            Identity::Workload(w) if !w.labels.is_empty() => vec![w.labels.clone()],
            Identity::Workload(_) => self
                .workload(&identity.canonical())
                .map(|w| w.label_sets.iter().cloned().collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    fn service_accounts_of(&self, identity: &Identity) -> BTreeSet<String> {
        match identity {
            Identity::Workload(w) if !w.service_account.is_empty() => {
                BTreeSet::from([w.service_account.clone()])
            }
            Identity::Workload(_) => self
                .workload(&identity.canonical())
                .map(|w| w.service_accounts.clone())
                .unwrap_or_default(),
            _ => BTreeSet::new(),
        }
    }
}

// ---- the policy model (either flavor) ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Flavor {
    NetworkPolicy,
    CiliumNetworkPolicy,
}

impl Flavor {
    pub fn kind(self) -> &'static str {
        match self {
            Self::NetworkPolicy => "NetworkPolicy",
            Self::CiliumNetworkPolicy => "CiliumNetworkPolicy",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }
}

/// Pods a policy selects (its subject) or admits (a peer).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodSet {
    /// `None`: every namespace (only as a peer).
    pub namespace: Option<String>,
    pub selector: LabelSelector,
    /// Their service account (Cilium only: NetworkPolicy cannot select by it).
    pub service_account: Option<String>,
    /// The workload they are, when they are one (its canonical form).
    pub workload: Option<String>,
    /// For people: `workload:shop/deployment/api`, `namespace:shop labels:{..}`.
    pub what: String,
}

impl PodSet {
    /// Whether the pods of `identity` are in this set: `None` when their
    /// labels are unknown or only some of its pods are.
    fn contains(&self, identity: &Identity, facts: &ClusterFacts) -> Option<bool> {
        let Identity::Workload(w) = identity else {
            return Some(false);
        };
        if self.namespace.as_ref().is_some_and(|ns| *ns != w.namespace) {
            return Some(false);
        }
        if let Some(account) = &self.service_account {
            let accounts = facts.service_accounts_of(identity);
            if accounts.is_empty() {
                return None;
            }
            if !accounts.contains(account) {
                return Some(false);
            }
        }
        let sets = facts.label_sets_of(identity);
        if sets.is_empty() {
            return None;
        }
        let matcher = LabelMatcher::new(&self.selector);
        let matching = sets.iter().filter(|set| matcher.matches(set)).count();
        match matching {
            0 => Some(false),
            n if n == sets.len() => Some(true),
            _ => None,
        }
    }
}

/// Who a rule admits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Peer {
    Pods(PodSet),
    /// Addresses outside the cluster.
    Cidr(IpNet),
    /// Every node's host network (Cilium's `host` and `remote-node`).
    Nodes,
    Anyone,
}

impl Peer {
    pub fn describe(&self) -> String {
        match self {
            Self::Pods(set) => set.what.clone(),
            Self::Cidr(net) => format!("cidr:{net}"),
            Self::Nodes => "every node".into(),
            Self::Anyone => "anyone".into(),
        }
    }

    fn contains(&self, identity: &Identity, facts: &ClusterFacts) -> Option<bool> {
        match self {
            Self::Pods(set) => set.contains(identity, facts),
            Self::Cidr(net) => {
                Some(matches!(identity, Identity::External { address } if net.contains(address)))
            }
            Self::Nodes => Some(matches!(identity, Identity::Node { .. })),
            Self::Anyone => Some(true),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PolicyPort {
    Range(PortRange),
    /// A container port's name (a Service's named targetPort).
    Named {
        name: String,
        transport: Transport,
    },
}

impl fmt::Display for PolicyPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Range(range) => range.fmt(f),
            Self::Named { name, transport } => write!(f, "{name}/{transport}"),
        }
    }
}

/// One rule of a policy: a peer and the ports it may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRule {
    pub peer: Peer,
    pub ports: BTreeSet<PolicyPort>,
    /// The baseline edges (their indexes) behind it.
    pub edges: BTreeSet<usize>,
    /// How ports were translated.
    pub notes: BTreeSet<String>,
}

impl PolicyRule {
    fn summary(&self) -> String {
        let ports: Vec<String> = self.ports.iter().map(PolicyPort::to_string).collect();
        format!("{} on {}", self.peer.describe(), ports.join(", "))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub namespace: String,
    pub direction: Direction,
    pub subject: PodSet,
    pub rules: Vec<PolicyRule>,
}

impl Policy {
    /// `NetworkPolicy shop/eastwatch-deployment-db-ingress`.
    pub fn title(&self, flavor: Flavor) -> String {
        format!("{} {}/{}", flavor.kind(), self.namespace, self.name)
    }
}

/// Everything an export produced.
#[derive(Debug, Clone)]
pub struct Export {
    pub flavor: Flavor,
    pub baseline: String,
    pub digest: String,
    pub policies: Vec<Policy>,
    /// Edges (or parts of them) no policy expresses, and why.
    pub warnings: Vec<Diagnostic>,
    /// The indexes of edges with a warning.
    pub warned_edges: BTreeSet<usize>,
    /// Each edge's label (`edges[1] (line 9): a -> b 5432/tcp`) by index.
    pub edge_labels: BTreeMap<usize, String>,
}

#[derive(Debug, Clone, Copy)]
pub struct ExportOptions {
    pub flavor: Flavor,
    /// Also an egress policy per client.
    pub egress: bool,
    pub now: SystemTime,
}

/// What an end of an edge is, in policy terms.
enum End {
    Pods(Vec<PodSet>),
    Cidr(IpNet),
    Nodes,
    Anyone,
}

impl End {
    fn peers(&self) -> Vec<Peer> {
        match self {
            Self::Pods(sets) => sets.iter().cloned().map(Peer::Pods).collect(),
            Self::Cidr(net) => vec![Peer::Cidr(*net)],
            Self::Nodes => vec![Peer::Nodes],
            Self::Anyone => vec![Peer::Anyone],
        }
    }
}

fn selector_text(selector: &LabelSelector) -> String {
    serde_json::to_string(selector).unwrap_or_default()
}

/// What an end is for a policy, or why no policy can name it exactly. The
/// reason reads after "the client" or "the server".
fn resolve(
    selector: &Selector,
    compiled: &SelectorMatcher,
    facts: &ClusterFacts,
    flavor: Flavor,
) -> Result<End, String> {
    let cilium = flavor == Flavor::CiliumNetworkPolicy;
    let workload = match compiled {
        SelectorMatcher::Any => return Ok(End::Anyone),
        SelectorMatcher::Cidr(net) => return Ok(End::Cidr(*net)),
        SelectorMatcher::Node(Pattern::Any) if cilium => return Ok(End::Nodes),
        SelectorMatcher::Node(Pattern::Any) => {
            return Err("is every node's host network, which a NetworkPolicy cannot select (a CiliumNetworkPolicy can)".into());
        }
        SelectorMatcher::Node(Pattern::Exact(name)) => {
            return Err(format!(
                "is node {name}'s host network, which no pod selector names (one node, not every node)"
            ));
        }
        SelectorMatcher::Cgroup(_)
        | SelectorMatcher::Systemd(_)
        | SelectorMatcher::Container(_) => {
            return Err(format!(
                "is a host process ({}), not a pod",
                crate::baseline::validate::describe(selector)
            ));
        }
        SelectorMatcher::Workload(w) => w,
    };
    if workload
        .trust_domain
        .as_deref()
        .is_some_and(|td| td != TRUST_DOMAIN)
    {
        return Err("names a SPIFFE ID of another trust domain, which matches nothing".into());
    }
    let namespace = match &workload.namespace {
        Pattern::Exact(ns) => Some(ns.clone()),
        Pattern::Any => None,
    };
    let mut set = PodSet {
        namespace: namespace.clone(),
        selector: LabelSelector::default(),
        service_account: None,
        workload: None,
        what: crate::baseline::validate::describe(selector),
    };
    let sets = match (&workload.name, &namespace) {
        (Some(Pattern::Exact(name)), Some(ns)) => {
            let found = facts.find(ns, workload.kind.as_ref(), name);
            if found.is_empty() {
                return Err(format!(
                    "is {}, whose pod labels {} does not report",
                    set.what,
                    or_nothing(&facts.source)
                ));
            }
            let mut sets = Vec::new();
            for w in found {
                sets.push(workload_set(w, selector, workload, facts, flavor)?);
            }
            return Ok(End::Pods(sets));
        }
        (Some(Pattern::Exact(name)), None) => {
            return Err(format!(
                "is workload {name} in every namespace, which one pod selector cannot name"
            ));
        }
        (Some(Pattern::Any), _) | (None, _) => {
            if workload.kind.is_some() {
                return Err(format!(
                    "is every {} of a namespace; a workload's kind is no pod label",
                    workload
                        .kind
                        .as_ref()
                        .map(WorkloadKind::as_str)
                        .unwrap_or_default()
                ));
            }
            if let Some(labels) = &selector.labels {
                set.selector = labels.clone();
            }
            if let Some(account) = &workload.service_account {
                if !cilium {
                    return Err(format!(
                        "is selected by service account {account}, which a NetworkPolicy cannot select by (a CiliumNetworkPolicy can)"
                    ));
                }
                set.service_account = Some(account.clone());
            }
            vec![set]
        }
    };
    Ok(End::Pods(sets))
}

fn or_nothing(source: &str) -> &str {
    if source.is_empty() {
        "no source (no cluster, no evidence)"
    } else {
        source
    }
}

/// The pods of one known workload, narrowed by the selector's labels and
/// service account; an error when they cannot be told apart from other
/// pods.
fn workload_set(
    w: &WorkloadFacts,
    selector: &Selector,
    matcher: &crate::baseline::selector::WorkloadMatcher,
    facts: &ClusterFacts,
    flavor: Flavor,
) -> Result<PodSet, String> {
    let what = w.canonical();
    let common = w.common_labels();
    if common.is_empty() {
        return Err(format!(
            "is {what}, whose pods carry no label they all share, so no selector names them"
        ));
    }
    let mut pods = LabelSelector {
        match_labels: common,
        match_expressions: Vec::new(),
    };
    if let Some(labels) = &selector.labels {
        let narrowing = LabelMatcher::new(labels);
        let matching = w
            .label_sets
            .iter()
            .filter(|set| narrowing.matches(set))
            .count();
        if matching == 0 {
            return Err(format!(
                "is {what} with labels {}, which none of its pods carries: the edge allows nothing",
                selector_text(labels)
            ));
        }
        if matching < w.label_sets.len() {
            for (key, value) in &labels.match_labels {
                if pods.match_labels.get(key).is_some_and(|have| have != value) {
                    return Err(format!(
                        "is {what} with label {key}={value}, which contradicts its pods' {key}"
                    ));
                }
                pods.match_labels.insert(key.clone(), value.clone());
            }
            pods.match_expressions
                .extend(labels.match_expressions.iter().cloned());
        }
    }
    let mut service_account = None;
    if let Some(account) = &matcher.service_account {
        let runs_as = &w.service_accounts;
        if !runs_as.is_empty() && !runs_as.contains(account) {
            return Err(format!(
                "is {what} as service account {account}, but its pods run as {}: the edge allows nothing",
                runs_as.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        let only = runs_as.len() == 1;
        match flavor {
            // The selector names exactly those pods already.
            _ if only => {}
            Flavor::CiliumNetworkPolicy => service_account = Some(account.clone()),
            Flavor::NetworkPolicy => {
                return Err(format!(
                    "is {what} as service account {account}, which a NetworkPolicy cannot select by"
                ));
            }
        }
    }
    // Pods of another workload that this selector would also pick.
    let selecting = LabelMatcher::new(&pods);
    let others: Vec<String> = facts
        .workloads
        .iter()
        .filter(|o| o.namespace == w.namespace && o.canonical() != what)
        .filter(|o| o.label_sets.iter().any(|set| selecting.matches(set)))
        .map(WorkloadFacts::canonical)
        .collect();
    if !others.is_empty() {
        return Err(format!(
            "is {what}, but its pods' labels {} also select pods of {}: no selector tells them apart",
            selector_text(&pods),
            others.join(", ")
        ));
    }
    Ok(PodSet {
        namespace: Some(w.namespace.clone()),
        selector: pods,
        service_account,
        workload: Some(what.clone()),
        what,
    })
}

/// The ports a server's pods receive for an edge's ports, with notes on
/// what was translated and warnings on what could not be.
struct ServerPorts {
    ports: BTreeSet<PolicyPort>,
    notes: BTreeSet<String>,
    warnings: Vec<String>,
    services_unknown: bool,
}

fn server_ports(server: &Peer, ranges: &[PortRange], facts: &ClusterFacts) -> ServerPorts {
    let mut out = ServerPorts {
        ports: BTreeSet::new(),
        notes: BTreeSet::new(),
        warnings: Vec::new(),
        services_unknown: false,
    };
    let Peer::Pods(set) = server else {
        out.ports
            .extend(ranges.iter().copied().map(PolicyPort::Range));
        return out;
    };
    let workload = set.workload.as_deref().and_then(|c| facts.workload(c));
    let Some(services) = &facts.services else {
        out.services_unknown = workload.is_some();
        out.ports
            .extend(ranges.iter().copied().map(PolicyPort::Range));
        return out;
    };
    for range in ranges {
        if range.first != range.last {
            out.ports.insert(PolicyPort::Range(*range));
            continue;
        }
        let (port, transport) = (range.first, range.transport);
        let declaring = |s: &&ServiceFacts| {
            s.ports
                .iter()
                .any(|p| p.port == port && p.transport == transport)
        };
        let Some(workload) = workload else {
            // Pods picked by labels or namespace: which Service reaches
            // them is not known; a reviewer should look.
            for service in services
                .iter()
                .filter(|s| set.namespace.as_ref() == Some(&s.namespace))
                .filter(declaring)
            {
                for p in service
                    .ports
                    .iter()
                    .filter(|p| p.port == port && p.transport == transport)
                {
                    if p.target != TargetPort::Number(port) {
                        out.warnings.push(format!(
                            "{range} is also Service {}/{}'s port (targetPort {}); policies see pod ports, so if this edge means the Service, list {}/{transport}",
                            service.namespace, service.name, display_target(&p.target), display_target(&p.target)
                        ));
                    }
                }
            }
            out.ports.insert(PolicyPort::Range(*range));
            continue;
        };
        let mut translated = false;
        for service in services
            .iter()
            .filter(|s| s.selects(workload))
            .filter(declaring)
        {
            for p in service
                .ports
                .iter()
                .filter(|p| p.port == port && p.transport == transport)
            {
                translated = true;
                let target = match &p.target {
                    TargetPort::Number(n) => PolicyPort::Range(PortRange {
                        transport,
                        first: *n,
                        last: *n,
                    }),
                    TargetPort::Name(name) => PolicyPort::Named {
                        name: name.clone(),
                        transport,
                    },
                };
                if p.target != TargetPort::Number(port) {
                    out.notes.insert(format!(
                        "{range} is Service {}/{}'s port: the pods receive it on {target}",
                        service.namespace, service.name
                    ));
                }
                out.ports.insert(target);
            }
        }
        if !translated {
            out.ports.insert(PolicyPort::Range(*range));
        }
    }
    out
}

fn display_target(target: &TargetPort) -> String {
    match target {
        TargetPort::Number(n) => n.to_string(),
        TargetPort::Name(name) => name.clone(),
    }
}

/// Policies being put together, by direction and subject.
#[derive(Default)]
struct Builder {
    policies: BTreeMap<(Direction, PodSet), Vec<PolicyRule>>,
}

impl Builder {
    fn add(
        &mut self,
        direction: Direction,
        subject: &PodSet,
        peer: Peer,
        ports: &ServerPorts,
        edge: usize,
    ) {
        let rules = self
            .policies
            .entry((direction, subject.clone()))
            .or_default();
        match rules.iter_mut().find(|r| r.peer == peer) {
            Some(rule) => {
                rule.ports.extend(ports.ports.iter().cloned());
                rule.edges.insert(edge);
                rule.notes.extend(ports.notes.iter().cloned());
            }
            None => rules.push(PolicyRule {
                peer,
                ports: ports.ports.clone(),
                edges: BTreeSet::from([edge]),
                notes: ports.notes.clone(),
            }),
        }
    }
}

/// Collected warnings, one per edge with every reason.
struct Warnings {
    file: String,
    by_edge: BTreeMap<usize, (Option<crate::baseline::format::Pos>, String, Vec<String>)>,
    general: Vec<Diagnostic>,
}

impl Warnings {
    fn edge(&mut self, rule: &Rule, reason: String) {
        let entry = self
            .by_edge
            .entry(rule.index)
            .or_insert_with(|| (rule.at, rule.label(), Vec::new()));
        if !entry.2.contains(&reason) {
            entry.2.push(reason);
        }
    }
}

/// The policies for `baseline`, and every edge they do not express.
pub fn plan(baseline: &Baseline, facts: &ClusterFacts, options: &ExportOptions) -> Export {
    let flavor = options.flavor;
    let mut warnings = Warnings {
        file: baseline.file.clone(),
        by_edge: BTreeMap::new(),
        general: Vec::new(),
    };
    let mut builder = Builder::default();
    let mut services_unknown = false;
    for rule in &baseline.rules {
        if rule.expired(options.now) {
            warnings.edge(
                rule,
                "it has expired and allows nothing, so nothing is exported for it".into(),
            );
            continue;
        }
        let from = resolve(&rule.edge.from, &rule.from, facts, flavor);
        let to = resolve(&rule.edge.to, &rule.to, facts, flavor);
        let mut add = |direction: Direction,
                       subject: &PodSet,
                       peer: Peer,
                       server: &Peer,
                       warnings: &mut Warnings| {
            let ports = server_ports(server, &rule.ports, facts);
            services_unknown |= ports.services_unknown;
            for warning in &ports.warnings {
                warnings.edge(rule, warning.clone());
            }
            builder.add(direction, subject, peer, &ports, rule.index);
        };
        // At the server: its ingress policy admits the client.
        match (&to, &from) {
            (Ok(End::Pods(servers)), Ok(client)) => {
                for server in servers {
                    if server.namespace.is_none() {
                        warnings.edge(rule, "the server is in every namespace, which one namespaced policy cannot hold".into());
                        continue;
                    }
                    for peer in client.peers() {
                        add(Direction::Ingress, server, peer, &Peer::Pods(server.clone()), &mut warnings);
                    }
                }
            }
            (Ok(End::Pods(servers)), Err(why)) => {
                let names: Vec<&str> = servers.iter().map(|s| s.what.as_str()).collect();
                warnings.edge(rule, format!("the client {why}; the ingress policy of {} will not admit it", names.join(", ")));
            }
            (Ok(End::Nodes), _) => warnings.edge(rule, "the server is a node's host network, which pod policies do not govern".into()),
            (Ok(End::Cidr(_) | End::Anyone), _) if !options.egress => warnings.edge(
                rule,
                "the server is outside the cluster (or anyone): only the client's egress policy can express it (export with --egress)".into(),
            ),
            (Ok(End::Cidr(_) | End::Anyone), _) => {}
            (Err(why), _) => warnings.edge(rule, format!("the server {why}")),
        }
        if !options.egress {
            continue;
        }
        // At the client: its egress policy admits the server.
        if let Ok(End::Pods(clients)) = &from {
            match &to {
                Ok(server) => {
                    for client in clients {
                        if client.namespace.is_none() {
                            warnings.edge(rule, "the client is in every namespace, which one namespaced policy cannot hold".into());
                            continue;
                        }
                        for peer in server.peers() {
                            add(
                                Direction::Egress,
                                client,
                                peer.clone(),
                                &peer,
                                &mut warnings,
                            );
                        }
                    }
                }
                Err(why) => {
                    let names: Vec<&str> = clients.iter().map(|s| s.what.as_str()).collect();
                    warnings.edge(
                        rule,
                        format!(
                            "the server {why}; the egress policy of {} will not admit it",
                            names.join(", ")
                        ),
                    );
                }
            }
        }
    }
    if services_unknown {
        warnings.general.push(Diagnostic::warning(
            &warnings.file,
            None,
            format!(
                "Services are unknown ({}): ports are taken as the pods' own, so a port that was a Service's is admitted as it is, not as its targetPort",
                or_nothing(&facts.source)
            ),
        ));
    }
    let policies = name_policies(builder, flavor);
    for policy in policies.iter().filter(|p| p.direction == Direction::Egress) {
        let dns = policy.rules.iter().any(|r| {
            r.ports.iter().any(
                |p| matches!(p, PolicyPort::Range(range) if range.contains(53, Transport::Udp)),
            )
        });
        if !dns {
            warnings.general.push(Diagnostic::warning(
                &warnings.file,
                None,
                format!(
                    "{}: the egress of {} admits no DNS (53/udp), so its name lookups fail once enforced unless the baseline lists them",
                    policy.title(flavor),
                    policy.subject.what
                ),
            ));
        }
    }
    let mut diagnostics = Vec::new();
    let warned_edges = warnings.by_edge.keys().copied().collect();
    for (index, (at, label, reasons)) in warnings.by_edge {
        let expressed = policies
            .iter()
            .any(|p| p.rules.iter().any(|r| r.edges.contains(&index)));
        let state = if expressed {
            "partly exported"
        } else {
            "not exported"
        };
        diagnostics.push(Diagnostic::warning(
            &warnings.file,
            at,
            format!("{label}: {state}: {}", reasons.join("; ")),
        ));
    }
    diagnostics.extend(warnings.general);
    Export {
        flavor,
        baseline: baseline.name.clone(),
        digest: baseline.digest.clone(),
        policies,
        warnings: diagnostics,
        warned_edges,
        edge_labels: baseline
            .rules
            .iter()
            .map(|r| (r.index, r.label()))
            .collect(),
    }
}

/// Policy names: `eastwatch-<kind>-<workload>-<direction>`, or a digest of
/// the selector for pods that are no one workload; unique per namespace.
fn name_policies(builder: Builder, flavor: Flavor) -> Vec<Policy> {
    let mut taken: BTreeSet<(String, String)> = BTreeSet::new();
    let mut policies = Vec::new();
    for ((direction, subject), rules) in builder.policies {
        let namespace = subject.namespace.clone().unwrap_or_default();
        let digest = short_digest(&format!(
            "{}|{:?}|{:?}",
            selector_text(&subject.selector),
            subject.service_account,
            flavor
        ));
        let stem = match &subject.workload {
            // workload:<ns>/<kind>/<name> → <kind>-<name>
            Some(canonical) => {
                let mut parts = canonical.rsplit('/');
                let name = parts.next().unwrap_or_default();
                format!("{}-{name}", parts.next().unwrap_or_default())
            }
            None if subject.selector == LabelSelector::default()
                && subject.service_account.is_none() =>
            {
                "all-pods".into()
            }
            None => format!("pods-{digest}"),
        };
        let mut name = dns_name(&format!("eastwatch-{stem}-{}", direction.as_str()));
        if !taken.insert((namespace.clone(), name.clone())) {
            name = dns_name(&format!("eastwatch-{stem}-{digest}-{}", direction.as_str()));
            taken.insert((namespace.clone(), name.clone()));
        }
        policies.push(Policy {
            name,
            namespace,
            direction,
            subject,
            rules,
        });
    }
    policies.sort_by(|a, b| {
        (&a.namespace, &a.subject.what, a.direction).cmp(&(
            &b.namespace,
            &b.subject.what,
            b.direction,
        ))
    });
    policies
}

fn short_digest(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A DNS-1123 subdomain: lowercase alphanumerics, `-` and `.`, at most 253.
fn dns_name(text: &str) -> String {
    let mut name: String = text
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(253);
    name.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

// ---- rendering ----

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document<Spec> {
    api_version: &'static str,
    kind: &'static str,
    metadata: ObjectMeta,
    spec: Spec,
}

#[derive(Serialize)]
struct ObjectMeta {
    name: String,
    namespace: String,
    labels: BTreeMap<&'static str, &'static str>,
    annotations: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NpSpec {
    pod_selector: LabelSelector,
    policy_types: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ingress: Vec<NpIngressRule>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    egress: Vec<NpEgressRule>,
}

#[derive(Serialize)]
struct NpIngressRule {
    /// Absent: from anyone.
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<Vec<NpPeer>>,
    ports: Vec<NpPort>,
}

#[derive(Serialize)]
struct NpEgressRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<Vec<NpPeer>>,
    ports: Vec<NpPort>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NpPeer {
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace_selector: Option<LabelSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod_selector: Option<LabelSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip_block: Option<IpBlock>,
}

#[derive(Serialize)]
struct IpBlock {
    cidr: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NpPort {
    protocol: &'static str,
    /// Absent: every port of the protocol.
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<PortValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_port: Option<u16>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum PortValue {
    Number(u16),
    Name(String),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CnpSpec {
    description: String,
    endpoint_selector: LabelSelector,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ingress: Vec<CnpIngressRule>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    egress: Vec<CnpEgressRule>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CnpIngressRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    from_endpoints: Option<Vec<LabelSelector>>,
    #[serde(rename = "fromCIDR", skip_serializing_if = "Option::is_none")]
    from_cidr: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from_entities: Option<Vec<&'static str>>,
    to_ports: Vec<CnpPortRule>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CnpEgressRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    to_endpoints: Option<Vec<LabelSelector>>,
    #[serde(rename = "toCIDR", skip_serializing_if = "Option::is_none")]
    to_cidr: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to_entities: Option<Vec<&'static str>>,
    to_ports: Vec<CnpPortRule>,
}

#[derive(Serialize)]
struct CnpPortRule {
    ports: Vec<CnpPort>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CnpPort {
    /// `"0"`: every port.
    port: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_port: Option<u16>,
    protocol: &'static str,
}

fn protocol(transport: Transport) -> &'static str {
    match transport {
        Transport::Tcp => "TCP",
        Transport::Udp => "UDP",
    }
}

fn np_ports(ports: &BTreeSet<PolicyPort>) -> Vec<NpPort> {
    ports
        .iter()
        .map(|p| match p {
            PolicyPort::Range(r) if r.first == 1 && r.last == u16::MAX => NpPort {
                protocol: protocol(r.transport),
                port: None,
                end_port: None,
            },
            PolicyPort::Range(r) => NpPort {
                protocol: protocol(r.transport),
                port: Some(PortValue::Number(r.first)),
                end_port: (r.last > r.first).then_some(r.last),
            },
            PolicyPort::Named { name, transport } => NpPort {
                protocol: protocol(*transport),
                port: Some(PortValue::Name(name.clone())),
                end_port: None,
            },
        })
        .collect()
}

fn cnp_ports(ports: &BTreeSet<PolicyPort>) -> Vec<CnpPortRule> {
    let all: Vec<CnpPort> = ports
        .iter()
        .map(|p| match p {
            PolicyPort::Range(r) if r.first == 1 && r.last == u16::MAX => CnpPort {
                port: "0".into(),
                end_port: None,
                protocol: protocol(r.transport),
            },
            PolicyPort::Range(r) => CnpPort {
                port: r.first.to_string(),
                end_port: (r.last > r.first).then_some(r.last),
                protocol: protocol(r.transport),
            },
            PolicyPort::Named { name, transport } => CnpPort {
                port: name.clone(),
                end_port: None,
                protocol: protocol(*transport),
            },
        })
        .collect();
    let mut rules = Vec::new();
    let mut rest = all.into_iter().peekable();
    while rest.peek().is_some() {
        rules.push(CnpPortRule {
            ports: rest.by_ref().take(CILIUM_MAX_PORTS).collect(),
        });
    }
    rules
}

fn np_peer(peer: &Peer) -> Option<Vec<NpPeer>> {
    match peer {
        Peer::Anyone => None,
        Peer::Cidr(net) => Some(vec![NpPeer {
            namespace_selector: None,
            pod_selector: None,
            ip_block: Some(IpBlock {
                cidr: net.to_string(),
            }),
        }]),
        Peer::Pods(set) => Some(vec![NpPeer {
            namespace_selector: Some(match &set.namespace {
                Some(ns) => LabelSelector {
                    match_labels: BTreeMap::from([(NAMESPACE_LABEL.to_owned(), ns.clone())]),
                    match_expressions: Vec::new(),
                },
                None => LabelSelector::default(),
            }),
            pod_selector: Some(set.selector.clone()),
            ip_block: None,
        }]),
        // Never planned for NetworkPolicy (resolve refuses it).
        Peer::Nodes => Some(Vec::new()),
    }
}

/// A Cilium endpoint selector for a peer's pods: namespace spelled out.
fn cnp_endpoints(set: &PodSet) -> LabelSelector {
    let mut selector = cnp_subject(set);
    match &set.namespace {
        Some(ns) => {
            selector
                .match_labels
                .insert(CILIUM_NAMESPACE.to_owned(), ns.clone());
        }
        None => selector.match_expressions.push(LabelRequirement {
            key: CILIUM_NAMESPACE.to_owned(),
            operator: LabelOperator::Exists,
            values: Vec::new(),
        }),
    }
    selector
}

fn cnp_subject(set: &PodSet) -> LabelSelector {
    let mut selector = set.selector.clone();
    if let Some(account) = &set.service_account {
        selector
            .match_labels
            .insert(CILIUM_SERVICE_ACCOUNT.to_owned(), account.clone());
    }
    selector
}

type CnpPeer = (
    Option<Vec<LabelSelector>>,
    Option<Vec<String>>,
    Option<Vec<&'static str>>,
);

fn cnp_peer(peer: &Peer) -> CnpPeer {
    match peer {
        Peer::Pods(set) => (Some(vec![cnp_endpoints(set)]), None, None),
        Peer::Cidr(net) => (None, Some(vec![net.to_string()]), None),
        Peer::Nodes => (None, None, Some(vec!["host", "remote-node"])),
        Peer::Anyone => (None, None, Some(vec!["all"])),
    }
}

/// The policies as one multi-document YAML stream for `kubectl apply -f`,
/// each document after comments naming the baseline edges behind it.
pub fn to_yaml(export: &Export) -> Result<String, String> {
    let mut out = String::new();
    for policy in &export.policies {
        let metadata = ObjectMeta {
            name: policy.name.clone(),
            namespace: policy.namespace.clone(),
            labels: BTreeMap::from([("app.kubernetes.io/managed-by", "eastwatch")]),
            annotations: BTreeMap::from([
                ("eastwatch.io/baseline", export.baseline.clone()),
                ("eastwatch.io/baseline-digest", export.digest.clone()),
            ]),
        };
        let description = format!(
            "eastwatch: {} of {}, from baseline {}",
            policy.direction.as_str(),
            policy.subject.what,
            export.baseline
        );
        let yaml = match export.flavor {
            Flavor::NetworkPolicy => {
                let spec = NpSpec {
                    pod_selector: policy.subject.selector.clone(),
                    policy_types: vec![match policy.direction {
                        Direction::Ingress => "Ingress",
                        Direction::Egress => "Egress",
                    }],
                    ingress: match policy.direction {
                        Direction::Ingress => policy
                            .rules
                            .iter()
                            .map(|r| NpIngressRule {
                                from: np_peer(&r.peer),
                                ports: np_ports(&r.ports),
                            })
                            .collect(),
                        Direction::Egress => Vec::new(),
                    },
                    egress: match policy.direction {
                        Direction::Egress => policy
                            .rules
                            .iter()
                            .map(|r| NpEgressRule {
                                to: np_peer(&r.peer),
                                ports: np_ports(&r.ports),
                            })
                            .collect(),
                        Direction::Ingress => Vec::new(),
                    },
                };
                serde_saphyr::to_string(&Document {
                    api_version: "networking.k8s.io/v1",
                    kind: "NetworkPolicy",
                    metadata,
                    spec,
                })
            }
            Flavor::CiliumNetworkPolicy => {
                let mut spec = CnpSpec {
                    description,
                    endpoint_selector: cnp_subject(&policy.subject),
                    ingress: Vec::new(),
                    egress: Vec::new(),
                };
                for rule in &policy.rules {
                    let (endpoints, cidrs, entities) = cnp_peer(&rule.peer);
                    match policy.direction {
                        Direction::Ingress => spec.ingress.push(CnpIngressRule {
                            from_endpoints: endpoints,
                            from_cidr: cidrs,
                            from_entities: entities,
                            to_ports: cnp_ports(&rule.ports),
                        }),
                        Direction::Egress => spec.egress.push(CnpEgressRule {
                            to_endpoints: endpoints,
                            to_cidr: cidrs,
                            to_entities: entities,
                            to_ports: cnp_ports(&rule.ports),
                        }),
                    }
                }
                serde_saphyr::to_string(&Document {
                    api_version: "cilium.io/v2",
                    kind: "CiliumNetworkPolicy",
                    metadata,
                    spec,
                })
            }
        }
        .map_err(|err| format!("serializing {}: {err}", policy.title(export.flavor)))?;
        out.push_str("---\n");
        out.push_str(&format!(
            "# {} of {} (baseline {})\n",
            policy.direction.as_str(),
            policy.subject.what,
            export.baseline
        ));
        for (i, rule) in policy.rules.iter().enumerate() {
            out.push_str(&format!("# rule {}: {}\n", i + 1, rule.summary()));
            for edge in &rule.edges {
                if let Some(label) = export.edge_labels.get(edge) {
                    out.push_str(&format!("#   from {label}\n"));
                }
            }
            for note in &rule.notes {
                out.push_str(&format!("#   {note}\n"));
            }
        }
        out.push_str(&yaml);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

// ---- the check ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckVerdict {
    Admitted,
    Blocked,
    Undetermined,
}

/// One observed flow, checked against the policies.
#[derive(Debug, Clone, Serialize)]
pub struct FlowCheck {
    pub flow: String,
    pub origin: String,
    pub count: u64,
    pub verdict: CheckVerdict,
    /// The port the server's pods receive (after a Service's DNAT).
    pub pod_ports: Vec<String>,
    /// The policies that would drop it, with what each admits.
    pub blocked_by: Vec<String>,
    /// Why the verdict is undetermined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// What the baseline says about it.
    pub baseline: String,
    /// Which rule set would have to change to let it through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub flows: usize,
    pub admitted: usize,
    pub blocked: usize,
    pub undetermined: usize,
    pub results: Vec<FlowCheck>,
}

/// What the policies do to `flows`, as a CNI would enforce them: a flow
/// passes when the server's ingress and the client's egress policies (if
/// any select them) both admit it.
pub fn check(
    export: &Export,
    baseline: &Baseline,
    facts: &ClusterFacts,
    flows: &[ObservedFlow],
    now: SystemTime,
) -> CheckReport {
    let matcher = Matcher::new(Arc::new(baseline.clone()));
    let mut results = Vec::new();
    for flow in flows {
        let verdict = matcher.judge(&flow.edge(), now);
        let baseline_says = match verdict {
            RuleMatch::Allowed(i) => format!("allowed by {}", baseline.rules[i].label()),
            RuleMatch::Expired(i) => {
                format!("only {}, which has expired", baseline.rules[i].label())
            }
            RuleMatch::Unauthorized => "unauthorized: no edge allows it".into(),
        };
        let mut result = FlowCheck {
            flow: flow.describe(),
            origin: flow.origin.clone(),
            count: flow.count,
            verdict: CheckVerdict::Admitted,
            pod_ports: Vec::new(),
            blocked_by: Vec::new(),
            why: None,
            baseline: baseline_says,
            change: None,
        };
        match enforce(export, facts, flow) {
            Enforced::Undetermined(why) => {
                result.verdict = CheckVerdict::Undetermined;
                result.why = Some(why);
            }
            Enforced::Decided {
                ports,
                blocked_by,
                governed,
            } => {
                result.pod_ports = ports
                    .iter()
                    .map(|p| format!("{p}/{}", flow.transport))
                    .collect();
                if !blocked_by.is_empty() {
                    result.verdict = CheckVerdict::Blocked;
                    result.blocked_by = blocked_by;
                    result.change = Some(match verdict {
                        RuleMatch::Unauthorized => "the baseline: no edge allows this path; if it is legitimate, add one (`eastwatch baseline explain` names the nearest) and export again".into(),
                        RuleMatch::Expired(i) => format!(
                            "the baseline: renew edges[{}] (it has expired) and export again",
                            baseline.rules[i].index
                        ),
                        RuleMatch::Allowed(i) => {
                            let index = baseline.rules[i].index;
                            if export.warned_edges.contains(&index) {
                                format!("the export: the baseline allows it but edges[{index}] was not exported (see its warning)")
                            } else {
                                format!("the export: the baseline allows it (edges[{index}]) but the policies admit other ports")
                            }
                        }
                    });
                } else if verdict == RuleMatch::Unauthorized {
                    result.change = Some(if governed {
                        "none, but note: the policies admit a path the baseline refuses".into()
                    } else {
                        "the export: no policy selects either end, so enforcing them leaves this path open".into()
                    });
                }
            }
        }
        results.push(result);
    }
    let count = |v: CheckVerdict| results.iter().filter(|r| r.verdict == v).count();
    CheckReport {
        flows: results.len(),
        admitted: count(CheckVerdict::Admitted),
        blocked: count(CheckVerdict::Blocked),
        undetermined: count(CheckVerdict::Undetermined),
        results,
    }
}

enum Enforced {
    Decided {
        /// The ports the server's pods receive.
        ports: Vec<u16>,
        blocked_by: Vec<String>,
        /// Some policy selects an end (else nothing is enforced on it).
        governed: bool,
    },
    Undetermined(String),
}

/// The ports `flow` arrives on at the server's pods: through a Service's
/// translation when it went through one (an alert says so; for evidence a
/// port a Service of the server declares is read as that Service's).
fn arriving_ports(facts: &ClusterFacts, flow: &ObservedFlow) -> Result<Vec<u16>, String> {
    let (Some(services), Some(workload)) = (&facts.services, facts.workload(&flow.to.canonical()))
    else {
        return Ok(vec![flow.port]);
    };
    let candidates: Vec<&ServiceFacts> = match &flow.service {
        Some(via) => services
            .iter()
            .filter(|s| s.namespace == via.namespace && s.name == via.name)
            .collect(),
        None => services.iter().filter(|s| s.selects(workload)).collect(),
    };
    let mut ports = BTreeSet::new();
    for target in candidates
        .iter()
        .flat_map(|s| s.ports.iter())
        .filter(|p| p.port == flow.port && p.transport == flow.transport)
        .map(|p| &p.target)
    {
        match target {
            TargetPort::Number(n) => {
                ports.insert(*n);
            }
            TargetPort::Name(name) => match workload.named_ports.get(name) {
                Some(numbers) => ports.extend(numbers),
                None => {
                    return Err(format!(
                        "the Service's targetPort {name} is no named port of {}",
                        workload.canonical()
                    ));
                }
            },
        }
    }
    if ports.is_empty() {
        ports.insert(flow.port);
    }
    Ok(ports.into_iter().collect())
}

fn port_admitted(
    ports: &BTreeSet<PolicyPort>,
    port: u16,
    transport: Transport,
    named: Option<&WorkloadFacts>,
) -> bool {
    ports.iter().any(|p| match p {
        PolicyPort::Range(range) => range.contains(port, transport),
        PolicyPort::Named { name, transport: t } => {
            *t == transport
                && named
                    .and_then(|w| w.named_ports.get(name))
                    .is_some_and(|numbers| numbers.contains(&port))
        }
    })
}

fn enforce(export: &Export, facts: &ClusterFacts, flow: &ObservedFlow) -> Enforced {
    let to_is_pod = matches!(flow.to, Identity::Workload(_));
    let ports = if to_is_pod {
        match arriving_ports(facts, flow) {
            Ok(ports) => ports,
            Err(why) => return Enforced::Undetermined(why),
        }
    } else {
        vec![flow.port]
    };
    let server = facts.workload(&flow.to.canonical());
    let mut blocked_by = Vec::new();
    let mut governed = false;
    for (direction, subject, peer) in [
        (Direction::Ingress, &flow.to, &flow.from),
        (Direction::Egress, &flow.from, &flow.to),
    ] {
        let Identity::Workload(w) = subject else {
            continue;
        };
        let candidates: Vec<&Policy> = export
            .policies
            .iter()
            .filter(|p| p.direction == direction && p.namespace == w.namespace)
            .collect();
        let mut selecting = Vec::new();
        for policy in candidates {
            match policy.subject.contains(subject, facts) {
                Some(true) => selecting.push(policy),
                Some(false) => {}
                None => {
                    return Enforced::Undetermined(format!(
                        "the pod labels of {subject} are unknown, so whether {} selects it is too",
                        policy.title(export.flavor)
                    ));
                }
            }
        }
        if selecting.is_empty() {
            continue;
        }
        governed = true;
        let mut admitted = false;
        for rule in selecting.iter().flat_map(|p| p.rules.iter()) {
            let peer_in = match rule.peer.contains(peer, facts) {
                Some(inside) => inside,
                None => {
                    return Enforced::Undetermined(format!(
                        "the pod labels of {peer} are unknown, so whether a rule admits it is too"
                    ));
                }
            };
            if peer_in
                && ports
                    .iter()
                    .all(|port| port_admitted(&rule.ports, *port, flow.transport, server))
            {
                admitted = true;
                break;
            }
        }
        if !admitted {
            for policy in selecting {
                let rules: Vec<String> = policy.rules.iter().map(PolicyRule::summary).collect();
                blocked_by.push(format!(
                    "{} ({} of {}; admits {})",
                    policy.title(export.flavor),
                    direction.as_str(),
                    policy.subject.what,
                    rules.join("; ")
                ));
            }
        }
    }
    Enforced::Decided {
        ports,
        blocked_by,
        governed,
    }
}

/// The report for people.
pub fn check_text(report: &CheckReport) -> String {
    let mut out = String::new();
    for r in &report.results {
        let verdict = match r.verdict {
            CheckVerdict::Admitted => "admitted",
            CheckVerdict::Blocked => "BLOCKED",
            CheckVerdict::Undetermined => "undetermined",
        };
        out.push_str(&format!(
            "{verdict:<12} {}  ({}, {}x)\n",
            r.flow, r.origin, r.count
        ));
        if !r.pod_ports.is_empty() && r.verdict == CheckVerdict::Blocked {
            out.push_str(&format!("  pod port:   {}\n", r.pod_ports.join(", ")));
        }
        for policy in &r.blocked_by {
            out.push_str(&format!("  blocked by: {policy}\n"));
        }
        if let Some(why) = &r.why {
            out.push_str(&format!("  why:        {why}\n"));
        }
        if r.verdict != CheckVerdict::Admitted || r.change.is_some() {
            out.push_str(&format!("  baseline:   {}\n", r.baseline));
        }
        if let Some(change) = &r.change {
            out.push_str(&format!("  to change:  {change}\n"));
        }
    }
    out.push_str(&format!(
        "{} flows: {} admitted, {} blocked, {} undetermined\n",
        report.flows, report.admitted, report.blocked, report.undetermined
    ));
    out
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::{
        baseline::{matcher::judge_linear, validate},
        identity::{ServiceRef, Workload},
    };

    fn baseline(edges: &str) -> Baseline {
        let text = format!(
            "apiVersion: eastwatch.io/v1\nkind: Baseline\nmetadata:\n  name: shop\nspec:\n  edges:\n{edges}"
        );
        validate::from_str(&text, "b.yaml", SystemTime::now())
            .expect("valid baseline")
            .0
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn workload(ns: &str, name: &str, pod_labels: &[(&str, &str)]) -> WorkloadFacts {
        WorkloadFacts {
            namespace: ns.into(),
            kind: "Deployment".into(),
            name: name.into(),
            label_sets: BTreeSet::from([labels(pod_labels)]),
            service_accounts: BTreeSet::from([name.to_owned()]),
            named_ports: BTreeMap::new(),
        }
    }

    fn service(ns: &str, name: &str, app: &str, port: u16, target: TargetPort) -> ServiceFacts {
        ServiceFacts {
            namespace: ns.into(),
            name: name.into(),
            selector: labels(&[("app", app)]),
            ports: vec![ServicePortFacts {
                port,
                transport: Transport::Tcp,
                target,
            }],
        }
    }

    /// The demo's shop: frontend → api Service (80 → 8080), api → db.
    fn shop() -> ClusterFacts {
        ClusterFacts {
            source: "test".into(),
            workloads: ["frontend", "api", "db"]
                .iter()
                .map(|t| workload("shop", t, &[("app", t), ("tier", t)]))
                .collect(),
            services: Some(vec![
                service("shop", "api", "api", 80, TargetPort::Number(8080)),
                service("shop", "db", "db", 5432, TargetPort::Number(5432)),
            ]),
        }
    }

    fn edge(from: &str, to: &str, ports: &str) -> String {
        format!("    - from: {from}\n      to: {to}\n      ports: [{ports}]\n")
    }

    fn w(name: &str) -> String {
        format!("{{namespace: shop, workload: {{kind: Deployment, name: {name}}}}}")
    }

    fn demo() -> Baseline {
        baseline(&format!(
            "{}{}",
            edge(&w("frontend"), &w("api"), "\"80/tcp\", \"8080/tcp\""),
            edge(&w("api"), &w("db"), "\"5432/tcp\"")
        ))
    }

    fn options(flavor: Flavor, egress: bool) -> ExportOptions {
        ExportOptions {
            flavor,
            egress,
            now: SystemTime::now(),
        }
    }

    fn ports(rule: &PolicyRule) -> Vec<String> {
        rule.ports.iter().map(PolicyPort::to_string).collect()
    }

    fn find<'a>(export: &'a Export, name: &str) -> &'a Policy {
        export
            .policies
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", export.policies))
    }

    #[test]
    fn a_service_port_becomes_the_pods_target_port() {
        let export = plan(&demo(), &shop(), &options(Flavor::NetworkPolicy, false));
        assert!(export.warnings.is_empty(), "{:?}", export.warnings);
        assert_eq!(export.policies.len(), 2);
        let api = find(&export, "eastwatch-deployment-api-ingress");
        assert_eq!(
            api.subject.selector.match_labels,
            labels(&[("app", "api"), ("tier", "api")])
        );
        assert_eq!(api.rules.len(), 1);
        assert_eq!(
            api.rules[0].peer.describe(),
            "workload:shop/deployment/frontend"
        );
        assert_eq!(
            ports(&api.rules[0]),
            ["8080/tcp"],
            "80 is the Service's; 8080 the pod's"
        );
        assert!(
            api.rules[0]
                .notes
                .iter()
                .any(|n| n.contains("Service shop/api's port"))
        );
        let db = find(&export, "eastwatch-deployment-db-ingress");
        assert_eq!(db.rules[0].peer.describe(), "workload:shop/deployment/api");
        assert_eq!(ports(&db.rules[0]), ["5432/tcp"]);
    }

    #[test]
    fn named_target_ports_stay_names() {
        let mut facts = shop();
        facts.services = Some(vec![service(
            "shop",
            "api",
            "api",
            80,
            TargetPort::Name("http".into()),
        )]);
        let export = plan(&demo(), &facts, &options(Flavor::NetworkPolicy, false));
        let api = find(&export, "eastwatch-deployment-api-ingress");
        assert_eq!(ports(&api.rules[0]), ["8080/tcp", "http/tcp"]);
        let yaml = to_yaml(&export).expect("yaml");
        assert!(yaml.contains("port: http"), "{yaml}");
    }

    #[test]
    fn ends_no_policy_names_are_warnings_never_wider_rules() {
        let b = baseline(&format!(
            "{}{}{}{}{}{}",
            edge("{systemd: nginx.service}", &w("db"), "\"5432/tcp\""),
            edge("{node: \"*\"}", &w("api"), "\"8080/tcp\""),
            edge("{node: n1}", &w("api"), "\"9090/tcp\""),
            edge(
                "{cgroup: /system.slice/x.service}",
                "{cidr: 10.0.0.0/8}",
                "\"443/tcp\""
            ),
            edge(&w("frontend"), "{cidr: 10.0.0.0/8}", "\"443/tcp\""),
            edge(&w("api"), &w("db"), "\"5432/tcp\""),
        ));
        let export = plan(&b, &shop(), &options(Flavor::NetworkPolicy, false));
        let text: Vec<String> = export.warnings.iter().map(ToString::to_string).collect();
        let warned = |needle: &str| text.iter().any(|t| t.contains(needle));
        assert!(
            warned("edges[0] (line 7): namespace:shop") || warned("edges[0]"),
            "{text:#?}"
        );
        assert!(
            warned("is a host process (systemd:nginx.service), not a pod"),
            "{text:#?}"
        );
        assert!(
            warned("every node's host network, which a NetworkPolicy cannot select"),
            "{text:#?}"
        );
        assert!(warned("node n1's host network"), "{text:#?}");
        assert!(
            warned("only the client's egress policy can express it"),
            "{text:#?}"
        );
        assert!(text.iter().all(|t| t.starts_with("b.yaml:")), "{text:#?}");
        // Only the api → db edge became a rule.
        let rules: Vec<String> = export
            .policies
            .iter()
            .flat_map(|p| p.rules.iter().map(PolicyRule::summary))
            .collect();
        assert_eq!(rules, ["workload:shop/deployment/api on 5432/tcp"]);
        assert_eq!(export.warned_edges, BTreeSet::from([0, 1, 2, 3, 4]));

        // Cilium names every node (host, remote-node) and egress names the
        // CIDR; the host processes stay warnings.
        let cilium = plan(&b, &shop(), &options(Flavor::CiliumNetworkPolicy, true));
        let api = find(&cilium, "eastwatch-deployment-api-ingress");
        assert_eq!(api.rules[0].peer, Peer::Nodes);
        let egress = find(&cilium, "eastwatch-deployment-frontend-egress");
        assert_eq!(
            egress.rules[0].peer,
            Peer::Cidr("10.0.0.0/8".parse().expect("net"))
        );
        let text: Vec<String> = cilium.warnings.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|t| t.contains("admits no DNS")),
            "{text:#?}"
        );
        assert!(
            text.iter().any(|t| t.contains("systemd:nginx.service")),
            "{text:#?}"
        );
        let yaml = to_yaml(&cilium).expect("yaml");
        assert!(
            yaml.contains("- host\n") && yaml.contains("- remote-node\n"),
            "{yaml}"
        );
        assert!(
            yaml.contains("toCIDR:\n") && yaml.contains("10.0.0.0/8"),
            "{yaml}"
        );
    }

    #[test]
    fn shared_or_unknown_labels_are_not_exported() {
        let mut facts = shop();
        facts
            .workloads
            .push(workload("shop", "web-a", &[("app", "web")]));
        facts.workloads.push(workload(
            "shop",
            "web-b",
            &[("app", "web"), ("canary", "yes")],
        ));
        let b = baseline(&format!(
            "{}{}",
            edge(&w("web-a"), &w("db"), "\"5432/tcp\""),
            edge(&w("ghost"), &w("db"), "\"5432/tcp\""),
        ));
        let export = plan(&b, &facts, &options(Flavor::NetworkPolicy, false));
        assert!(export.policies.is_empty(), "{:?}", export.policies);
        let text: Vec<String> = export.warnings.iter().map(ToString::to_string).collect();
        assert!(
            text[0].contains("also select pods of workload:shop/deployment/web-b"),
            "{text:#?}"
        );
        assert!(
            text[1].contains("whose pod labels test does not report"),
            "{text:#?}"
        );
        // web-b's labels are its own: it can be a peer.
        let b = baseline(&edge(&w("web-b"), &w("db"), "\"5432/tcp\""));
        let export = plan(&b, &facts, &options(Flavor::NetworkPolicy, false));
        assert!(export.warnings.is_empty(), "{:?}", export.warnings);
    }

    #[test]
    fn namespaces_labels_and_service_accounts() {
        let b = baseline(&format!(
            "{}{}{}{}",
            edge("{namespace: shop}", &w("db"), "\"5432/tcp\""),
            edge(
                "{namespace: \"*\", labels: {matchLabels: {team: ops}}}",
                &w("db"),
                "\"22/tcp\""
            ),
            edge(
                "{namespace: shop, serviceAccount: backup}",
                &w("db"),
                "\"5433/tcp\""
            ),
            edge("{any: true}", &w("api"), "\"*/tcp\""),
        ));
        let np = plan(&b, &shop(), &options(Flavor::NetworkPolicy, false));
        let text: Vec<String> = np.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 1, "{text:#?}");
        assert!(text[0].contains("service account backup, which a NetworkPolicy cannot select by"));
        let yaml = to_yaml(&np).expect("yaml");
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&yaml).expect("stream");
        assert_eq!(docs.len(), 2);
        let api = &docs[0]["spec"];
        assert_eq!(
            api["ingress"][0].get("from"),
            None,
            "any: a rule without from"
        );
        assert_eq!(
            api["ingress"][0]["ports"],
            serde_json::json!([{"protocol": "TCP"}])
        );
        let db = &docs[1]["spec"]["ingress"];
        assert_eq!(
            db[0]["from"][0]["namespaceSelector"],
            serde_json::json!({"matchLabels": {"kubernetes.io/metadata.name": "shop"}})
        );
        assert_eq!(db[0]["from"][0]["podSelector"], serde_json::json!({}));
        assert_eq!(db[1]["from"][0]["namespaceSelector"], serde_json::json!({}));
        assert_eq!(
            db[1]["from"][0]["podSelector"],
            serde_json::json!({"matchLabels": {"team": "ops"}})
        );

        let cilium = plan(&b, &shop(), &options(Flavor::CiliumNetworkPolicy, false));
        assert!(cilium.warnings.is_empty(), "{:?}", cilium.warnings);
        let yaml = to_yaml(&cilium).expect("yaml");
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&yaml).expect("stream");
        let db = &docs[1]["spec"]["ingress"];
        assert_eq!(
            db[2]["fromEndpoints"][0]["matchLabels"],
            serde_json::json!({
                "k8s:io.cilium.k8s.policy.serviceaccount": "backup",
                "k8s:io.kubernetes.pod.namespace": "shop"
            })
        );
        assert_eq!(
            db[1]["fromEndpoints"][0]["matchExpressions"],
            serde_json::json!([{"key": "k8s:io.kubernetes.pod.namespace", "operator": "Exists"}])
        );
        assert_eq!(
            docs[0]["spec"]["ingress"][0]["fromEntities"],
            serde_json::json!(["all"])
        );
        assert_eq!(
            docs[0]["spec"]["ingress"][0]["toPorts"],
            serde_json::json!([{"ports": [{"port": "0", "protocol": "TCP"}]}])
        );
    }

    #[test]
    fn ranges_and_many_ports_render_for_both_flavors() {
        let many: Vec<String> = (1000..1045).map(|p| format!("\"{p}/udp\"")).collect();
        let b = baseline(&format!(
            "{}{}",
            edge(&w("api"), &w("db"), "\"8000-8100/tcp\""),
            edge(&w("frontend"), &w("db"), &many.join(", ")),
        ));
        let np = plan(&b, &shop(), &options(Flavor::NetworkPolicy, false));
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&to_yaml(&np).expect("yaml")).expect("stream");
        assert_eq!(
            docs[0]["spec"]["ingress"][0]["ports"],
            serde_json::json!([{"protocol": "TCP", "port": 8000, "endPort": 8100}])
        );
        let cilium = plan(&b, &shop(), &options(Flavor::CiliumNetworkPolicy, false));
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&to_yaml(&cilium).expect("yaml")).expect("stream");
        let rules = docs[0]["spec"]["ingress"].as_array().expect("rules");
        assert_eq!(
            rules[0]["toPorts"],
            serde_json::json!([{"ports": [{"port": "8000", "endPort": 8100, "protocol": "TCP"}]}])
        );
        let port_rules = rules[1]["toPorts"].as_array().expect("port rules");
        assert_eq!(port_rules.len(), 2, "at most 40 ports a port rule");
        assert_eq!(port_rules[0]["ports"].as_array().map(Vec::len), Some(40));
        assert_eq!(port_rules[1]["ports"].as_array().map(Vec::len), Some(5));
    }

    fn identity(ns: &str, name: &str, facts: &ClusterFacts) -> Identity {
        let known = facts
            .workloads
            .iter()
            .find(|w| w.namespace == ns && w.name == name);
        Identity::Workload(Workload {
            cluster: "c".into(),
            namespace: ns.into(),
            kind: WorkloadKind::Deployment,
            name: name.into(),
            service_account: name.into(),
            labels: known.map(WorkloadFacts::common_labels).unwrap_or_default(),
        })
    }

    fn flow(from: Identity, to: Identity, port: u16, transport: Transport) -> ObservedFlow {
        ObservedFlow {
            from,
            to,
            port,
            transport,
            service: None,
            origin: "test".into(),
            count: 1,
            alerted: false,
        }
    }

    /// Every flow among a universe of ends that some exported rule admits
    /// is one the baseline allows (through a Service's port, for pod ports
    /// that are its targetPort).
    #[test]
    fn no_rule_admits_what_the_baseline_refuses() {
        let mut facts = shop();
        facts.workloads.push(workload(
            "ops",
            "backup",
            &[("app", "backup"), ("team", "ops")],
        ));
        facts
            .workloads
            .push(workload("ops", "probe", &[("app", "probe")]));
        let b = baseline(&format!(
            "{}{}{}{}{}{}",
            edge(&w("frontend"), &w("api"), "\"80/tcp\""),
            edge(&w("api"), &w("db"), "\"5432/tcp\", \"6000-6002/tcp\""),
            edge(
                "{namespace: ops, labels: {matchLabels: {team: ops}}}",
                &w("db"),
                "\"5432/tcp\""
            ),
            edge("{cidr: 192.0.2.0/24}", &w("api"), "\"8080/tcp\""),
            edge("{node: \"*\"}", &w("api"), "\"8080/tcp\""),
            edge(&w("api"), "{cidr: 198.51.100.7}", "\"443/tcp\", \"53/udp\""),
        ));
        let mut ends: Vec<Identity> = ["frontend", "api", "db"]
            .iter()
            .map(|n| identity("shop", n, &facts))
            .collect();
        ends.extend(
            ["backup", "probe"]
                .iter()
                .map(|n| identity("ops", n, &facts)),
        );
        ends.push(Identity::Node { name: "n1".into() });
        for address in ["192.0.2.9", "198.51.100.7", "203.0.113.1"] {
            ends.push(Identity::External {
                address: address.parse().expect("ip"),
            });
        }
        ends.push(Identity::SystemdUnit {
            unit: "sshd.service".into(),
        });
        let ports = [22, 53, 80, 443, 5432, 6001, 6003, 8080];
        let now = SystemTime::now();
        for flavor in [Flavor::NetworkPolicy, Flavor::CiliumNetworkPolicy] {
            let export = plan(&b, &facts, &options(flavor, true));
            let mut admitted = 0;
            for policy in &export.policies {
                for rule in &policy.rules {
                    for subject in &ends {
                        if policy.subject.contains(subject, &facts) != Some(true) {
                            continue;
                        }
                        for peer in &ends {
                            if rule.peer.contains(peer, &facts) != Some(true) {
                                continue;
                            }
                            for transport in [Transport::Tcp, Transport::Udp] {
                                for port in ports {
                                    let server = match policy.direction {
                                        Direction::Ingress => subject,
                                        Direction::Egress => peer,
                                    };
                                    let named = facts.workload(&server.canonical());
                                    if !port_admitted(&rule.ports, port, transport, named) {
                                        continue;
                                    }
                                    admitted += 1;
                                    let (from, to) = match policy.direction {
                                        Direction::Ingress => (peer, subject),
                                        Direction::Egress => (subject, peer),
                                    };
                                    let dialled: Vec<u16> = std::iter::once(port)
                                        .chain(
                                            facts
                                                .services
                                                .iter()
                                                .flatten()
                                                .filter(|s| named.is_some_and(|w| s.selects(w)))
                                                .flat_map(|s| s.ports.iter())
                                                .filter(|p| p.target == TargetPort::Number(port))
                                                .map(|p| p.port),
                                        )
                                        .collect();
                                    let allowed = dialled.iter().any(|p| {
                                        let edge =
                                            flow(from.clone(), to.clone(), *p, transport).edge();
                                        matches!(
                                            judge_linear(&b, &edge, now),
                                            RuleMatch::Allowed(_)
                                        )
                                    });
                                    assert!(
                                        allowed,
                                        "{flavor:?} {} admits {from} -> {to} {port}/{transport}, which the baseline refuses",
                                        policy.title(flavor)
                                    );
                                }
                            }
                        }
                    }
                }
            }
            assert!(
                admitted > 5,
                "the universe exercises the rules ({admitted})"
            );
        }
    }

    #[test]
    fn check_names_the_blocking_policy_and_the_rule_set_to_change() {
        let facts = shop();
        let b = baseline(&format!(
            "{}{}{}",
            edge(&w("frontend"), &w("api"), "\"80/tcp\""),
            edge(&w("api"), &w("db"), "\"5432/tcp\""),
            edge("{systemd: backup.service}", &w("db"), "\"5432/tcp\""),
        ));
        let export = plan(&b, &facts, &options(Flavor::NetworkPolicy, false));
        let (frontend, api, db) = (
            identity("shop", "frontend", &facts),
            identity("shop", "api", &facts),
            identity("shop", "db", &facts),
        );
        let mut via = flow(frontend.clone(), api.clone(), 80, Transport::Tcp);
        via.service = Some(ServiceRef {
            namespace: "shop".into(),
            name: "api".into(),
        });
        let flows = vec![
            via,
            flow(frontend.clone(), db.clone(), 5432, Transport::Tcp),
            flow(
                Identity::SystemdUnit {
                    unit: "backup.service".into(),
                },
                db.clone(),
                5432,
                Transport::Tcp,
            ),
            flow(api.clone(), db.clone(), 5432, Transport::Tcp),
            flow(
                Identity::Unknown { what: "x".into() },
                frontend.clone(),
                1,
                Transport::Udp,
            ),
        ];
        let report = check(&export, &b, &facts, &flows, SystemTime::now());
        let verdicts: Vec<CheckVerdict> = report.results.iter().map(|r| r.verdict).collect();
        assert_eq!(
            verdicts,
            [
                CheckVerdict::Admitted,
                CheckVerdict::Blocked,
                CheckVerdict::Blocked,
                CheckVerdict::Admitted,
                CheckVerdict::Admitted,
            ]
        );
        assert_eq!(report.results[0].pod_ports, ["8080/tcp"]);
        let attack = &report.results[1];
        assert_eq!(
            attack.blocked_by,
            [
                "NetworkPolicy shop/eastwatch-deployment-db-ingress (ingress of workload:shop/deployment/db; admits workload:shop/deployment/api on 5432/tcp)"
            ]
        );
        assert!(
            attack
                .change
                .as_deref()
                .is_some_and(|c| c.starts_with("the baseline:"))
        );
        let host = &report.results[2];
        assert!(
            host.change
                .as_deref()
                .is_some_and(|c| c.contains("edges[2] was not exported")),
            "{host:?}"
        );
        assert!(
            report.results[4]
                .change
                .as_deref()
                .is_some_and(|c| c.contains("no policy selects either end")),
            "{:?}",
            report.results[4]
        );
        let text = check_text(&report);
        assert!(
            text.ends_with("5 flows: 3 admitted, 2 blocked, 0 undetermined\n"),
            "{text}"
        );
    }

    #[test]
    fn unknown_labels_leave_the_check_undetermined() {
        let facts = shop();
        let export = plan(&demo(), &facts, &options(Flavor::NetworkPolicy, false));
        let stranger = Identity::Workload(Workload {
            cluster: "c".into(),
            namespace: "shop".into(),
            kind: WorkloadKind::Deployment,
            name: "stranger".into(),
            service_account: "s".into(),
            labels: BTreeMap::new(),
        });
        let report = check(
            &export,
            &demo(),
            &facts,
            &[flow(
                stranger,
                identity("shop", "db", &facts),
                5432,
                Transport::Tcp,
            )],
            SystemTime::now(),
        );
        assert_eq!(report.results[0].verdict, CheckVerdict::Undetermined);
        assert!(
            report.results[0]
                .why
                .as_deref()
                .is_some_and(|w| w.contains("stranger")),
            "{:?}",
            report.results[0]
        );
    }

    #[test]
    fn expired_edges_export_nothing() {
        let b = baseline(&format!(
            "{}      expires: 2020-01-01\n",
            edge(&w("api"), &w("db"), "\"5432/tcp\"")
        ));
        let export = plan(&b, &shop(), &options(Flavor::NetworkPolicy, false));
        assert!(export.policies.is_empty());
        assert!(export.warnings[0].to_string().contains("expired"));
    }
}
