//! What eastwatch keeps of the cluster: compact records (only the fields
//! identity needs), indexed by pod UID and by address. Workloads and node
//! names are interned, so the pods of one workload share one record.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use serde::Serialize;

use eastwatch_policy::identity::{Identity, Workload};

/// A namespaced object's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

/// The resources eastwatch watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    /// Pods on this node (field selector `spec.nodeName`).
    LocalPods,
    /// Pods of the whole cluster, for remote addresses.
    Pods,
    Services,
    #[serde(rename = "endpointslices")]
    EndpointSlices,
    Nodes,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LocalPods => "local_pods",
            Self::Pods => "pods",
            Self::Services => "services",
            Self::EndpointSlices => "endpointslices",
            Self::Nodes => "nodes",
        }
    }

    /// How an analyst reads it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::LocalPods => "pods on this node",
            Self::Pods => "pods",
            Self::Services => "Services",
            Self::EndpointSlices => "EndpointSlices",
            Self::Nodes => "nodes",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRecord {
    pub uid: Arc<str>,
    pub name: Box<str>,
    pub workload: Arc<Workload>,
    /// `status.podIPs` (empty until scheduled and started).
    pub ips: Box<[IpAddr]>,
    pub host_network: bool,
    /// Not `Succeeded` or `Failed`: a finished pod's IP may be reused.
    pub live: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecord {
    pub key: ObjectKey,
    /// ClusterIPs, external IPs and load-balancer addresses.
    pub ips: Box<[IpAddr]>,
    /// Each port: its name, number and numeric `targetPort` (a named one
    /// is found in the EndpointSlices by the port's name).
    pub ports: Box<[ServicePort]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: Option<Box<str>>,
    pub port: u16,
    pub target: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceRecord {
    pub key: ObjectKey,
    /// From the `kubernetes.io/service-name` label.
    pub service: Option<ObjectKey>,
    /// Addresses of endpoints that are not explicitly unready.
    pub addresses: Box<[IpAddr]>,
    /// Ports by the Service port's name: the backends' actual port.
    pub ports: Box<[(Option<Box<str>>, u16)]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub name: Arc<str>,
    pub ips: Box<[IpAddr]>,
}

/// One converted object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Pod(PodRecord),
    Service(ServiceRecord),
    Slice(SliceRecord),
    Node(NodeRecord),
}

/// What identifies a deleted object.
#[derive(Debug, Clone)]
pub struct DeletedKey {
    pub uid: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
}

/// How long after its last error a resource counts as failing: the
/// watcher retries at least every 30 s (its backoff's ceiling) while the
/// API server fails, so a quiet minute means it recovered.
const FAILURE_MEMORY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default)]
pub struct SyncStatus {
    /// When the last complete list was stored.
    pub listed_at: Option<SystemTime>,
    pub started: Option<SystemTime>,
    /// The current run of errors: first, last, last message.
    pub failure: Option<(SystemTime, SystemTime, String)>,
}

/// A resource's state as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// The first list has not completed.
    Listing,
    Synced,
    /// Listed once, but the API server fails now: the data may be stale.
    Stale,
    /// Never listed, and the API server fails.
    Unreachable,
}

impl SyncStatus {
    fn failing(&self, now: SystemTime) -> Option<&(SystemTime, SystemTime, String)> {
        self.failure
            .as_ref()
            .filter(|(_, last, _)| now.duration_since(*last).unwrap_or_default() < FAILURE_MEMORY)
    }

    pub fn state(&self, now: SystemTime) -> SyncState {
        match (self.listed_at.is_some(), self.failing(now).is_some()) {
            (true, false) => SyncState::Synced,
            (true, true) => SyncState::Stale,
            (false, false) => SyncState::Listing,
            (false, true) => SyncState::Unreachable,
        }
    }

