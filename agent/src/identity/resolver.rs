//! The resolver: both ends of a flow from the inventory, Kubernetes and the
//! host, each a quick lookup in state the sources keep current in the
//! background. An end that cannot be named says why in `unresolved`.
//!
//! Local end (the socket's owner on this node), first match wins:
//! 1. the inventory, by cgroup (or an ancestor) or by pid;
//! 2. a pod cgroup → the pod by UID → its workload;
//! 3. a container outside Kubernetes, a systemd unit, else the cgroup path.
//!
//! Remote end (the peer's address):
//! 1. loopback: the local end itself when the flow is in a pod's own
//!    network namespace, else this node;
//! 2. the inventory's workloads, Services and nodes;
//! 3. a Service address (ClusterIP, external IP, load balancer) → the
//!    Service, and as identity its backend workload: the first by canonical
//!    id, the others in `other_backends`;
//! 4. a pod IP → its workload (hostNetwork pods own no address: they are
//!    their node);
//! 5. a node address → the node;
//! 6. anything else is `external`.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use serde::Serialize;
use tracing::info;

use eastwatch_policy::{
    flow::{CgroupUnknown, Flow},
    identity::{Identity, PodRef, ResolvedEnd, ResolvedFlow, ServiceRef, Workload},
};

use super::{
    cgroup_path::{self, CgroupOwner},
    inventory::{AddressMatch, Inventory},
    kube::{
        KubeOptions, KubeSource,
        config::{self, Discovery},
        store::{ClusterState, PodRecord, RemoteMatch, ResourceKind, SyncState},
    },
    options::IdentityArgs,
    site::Site,
};

enum Kube {
    Off { reason: String },
    On { source: String, watches: KubeSource },
}

struct Inner {
    trust_domain: String,
    cluster: String,
    /// Host, node and cluster as exported records name them.
    site: Site,
    /// This node's name: `--node-name`/`NODE_NAME`, else the host name.
    node: String,
    /// The agent's own network namespace (the host's): loopback there is
    /// the node; anywhere else it is the pod itself.
    host_netns: Option<u64>,
    inventory: Option<Inventory>,
    kube: Kube,
}

/// Resolves flows from the inventory, Kubernetes and the host.
#[derive(Clone)]
pub struct IdentityResolver {
    inner: Arc<Inner>,
}

impl IdentityResolver {
    /// Finds the sources `args` allow and starts the Kubernetes watches (on
    /// the current tokio runtime). A broken inventory or `--kubeconfig` is
    /// an error; an unreachable API server is not (lookups say so).
    pub async fn start(args: &IdentityArgs) -> anyhow::Result<Self> {
        let discovery = config::discover(args.no_kubernetes, args.kubeconfig.as_deref()).await?;
        let named = args.cluster_name.clone().or_else(|| match &discovery {
            Discovery::Found { cluster_name, .. } => cluster_name.clone(),
            Discovery::Off { .. } => None,
        });
        // The site names the cluster only when it was named, never `default`.
        let site = Site::new(args.node_name.as_deref(), named.as_deref());
        let cluster = named.unwrap_or_else(|| "default".into());
        let inventory = args
            .inventory
            .as_deref()
            .map(|path| Inventory::load(path, &cluster))
            .transpose()
            .context("inventory")?;
        let kube = match discovery {
            Discovery::Off { reason } => Kube::Off { reason },
            Discovery::Found { config, source, .. } => match client(*config) {
                Ok(client) => {
                    info!(%source, "Kubernetes identity on");
                    let watches = KubeSource::start(
                        client,
                        KubeOptions {
                            cluster: cluster.clone(),
                            node_name: args.node_name.clone(),
                            departed_grace: args.departed_grace,
                        },
                    );
                    Kube::On { source, watches }
                }
                Err(err) => Kube::Off {
                    reason: format!("{source}: cannot make a client: {err}"),
                },
            },
        };
        let node = site.node_or_host().unwrap_or_else(|| "localhost".into());
        Ok(Self {
            inner: Arc::new(Inner {
                trust_domain: args.trust_domain.clone(),
                cluster,
                site,
                node,
                host_netns: crate::sockets::netns::current_cookie().ok(),
                inventory,
                kube,
            }),
        })
    }

    /// Where the agent runs: this host, the node the options name, and the
    /// cluster the flag or the kubeconfig named (never the `default`).
    pub fn site(&self) -> &Site {
        &self.inner.site
    }

    /// Waits up to `timeout` for every watched resource's first list, so
    /// judging starts with identities; gives up at once when the API server
    /// has never answered (lookups then say why).
    pub async fn wait_synced(&self, timeout: Duration) -> IdentityStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self.status();
            let unreachable = status
                .states()
                .iter()
                .any(|(_, state)| *state == SyncState::Unreachable);
            if status.synced() || unreachable || tokio::time::Instant::now() >= deadline {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Where each source stands.
    pub fn status(&self) -> IdentityStatus {
        let inner = &self.inner;
        let now = SystemTime::now();
        let kubernetes = match &inner.kube {
            Kube::Off { reason } => KubernetesStatus::Off {
                reason: reason.clone(),
            },
            Kube::On { source, watches } => {
                let state = watches.read();
                let resources = watches
                    .kinds()
                    .iter()
                    .map(|&kind| {
                        let status = state.sync_status(kind);
                        let resource = ResourceStatus {
                            state: status.map_or(SyncState::Listing, |s| s.state(now)),
                            objects: state.count(kind),
                            detail: status.and_then(|s| s.caveat(kind, now)),
                        };
                        (kind.as_str(), resource)
                    })
                    .collect();
                KubernetesStatus::On {
                    source: source.clone(),
                    resources,
                }
            }
        };
        IdentityStatus {
            cluster: inner.cluster.clone(),
            node: inner.node.clone(),
            trust_domain: inner.trust_domain.clone(),
            inventory: inner.inventory.as_ref().map(|i| InventoryStatus {
                path: i.path().display().to_string(),
                workloads: i.workload_count(),
            }),
            kubernetes,
        }
    }
}

/// A client whose failures the watches see.
fn client(mut config: kube::Config) -> Result<kube::Client, kube::Error> {
    // The client's own retries (up to 15, minutes in all) would hide an
    // overloaded API server; the watches retry with their own backoff and
    // report each failure.
    config.default_retry = false;
    // A server that accepts but never answers must fail a list too
    // (watches end every 55 s, so a live one is never idle this long).
    config.read_timeout = Some(std::time::Duration::from_secs(75));
    kube::Client::try_from(config)
}

/// Where the identity sources stand (printed by `observe`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdentityStatus {
    pub cluster: String,
    pub node: String,
    pub trust_domain: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory: Option<InventoryStatus>,
    pub kubernetes: KubernetesStatus,
}

impl IdentityStatus {
    /// The states alone (no counts): what a change worth reporting changes.
    pub fn states(&self) -> Vec<(String, SyncState)> {
        match &self.kubernetes {
            KubernetesStatus::Off { .. } => Vec::new(),
            KubernetesStatus::On { resources, .. } => resources
                .iter()
                .map(|(k, r)| ((*k).to_owned(), r.state.clone()))
                .collect(),
        }
    }