    /// Why data from this resource may be missing, if it may.
    pub fn caveat(&self, kind: ResourceKind, now: SystemTime) -> Option<String> {
        let since = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        match (self.listed_at, self.failing(now)) {
            (Some(_), None) => None,
            (Some(listed), Some((first, _, error))) => Some(format!(
                "Kubernetes API unreachable since {} ({error}); {} as listed at {}",
                since(*first),
                kind.describe(),
                since(listed)
            )),
            (None, Some((first, _, error))) => Some(format!(
                "Kubernetes API unreachable since {} ({error}); {} never listed",
                since(*first),
                kind.describe()
            )),
            (None, None) => Some(format!(
                "{} not listed yet (listing since {})",
                kind.describe(),
                since(self.started.unwrap_or(now))
            )),
        }
    }
}

/// An address a pod held and has left, from and until when (as the
/// agent learned it).
#[derive(Debug, Clone)]
struct Binding {
    pod: Arc<PodRecord>,
    since: SystemTime,
    until: SystemTime,
}

/// How long departed pods and the addresses they held stay known by
/// default: as long as removed cgroups keep their names.
pub const DEPARTED_GRACE: Duration = Duration::from_secs(600);

/// The cluster as far as eastwatch knows it.
///
/// Flows are resolved as of their own time, which may be before a change
/// the agent already applied: deleted pods stay known by UID for
/// `grace`, and each address keeps the pods that held it (time-indexed),
/// so a pod's last connections, counted after its DELETED, still name it,
/// and an address a new pod reuses does not lend it the old pod's flows.
#[derive(Debug, Default)]
pub struct ClusterState {
    local_pods: HashMap<Arc<str>, Arc<PodRecord>>,
    pods: HashMap<Arc<str>, Arc<PodRecord>>,
    /// Who holds an address now, and since when.
    pod_by_ip: HashMap<IpAddr, (Arc<str>, SystemTime)>,
    /// Who held an address before, oldest first.
    ended: HashMap<IpAddr, Vec<Binding>>,
    /// Deleted pods by UID, and when they went.
    departed: HashMap<Arc<str>, (Arc<PodRecord>, SystemTime)>,
    grace: Duration,
    services: HashMap<ObjectKey, ServiceRecord>,
    service_by_ip: HashMap<IpAddr, ObjectKey>,
    slices: HashMap<ObjectKey, SliceRecord>,
    slices_by_service: HashMap<ObjectKey, HashSet<ObjectKey>>,
    nodes: HashMap<Arc<str>, NodeRecord>,
    node_by_ip: HashMap<IpAddr, Arc<str>>,
    workloads: HashSet<Arc<Workload>>,
    strings: HashSet<Arc<str>>,
    sync: BTreeMap<ResourceKind, SyncStatus>,
    changes_since_sweep: usize,
}

/// What a remote address is, by the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteMatch {
    Pod(Arc<PodRecord>),
    /// Backend identities sorted: workloads by canonical id, then nodes,
    /// then other addresses.
    Service {
        service: ObjectKey,
        backends: Vec<(Identity, Option<Arc<PodRecord>>)>,
        /// The backends' port for the dialled port, when known.
        target_port: Option<u16>,
    },
    Node(Arc<str>),
}