    /// Every watched resource is synced.
    pub fn synced(&self) -> bool {
        self.states().iter().all(|(_, s)| *s == SyncState::Synced)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InventoryStatus {
    pub path: String,
    pub workloads: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum KubernetesStatus {
    Off {
        reason: String,
    },
    On {
        source: String,
        resources: BTreeMap<&'static str, ResourceStatus>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceStatus {
    pub state: SyncState,
    pub objects: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl IdentityResolver {
    /// Both ends of `flow` as they are now.
    pub fn resolve(&self, flow: Flow) -> ResolvedFlow {
        self.resolve_at(flow, SystemTime::now())
    }

    /// Both ends of `flow` as of `at`, the flow's time (its first
    /// occurrence for a new flow, its latest for a count update): lookups
    /// only (the sources update in the background).
    pub fn resolve_at(&self, flow: Flow, at: SystemTime) -> ResolvedFlow {
        let local = self.local(&flow);
        let remote = self.remote(&flow, &local, at);
        ResolvedFlow {
            flow,
            local,
            remote,
        }
    }

    fn workload_end(&self, workload: &Workload) -> ResolvedEnd {
        ResolvedEnd {
            spiffe_id: Some(workload.spiffe_id(&self.inner.trust_domain)),
            ..ResolvedEnd::plain(Identity::Workload(workload.clone()))
        }
    }

    fn pod_end(&self, pod: &PodRecord) -> ResolvedEnd {
        ResolvedEnd {
            pod: Some(PodRef {
                namespace: pod.workload.namespace.clone(),
                name: pod.name.to_string(),
                uid: pod.uid.to_string(),
            }),
            ..self.workload_end(&pod.workload)
        }
    }

    fn local(&self, flow: &Flow) -> ResolvedEnd {
        let Some(path) = flow.owner.path.as_deref() else {
            return self.local_without_path(flow);
        };
        if let Some(inventory) = &self.inner.inventory {
            let by_pid = || flow.process.as_ref().and_then(|p| inventory.by_pid(p.pid));
            if let Some(workload) = inventory.by_cgroup(path).or_else(by_pid) {
                return self.workload_end(workload);
            }
        }
        match cgroup_path::parse(path) {
            CgroupOwner::Pod { uid, container, .. } => {
                self.local_pod(&uid, container.map(|c| c.id), flow.owner.removed)
            }
            CgroupOwner::Container(container) => ResolvedEnd {
                container_id: Some(container.id.clone()),
                ..ResolvedEnd::plain(Identity::Container {
                    runtime: container.runtime,
                    id: container.id,
                    name: None,
                })
            },
            CgroupOwner::SystemdUnit(unit) => ResolvedEnd::plain(Identity::SystemdUnit { unit }),
            CgroupOwner::Other => ResolvedEnd::plain(Identity::Cgroup {
                path: path.to_owned(),
            }),
        }
    }

    /// A local end whose cgroup has no known path: the inventory's by pid,
    /// else unknown, saying why.
    fn local_without_path(&self, flow: &Flow) -> ResolvedEnd {
        let pid = flow.process.as_ref().map(|p| p.pid);
        let inventory = self.inner.inventory.as_ref();
        if let Some(workload) = inventory.and_then(|i| pid.and_then(|p| i.by_pid(p))) {
            return self.workload_end(workload);
        }
        let why = match flow.owner.unknown {
            Some(CgroupUnknown::NoOwner) => {
                "the socket predates eastwatch and no process holds it".to_owned()
            }
            Some(CgroupUnknown::Gone) | None if flow.owner.id != 0 => {
                format!(
                    "cgroup {} was gone before eastwatch could name it",
                    flow.owner.id
                )
            }
            _ => "the kernel could not tell the socket's cgroup".to_owned(),
        };
        ResolvedEnd {
            unresolved: Some(why),
            ..ResolvedEnd::plain(Identity::Unknown {
                what: format!("cgroup-id/{}", flow.owner.id),
            })
        }
    }

    /// A pod's cgroup on this node: the pod's workload, or unknown with
    /// why (the cgroup `removed`: the pod was deleted).
    fn local_pod(&self, uid: &str, container_id: Option<String>, removed: bool) -> ResolvedEnd {
        let found = self.with_cluster(self.local_pod_kinds(), |state| {
            state
                .pod_by_uid(uid, SystemTime::now())
                .map(|p| self.pod_end(p))
        });
        let why = match found {
            Some(Ok(Some(end))) => {
                return ResolvedEnd {
                    container_id,
                    ..end
                };
            }
            Some(Err(caveat)) => format!("no pod with UID {uid}: {caveat}"),
            None => format!(
                "pod UID {uid}, but Kubernetes is off ({})",
                self.kube_off_reason().unwrap_or_default()
            ),
            Some(Ok(None)) if removed => {
                format!("no pod with UID {uid} (its cgroup is gone: the pod was deleted)")
            }
            Some(Ok(None)) => format!("no pod with UID {uid} in the cluster"),
        };
        ResolvedEnd {
            unresolved: Some(why),
            container_id,
            ..ResolvedEnd::plain(Identity::Unknown {
                what: format!("pod/{uid}"),
            })
        }
    }

    /// This node's pods when they are watched, else the cluster's.
    fn local_pod_kinds(&self) -> &'static [ResourceKind] {
        match &self.inner.kube {
            Kube::On { watches, .. } if watches.kinds().contains(&ResourceKind::LocalPods) => {
                &[ResourceKind::LocalPods]
            }
            _ => &[ResourceKind::Pods],
        }
    }

    fn kube_off_reason(&self) -> Option<&str> {
        match &self.inner.kube {
            Kube::Off { reason } => Some(reason),
            Kube::On { .. } => None,
        }
    }

    /// Runs `lookup` on the cluster state: None when Kubernetes is off;
    /// Err(caveat) when it found nothing and the pods are not (or no
    /// longer) known to be current.
    fn with_cluster<T>(
        &self,
        relevant: &[ResourceKind],
        lookup: impl FnOnce(&ClusterState) -> Option<T>,
    ) -> Option<Result<Option<T>, String>> {
        let Kube::On { watches, .. } = &self.inner.kube else {
            return None;
        };
        let state = watches.read();
        if let Some(found) = lookup(&state) {
            return Some(Ok(Some(found)));
        }
        let now = SystemTime::now();
        let caveats: Vec<String> = relevant
            .iter()
            .filter(|k| watches.kinds().contains(k))
            .filter_map(|&kind| match state.sync_status(kind) {
                Some(status) => status.caveat(kind, now),
                None => Some(format!("{} not listed yet", kind.describe())),
            })
            .collect();
        Some(if caveats.is_empty() {
            Ok(None)
        } else {
            Err(caveats.join("; "))
        })
    }

    fn node_end(&self, name: &str) -> ResolvedEnd {
        ResolvedEnd::plain(Identity::Node {
            name: name.to_owned(),
        })
    }

    fn remote(&self, flow: &Flow, local: &ResolvedEnd, at: SystemTime) -> ResolvedEnd {
        let ip = flow.remote.ip().to_canonical();
        if ip.is_loopback() {
            let in_pod_netns = self
                .inner
                .host_netns
                .is_some_and(|host| flow.netns.cookie != 0 && flow.netns.cookie != host);
            return if in_pod_netns && matches!(local.identity, Identity::Workload(_)) {
                ResolvedEnd {
                    container_id: None,
                    ..local.clone()
                }
            } else {
                self.node_end(&self.inner.node)
            };
        }
        if let Some(found) = self.inner.inventory.as_ref().and_then(|i| i.by_address(ip)) {
            return match found {
                AddressMatch::Workload(workload) => self.workload_end(workload),
                AddressMatch::Node(name) => self.node_end(name),
                AddressMatch::Service { service, backends } => {
                    let identities = backends
                        .into_iter()
                        .map(|w| (Identity::Workload((**w).clone()), None))
                        .collect();
                    self.service_end(service.clone(), identities)
                }
            };
        }
        let now = SystemTime::now();
        let port = flow.remote.port();
        match self.with_cluster(&REMOTE_KINDS, |state| state.remote(ip, port, at, now)) {
            Some(Ok(Some(found))) => match found {
                RemoteMatch::Pod(pod) => self.pod_end(&pod),
                RemoteMatch::Node(name) => self.node_end(&name),
                RemoteMatch::Service {
                    service,
                    backends,
                    target_port,
                } => {
                    let service = ServiceRef {
                        namespace: service.namespace.to_string(),
                        name: service.name.to_string(),
                    };
                    // Only a dialled Service (egress) leads somewhere else.
                    let target_port = target_port.filter(|_| {
                        flow.key.direction == eastwatch_policy::flow::Direction::Egress
                    });
                    ResolvedEnd {
                        target_port,
                        ..self.service_end(service, backends)
                    }
                }
            },
            other => {
                let why = match other {
                    None => match &self.inner.inventory {
                        Some(_) => format!(
                            "not in the inventory; Kubernetes is off ({})",
                            self.kube_off_reason().unwrap_or_default()
                        ),
                        None => format!(
                            "Kubernetes is off ({})",
                            self.kube_off_reason().unwrap_or_default()
                        ),
                    },
                    Some(Err(caveat)) => {
                        format!("no pod, Service or node has {ip} so far: {caveat}")
                    }
                    Some(Ok(_)) => format!("no pod, Service or node has {ip}"),
                };
                ResolvedEnd {
                    unresolved: Some(why),
                    ..ResolvedEnd::plain(Identity::External { address: ip })
                }
            }
        }
    }

    fn service_end(
        &self,
        service: ServiceRef,
        backends: Vec<(Identity, Option<Arc<PodRecord>>)>,
    ) -> ResolvedEnd {
        let mut backends = backends.into_iter();
        match backends.next() {
            Some((identity, _)) => {
                let spiffe_id = identity.spiffe_id(&self.inner.trust_domain);
                ResolvedEnd {
                    service: Some(service),
                    spiffe_id,
                    other_backends: backends.map(|(i, _)| i).collect(),
                    ..ResolvedEnd::plain(identity)
                }
            }
            None => ResolvedEnd {
                unresolved: Some(format!(
                    "Service {}/{} has no ready endpoints",
                    service.namespace, service.name
                )),
                ..ResolvedEnd::plain(Identity::Unknown {
                    what: format!("service/{}/{}", service.namespace, service.name),
                })
            }
            .with_service(service),
        }
    }
}

const REMOTE_KINDS: [ResourceKind; 4] = [
    ResourceKind::Pods,
    ResourceKind::Services,
    ResourceKind::EndpointSlices,
    ResourceKind::Nodes,
];

trait WithService {
    fn with_service(self, service: ServiceRef) -> Self;
}

impl WithService for ResolvedEnd {
    fn with_service(self, service: ServiceRef) -> Self {
        Self {
            service: Some(service),
            ..self
        }
    }
}