impl ClusterState {
    /// An empty state keeping departed pods for `grace`.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            ..Self::default()
        }
    }

    pub fn started(&mut self, kind: ResourceKind, now: SystemTime) {
        self.sync.entry(kind).or_default().started = Some(now);
    }

    pub fn failed(&mut self, kind: ResourceKind, error: String, now: SystemTime) {
        let status = self.sync.entry(kind).or_default();
        let first = match &status.failure {
            Some((first, last, _))
                if now.duration_since(*last).unwrap_or_default() < FAILURE_MEMORY =>
            {
                *first
            }
            _ => now,
        };
        status.failure = Some((first, now, error));
    }

    fn succeeded(&mut self, kind: ResourceKind) {
        self.sync.entry(kind).or_default().failure = None;
    }

    pub fn sync_status(&self, kind: ResourceKind) -> Option<&SyncStatus> {
        self.sync.get(&kind)
    }

    pub fn count(&self, kind: ResourceKind) -> usize {
        match kind {
            ResourceKind::LocalPods => self.local_pods.len(),
            ResourceKind::Pods => self.pods.len(),
            ResourceKind::Services => self.services.len(),
            ResourceKind::EndpointSlices => self.slices.len(),
            ResourceKind::Nodes => self.nodes.len(),
        }
    }

    fn intern_workload(&mut self, workload: &Arc<Workload>) -> Arc<Workload> {
        if let Some(known) = self.workloads.get(&**workload) {
            return known.clone();
        }
        self.workloads.insert(workload.clone());
        workload.clone()
    }

    fn intern(&mut self, text: &Arc<str>) -> Arc<str> {
        if let Some(known) = self.strings.get(&**text) {
            return known.clone();
        }
        self.strings.insert(text.clone());
        text.clone()
    }

    fn intern_key(&mut self, key: &ObjectKey) -> ObjectKey {
        ObjectKey {
            namespace: self.intern(&key.namespace),
            name: key.name.clone(),
        }
    }

    /// Drops interned values nothing refers to any more.
    fn sweep(&mut self) {
        self.workloads.retain(|w| Arc::strong_count(w) > 1);
        self.strings.retain(|s| Arc::strong_count(s) > 1);
        self.changes_since_sweep = 0;
    }

    fn changed(&mut self, now: SystemTime) {
        self.changes_since_sweep += 1;
        if self.changes_since_sweep > 1024 {
            self.forget_departed(now);
            self.sweep();
        }
    }

    /// Still within the grace period after `until`.
    fn remembered(&self, until: SystemTime, now: SystemTime) -> bool {
        until
            .checked_add(self.grace)
            .is_none_or(|expires| now < expires)
    }

    /// Drops departed pods and ended bindings past the grace period.
    fn forget_departed(&mut self, now: SystemTime) {
        let grace = self.grace;
        let keep = |until: SystemTime| until.checked_add(grace).is_none_or(|e| now < e);
        self.departed.retain(|_, (_, at)| keep(*at));
        self.ended.retain(|_, bindings| {
            bindings.retain(|b| keep(b.until));
            !bindings.is_empty()
        });
    }

    /// An added or modified object, applied at `now`.
    pub fn apply(&mut self, kind: ResourceKind, record: Record, now: SystemTime) {
        self.succeeded(kind);
        match record {
            Record::Pod(pod) => {
                let pod = self.intern_pod(pod);
                self.departed.remove(&pod.uid);
                if kind == ResourceKind::LocalPods {
                    self.local_pods.insert(pod.uid.clone(), pod);
                } else {
                    self.rebind(&pod, now);
                    self.pods.insert(pod.uid.clone(), pod);
                }
            }
            Record::Service(service) => {
                let service = ServiceRecord {
                    key: self.intern_key(&service.key),
                    ..service
                };
                self.remove_service(&service.key);
                for ip in &service.ips {
                    self.service_by_ip.insert(*ip, service.key.clone());
                }
                self.services.insert(service.key.clone(), service);
            }
            Record::Slice(slice) => {
                let slice = SliceRecord {
                    key: self.intern_key(&slice.key),
                    service: slice.service.as_ref().map(|s| self.intern_key(s)),
                    ..slice
                };
                self.remove_slice(&slice.key);
                if let Some(service) = &slice.service {
                    self.slices_by_service
                        .entry(service.clone())
                        .or_default()
                        .insert(slice.key.clone());
                }
                self.slices.insert(slice.key.clone(), slice);
            }
            Record::Node(node) => {
                let node = NodeRecord {
                    name: self.intern(&node.name),
                    ..node
                };
                self.remove_node(&node.name);
                for ip in &node.ips {
                    self.node_by_ip.insert(*ip, node.name.clone());
                }
                self.nodes.insert(node.name.clone(), node);
            }
        }
        self.changed(now);
    }

    /// A deleted object, deleted at `now`: a pod stays known by UID, and
    /// as its addresses' holder until now, for the grace period.
    pub fn delete(&mut self, kind: ResourceKind, key: &DeletedKey, now: SystemTime) {
        self.succeeded(kind);
        let object_key = || ObjectKey {
            namespace: key.namespace.as_deref().unwrap_or_default().into(),
            name: key.name.as_str().into(),
        };
        match kind {
            ResourceKind::LocalPods => {
                if let Some(pod) = key
                    .uid
                    .as_ref()
                    .and_then(|u| self.local_pods.remove(u.as_str()))
                {
                    self.depart(pod, now);
                }
            }
            ResourceKind::Pods => {
                if let Some(uid) = &key.uid {
                    self.unbind_all(uid, now);
                    if let Some(pod) = self.pods.remove(uid.as_str()) {
                        self.depart(pod, now);
                    }
                }
            }
            ResourceKind::Services => self.remove_service(&object_key()),
            ResourceKind::EndpointSlices => self.remove_slice(&object_key()),
            ResourceKind::Nodes => self.remove_node(key.name.as_str()),
        }
        self.changed(now);
    }

    /// A complete list: replaces everything of `kind`. Pods missing from
    /// it departed (their DELETED was missed).
    pub fn replace(&mut self, kind: ResourceKind, records: Vec<Record>, now: SystemTime) {
        let mut old_pods = HashMap::new();
        let mut old_bindings = HashMap::new();
        match kind {
            ResourceKind::LocalPods => old_pods = std::mem::take(&mut self.local_pods),
            ResourceKind::Pods => {
                old_pods = std::mem::take(&mut self.pods);
                old_bindings = std::mem::take(&mut self.pod_by_ip);
            }
            ResourceKind::Services => {
                self.services.clear();
                self.service_by_ip.clear();
            }
            ResourceKind::EndpointSlices => {
                self.slices.clear();
                self.slices_by_service.clear();
            }
            ResourceKind::Nodes => {
                self.nodes.clear();
                self.node_by_ip.clear();
            }
        }
        for record in records {
            self.apply(kind, record, now);
        }
        // Addresses still held by the same pod keep their start; the others
        // ended now.
        for (ip, (uid, since)) in old_bindings {
            match self.pod_by_ip.get_mut(&ip) {
                Some((holder, start)) if *holder == uid => *start = since,
                _ => {
                    if let Some(pod) = old_pods.get(&uid) {
                        self.ended.entry(ip).or_default().push(Binding {
                            pod: pod.clone(),
                            since,
                            until: now,
                        });
                    }
                }
            }
        }
        let current = match kind {
            ResourceKind::LocalPods => &self.local_pods,
            _ => &self.pods,
        };
        let gone: Vec<Arc<PodRecord>> = old_pods
            .into_values()
            .filter(|pod| !current.contains_key(&pod.uid))
            .collect();
        for pod in gone {
            self.depart(pod, now);
        }
        self.forget_departed(now);
        self.sweep();
        let status = self.sync.entry(kind).or_default();
        status.listed_at = Some(now);
        status.failure = None;
    }

    fn intern_pod(&mut self, pod: PodRecord) -> Arc<PodRecord> {
        let workload = self.intern_workload(&pod.workload);
        Arc::new(PodRecord { workload, ..pod })
    }

    fn depart(&mut self, pod: Arc<PodRecord>, now: SystemTime) {
        self.departed.entry(pod.uid.clone()).or_insert((pod, now));
    }

    /// The addresses `pod` holds from now on: those it left end now, those
    /// it takes from another pod end that pod's hold. Finished pods and
    /// hostNetwork pods (whose address is the node's) own no address.
    fn rebind(&mut self, pod: &Arc<PodRecord>, now: SystemTime) {
        let holds: &[IpAddr] = if pod.live && !pod.host_network {
            &pod.ips
        } else {
            &[]
        };
        let left: Vec<IpAddr> = self
            .pods
            .get(&pod.uid)
            .map(|old| {
                old.ips
                    .iter()
                    .filter(|ip| !holds.contains(ip))
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        for ip in left {
            self.unbind(ip, &pod.uid, now);
        }
        for ip in holds {
            match self.pod_by_ip.get(ip) {
                Some((holder, _)) if *holder == pod.uid => {}
                _ => {
                    self.end_binding(*ip, now);
                    self.pod_by_ip.insert(*ip, (pod.uid.clone(), now));
                }
            }
        }
    }

    /// Ends `uid`'s hold of every address it has.
    fn unbind_all(&mut self, uid: &str, now: SystemTime) {
        let ips: Vec<IpAddr> = self
            .pods
            .get(uid)
            .map(|pod| pod.ips.to_vec())
            .unwrap_or_default();
        for ip in ips {
            self.unbind(ip, uid, now);
        }
    }

    /// Ends `uid`'s hold of `ip`, if it holds it.
    fn unbind(&mut self, ip: IpAddr, uid: &str, now: SystemTime) {
        if self
            .pod_by_ip
            .get(&ip)
            .is_some_and(|(holder, _)| &**holder == uid)
        {
            self.end_binding(ip, now);
        }
    }

    /// Ends the current hold of `ip`, keeping it as history.
    fn end_binding(&mut self, ip: IpAddr, now: SystemTime) {
        if let Some((uid, since)) = self.pod_by_ip.remove(&ip)
            && let Some(pod) = self.pods.get(&uid)
        {
            self.ended.entry(ip).or_default().push(Binding {
                pod: pod.clone(),
                since,
                until: now,
            });
        }
    }

    fn remove_service(&mut self, key: &ObjectKey) {
        if let Some(old) = self.services.remove(key) {
            for ip in &old.ips {
                if self.service_by_ip.get(ip) == Some(key) {
                    self.service_by_ip.remove(ip);
                }
            }
        }
    }

    fn remove_slice(&mut self, key: &ObjectKey) {
        if let Some(old) = self.slices.remove(key)
            && let Some(service) = &old.service
            && let Some(set) = self.slices_by_service.get_mut(service)
        {
            set.remove(key);
            if set.is_empty() {
                self.slices_by_service.remove(service);
            }
        }
    }

    fn remove_node(&mut self, name: &str) {
        if let Some(old) = self.nodes.remove(name) {
            for ip in &old.ips {
                if self.node_by_ip.get(ip).is_some_and(|n| &**n == name) {
                    self.node_by_ip.remove(ip);
                }
            }
        }
    }

    /// The pod with this UID: this node's watch first, then the cluster's,
    /// then one deleted less than the grace period before `now` (UIDs are
    /// never reused).
    pub fn pod_by_uid(&self, uid: &str, now: SystemTime) -> Option<&Arc<PodRecord>> {
        self.local_pods
            .get(uid)
            .or_else(|| self.pods.get(uid))
            .or_else(|| {
                self.departed
                    .get(uid)
                    .filter(|(_, at)| self.remembered(*at, now))
                    .map(|(pod, _)| pod)
            })
    }

    /// The pod holding `ip` now.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&Arc<PodRecord>> {
        self.pod_by_ip
            .get(&ip)
            .and_then(|(uid, _)| self.pods.get(uid))
    }

    /// The pod that held `ip` at `at`, looked up at `now`: one that held it
    /// then and has left it since; else the pod holding it now; else,
    /// nobody holding it, the last pod that did if it left less than the
    /// grace period ago (a peer still calling a pod that just went).
    pub fn pod_at(&self, ip: IpAddr, at: SystemTime, now: SystemTime) -> Option<&Arc<PodRecord>> {
        let ended = self.ended.get(&ip).map(Vec::as_slice).unwrap_or_default();
        let remembered = |b: &&Binding| self.remembered(b.until, now);
        if let Some(then) = ended
            .iter()
            .rev()
            .filter(remembered)
            .find(|b| b.since <= at && at < b.until)
        {
            return Some(&then.pod);
        }
        self.pod_by_ip(ip)
            .or_else(|| ended.iter().rev().find(remembered).map(|b| &b.pod))
    }

    /// A Service's ClusterIP (dialled on `port`), a pod's or a node's
    /// address, as it was at `at` (see [`ClusterState::pod_at`]), looked
    /// up at `now`.
    pub fn remote(
        &self,
        ip: IpAddr,
        port: u16,
        at: SystemTime,
        now: SystemTime,
    ) -> Option<RemoteMatch> {
        if let Some(key) = self.service_by_ip.get(&ip) {
            return Some(RemoteMatch::Service {
                service: key.clone(),
                backends: self.backends(key),
                target_port: self.target_port(key, port),
            });
        }
        if let Some(pod) = self.pod_at(ip, at, now) {
            return Some(RemoteMatch::Pod(pod.clone()));
        }
        self.node_by_ip
            .get(&ip)
            .map(|name| RemoteMatch::Node(name.clone()))
    }

    /// The backends' port that `port` of Service `key` leads to: the
    /// EndpointSlices' port of the same name, else a numeric `targetPort`.
    fn target_port(&self, key: &ObjectKey, port: u16) -> Option<u16> {
        let service = self.services.get(key)?;
        let declared = service.ports.iter().find(|p| p.port == port)?;
        let sliced = self
            .slices_by_service
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|slice| self.slices.get(slice))
            .flat_map(|slice| slice.ports.iter())
            .find(|(name, _)| *name == declared.name)
            .map(|(_, port)| *port);
        sliced.or(declared.target)
    }

    /// A Service's backends, one per distinct identity.
    fn backends(&self, service: &ObjectKey) -> Vec<(Identity, Option<Arc<PodRecord>>)> {
        let mut seen: HashSet<*const Workload> = HashSet::new();
        let mut backends: Vec<(u8, String, Identity, Option<Arc<PodRecord>>)> = Vec::new();
        let addresses = self
            .slices_by_service
            .get(service)
            .into_iter()
            .flatten()
            .filter_map(|key| self.slices.get(key))
            .flat_map(|slice| slice.addresses.iter().copied());
        let mut other: HashSet<IpAddr> = HashSet::new();
        for ip in addresses {
            if let Some(pod) = self.pod_by_ip(ip) {
                if seen.insert(Arc::as_ptr(&pod.workload)) {
                    let identity = Identity::Workload((*pod.workload).clone());
                    backends.push((0, identity.canonical(), identity, Some(pod.clone())));
                }
            } else if other.insert(ip) {
                let (rank, identity) = match self.node_by_ip.get(&ip) {
                    Some(name) => (
                        1,
                        Identity::Node {
                            name: name.to_string(),
                        },
                    ),
                    None => (2, Identity::External { address: ip }),
                };
                backends.push((rank, identity.canonical(), identity, None));
            }
        }
        backends.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        backends.dedup_by(|a, b| a.1 == b.1);
        backends
            .into_iter()
            .map(|(_, _, identity, pod)| (identity, pod))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eastwatch_policy::identity::WorkloadKind;

    fn workload(name: &str) -> Arc<Workload> {
        Arc::new(Workload {
            cluster: "c".into(),
            namespace: "shop".into(),
            kind: WorkloadKind::Deployment,
            name: name.into(),
            service_account: name.into(),
            labels: BTreeMap::new(),
        })
    }

    fn pod(uid: &str, workload: &str, ip: &str, live: bool) -> Record {
        Record::Pod(PodRecord {
            uid: uid.into(),
            name: format!("{workload}-{uid}").into(),
            workload: self::workload(workload),
            ips: Box::new([ip.parse().expect("ip")]),
            host_network: false,
            live,
        })
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            namespace: "shop".into(),
            name: name.into(),
        }
    }

    fn slice(name: &str, service: &str, ips: &[&str]) -> Record {
        Record::Slice(SliceRecord {
            key: key(name),
            service: Some(key(service)),
            addresses: ips.iter().map(|ip| ip.parse().expect("ip")).collect(),
            ports: Box::new([(Some("http".into()), 8080)]),
        })
    }

    #[test]
    fn pods_share_their_workload_and_own_their_addresses() {
        let mut state = ClusterState::default();
        let now = SystemTime::now();
        state.replace(
            ResourceKind::Pods,
            vec![
                pod("u1", "api", "10.0.0.1", true),
                pod("u2", "api", "10.0.0.2", true),
                pod("u3", "old", "10.0.0.3", false),
            ],
            now,
        );
        let a = state
            .pod_by_ip("10.0.0.1".parse().expect("ip"))
            .expect("u1");
        let b = state
            .pod_by_ip("10.0.0.2".parse().expect("ip"))
            .expect("u2");
        assert!(Arc::ptr_eq(&a.workload, &b.workload), "interned");
        assert_eq!(
            state.pod_by_ip("10.0.0.3".parse().expect("ip")),
            None,
            "finished pods own no IP"
        );
        // The IP moves to a new pod; deleting the old one leaves it alone.
        state.apply(ResourceKind::Pods, pod("u4", "web", "10.0.0.1", true), now);
        state.delete(
            ResourceKind::Pods,
            &DeletedKey {
                uid: Some("u1".into()),
                namespace: Some("shop".into()),
                name: "api-u1".into(),
            },
            now,
        );
        let moved = state
            .pod_by_ip("10.0.0.1".parse().expect("ip"))
            .expect("u4");
        assert_eq!(&*moved.uid, "u4");
        assert_eq!(
            state.sync_status(ResourceKind::Pods).map(|s| s.state(now)),
            Some(SyncState::Synced)
        );
    }

    #[test]
    fn services_pick_their_first_backend_and_keep_the_rest() {
        let mut state = ClusterState::default();
        let now = SystemTime::now();
        state.replace(
            ResourceKind::Pods,
            vec![
                pod("u1", "web", "10.0.0.1", true),
                pod("u2", "api", "10.0.0.2", true),
                pod("u3", "api", "10.0.0.3", true),
            ],
            now,
        );
        state.apply(
            ResourceKind::Services,
            Record::Service(ServiceRecord {
                key: key("api"),
                ips: Box::new(["10.96.0.1".parse().expect("ip")]),
                ports: Box::new([ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target: None,
                }]),
            }),
            now,
        );
        state.apply(
            ResourceKind::EndpointSlices,
            slice("api-1", "api", &["10.0.0.3", "10.0.0.1"]),
            now,
        );
        state.apply(
            ResourceKind::EndpointSlices,
            slice("api-2", "api", &["10.0.0.2", "192.0.2.9"]),
            now,
        );
        let Some(RemoteMatch::Service {
            service,
            backends,
            target_port,
        }) = state.remote("10.96.0.1".parse().expect("ip"), 80, now, now)
        else {
            panic!("not a service");
        };
        assert_eq!(service, key("api"));
        assert_eq!(target_port, Some(8080), "by the port's name");
        let ids: Vec<String> = backends.iter().map(|(i, _)| i.canonical()).collect();
        assert_eq!(
            ids,
            [
                "workload:shop/deployment/api",
                "workload:shop/deployment/web",
                "external:192.0.2.9"
            ]
        );
        state.delete(
            ResourceKind::EndpointSlices,
            &DeletedKey {
                uid: None,
                namespace: Some("shop".into()),
                name: "api-2".into(),
            },
            now,
        );
        state.delete(
            ResourceKind::EndpointSlices,
            &DeletedKey {
                uid: None,
                namespace: Some("shop".into()),
                name: "api-1".into(),
            },
            now,
        );
        let Some(RemoteMatch::Service { backends, .. }) =
            state.remote("10.96.0.1".parse().expect("ip"), 80, now, now)
        else {
            panic!("not a service");
        };
        assert!(backends.is_empty());
    }

    fn gone(uid: &str, name: &str) -> DeletedKey {
        DeletedKey {
            uid: Some(uid.into()),
            namespace: Some("shop".into()),
            name: name.into(),
        }
    }

    fn name_at(state: &ClusterState, ip: &str, at: SystemTime, now: SystemTime) -> Option<String> {
        state
            .pod_at(ip.parse().expect("ip"), at, now)
            .map(|p| p.workload.name.clone())
    }

    #[test]
    fn departed_pods_stay_known_for_the_grace_period() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut state = ClusterState::new(Duration::from_secs(600));
        state.replace(
            ResourceKind::Pods,
            vec![pod("u1", "api", "10.0.0.1", true)],
            t0,
        );
        state.delete(ResourceKind::Pods, &gone("u1", "api-u1"), at(10));
        // Its last flows, counted after DELETED, still name it.
        assert!(state.pod_by_uid("u1", at(11)).is_some());
        assert_eq!(
            name_at(&state, "10.0.0.1", at(9), at(11)).as_deref(),
            Some("api")
        );
        // A peer still calling the address it left.
        assert_eq!(
            name_at(&state, "10.0.0.1", at(12), at(12)).as_deref(),
            Some("api")
        );
        // Forgotten after the grace period.
        assert!(state.pod_by_uid("u1", at(611)).is_none());
        assert_eq!(name_at(&state, "10.0.0.1", at(9), at(611)), None);
    }

    #[test]
    fn a_reused_address_names_the_pod_that_held_it_then() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut state = ClusterState::new(Duration::from_secs(600));
        state.replace(
            ResourceKind::Pods,
            vec![pod("u1", "api", "10.0.0.1", true)],
            t0,
        );
        state.delete(ResourceKind::Pods, &gone("u1", "api-u1"), at(10));
        state.apply(
            ResourceKind::Pods,
            pod("u2", "scanner", "10.0.0.1", true),
            at(11),
        );
        // The old pod's flows keep the old pod, the new pod's get the new.
        assert_eq!(
            name_at(&state, "10.0.0.1", at(9), at(12)).as_deref(),
            Some("api")
        );
        assert_eq!(
            name_at(&state, "10.0.0.1", at(12), at(12)).as_deref(),
            Some("scanner")
        );
        // A pod finishing (not yet deleted) leaves its address too; a
        // re-list keeps a pod's hold and start.
        state.apply(
            ResourceKind::Pods,
            pod("u2", "scanner", "10.0.0.1", false),
            at(20),
        );
        assert_eq!(
            name_at(&state, "10.0.0.1", at(15), at(21)).as_deref(),
            Some("scanner")
        );
        state.replace(
            ResourceKind::Pods,
            vec![
                pod("u3", "web", "10.0.0.1", true),
                pod("u4", "db", "10.0.0.4", true),
            ],
            at(30),
        );
        state.replace(
            ResourceKind::Pods,
            vec![pod("u3", "web", "10.0.0.1", true)],
            at(40),
        );
        assert_eq!(
            name_at(&state, "10.0.0.1", at(35), at(41)).as_deref(),
            Some("web")
        );
        assert_eq!(
            name_at(&state, "10.0.0.4", at(35), at(41)).as_deref(),
            Some("db")
        );
        assert!(state.pod_by_uid("u4", at(41)).is_some(), "missed DELETED");
        assert_eq!(
            name_at(&state, "10.0.0.1", at(25), at(41)).as_deref(),
            Some("web")
        );
    }

    #[test]
    fn failures_make_listed_data_stale_and_then_heal() {
        let mut status = SyncStatus::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        status.started = Some(t0);
        assert_eq!(status.state(t0), SyncState::Listing);
        status.failure = Some((t0, t0, "connection refused".into()));
        assert_eq!(status.state(t0), SyncState::Unreachable);
        let caveat = status.caveat(ResourceKind::Pods, t0).expect("caveat");
        assert!(
            caveat.contains("unreachable since") && caveat.contains("connection refused"),
            "{caveat}"
        );
        status.listed_at = Some(t0);
        assert_eq!(status.state(t0), SyncState::Stale);
        assert_eq!(status.state(t0 + FAILURE_MEMORY), SyncState::Synced);
    }
}
