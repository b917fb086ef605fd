//! A pod's workload: the controller at the top of its owner chain
//! (ReplicaSet → Deployment, Job → CronJob), fetched once per owner and
//! cached.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{apps::v1::ReplicaSet, batch::v1::Job, core::v1::Pod},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{Api, Client, ResourceExt};
use tracing::debug;

use eastwatch_policy::identity::WorkloadKind;

/// Entries above this are dropped wholesale: pods already hold their
/// workload, so a cleared cache costs one fetch per owner of a new pod.
const MAX_ENTRIES: usize = 16_384;
/// A failed fetch is retried after this long.
const RETRY_AFTER: Duration = Duration::from_secs(30);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
enum Cached {
    /// The owner's own controller, or None when it has none.
    Known(Option<(WorkloadKind, String)>),
    Failed(Instant),
}

/// Owners of pods, by namespace, kind and name.
pub struct OwnerCache {
    client: Client,
    entries: Mutex<HashMap<(String, &'static str, String), Cached>>,
    /// One fetch at a time, so the two pod watches never fetch one owner
    /// twice.
    fetching: tokio::sync::Mutex<()>,
}

/// The controller reference among a pod's owners.
pub fn controller(owners: &[OwnerReference]) -> Option<&OwnerReference> {
    owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or_else(|| owners.first())
}

impl OwnerCache {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            entries: Mutex::new(HashMap::new()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// A pod's namespace and its workload's kind and name; None for a pod
    /// without a namespace.
    pub async fn workload_of_pod(&self, pod: &Pod) -> Option<(String, WorkloadKind, String)> {
        let namespace = pod.namespace()?;
        let hash = pod.labels().get("pod-template-hash").cloned();
        let (kind, name) = self
            .workload_of(
                &namespace,
                &pod.name_any(),
                pod.owner_references(),
                hash.as_deref(),
            )
            .await;
        Some((namespace, kind, name))
    }

    /// The workload kind and name for a pod named `pod_name` with these
    /// owners and labels.
    pub async fn workload_of(
        &self,
        namespace: &str,
        pod_name: &str,
        owners: &[OwnerReference],
        pod_template_hash: Option<&str>,
    ) -> (WorkloadKind, String) {
        let Some(owner) = controller(owners) else {
            return (WorkloadKind::Pod, pod_name.to_owned());
        };
        let kind = WorkloadKind::parse(&owner.kind);
        let parent = match kind {
            WorkloadKind::ReplicaSet | WorkloadKind::Job => {
                self.parent(namespace, &kind, &owner.name).await
            }
            _ => return (kind, owner.name.clone()),
        };
        match parent {
            Ok(Some(top)) => top,
            Ok(None) => (kind, owner.name.clone()),
            // The API did not answer: a ReplicaSet made by a Deployment is
            // named `<deployment>-<pod-template-hash>`.
            Err(()) => match (&kind, pod_template_hash) {
                (WorkloadKind::ReplicaSet, Some(hash)) => {
                    match owner
                        .name
                        .strip_suffix(hash)
                        .and_then(|n| n.strip_suffix('-'))
                    {
                        Some(deployment) if !deployment.is_empty() => {
                            (WorkloadKind::Deployment, deployment.to_owned())
                        }
                        _ => (kind, owner.name.clone()),
                    }
                }
                _ => (kind, owner.name.clone()),
            },
        }
    }

    /// The controller of a ReplicaSet or Job; Err when it could not be
    /// fetched.
    async fn parent(
        &self,
        namespace: &str,
        kind: &WorkloadKind,
        name: &str,
    ) -> Result<Option<(WorkloadKind, String)>, ()> {
        let kind_key: &'static str = match kind {
            WorkloadKind::ReplicaSet => "ReplicaSet",
            _ => "Job",
        };
        let key = (namespace.to_owned(), kind_key, name.to_owned());
        let cached = |cache: &Self| match cache.lookup(&key) {
            Some(Cached::Known(parent)) => Some(Ok(parent)),
            Some(Cached::Failed(at)) if at.elapsed() < RETRY_AFTER => Some(Err(())),
            _ => None,
        };
        if let Some(known) = cached(self) {
            return known;
        }
        let _one_at_a_time = self.fetching.lock().await;
        if let Some(known) = cached(self) {
            return known;
        }
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, async {
            let meta = match kind_key {
                "ReplicaSet" => Api::<ReplicaSet>::namespaced(self.client.clone(), namespace)
                    .get_metadata(name)
                    .await
                    .map(|m| m.metadata),
                _ => Api::<Job>::namespaced(self.client.clone(), namespace)
                    .get_metadata(name)
                    .await
                    .map(|m| m.metadata),
            };
            meta.map(|m| {
                let owners = m.owner_references.unwrap_or_default();
                controller(&owners).map(|o| (WorkloadKind::parse(&o.kind), o.name.clone()))
            })
        })
        .await;
        let entry = match fetched {
            Ok(Ok(parent)) => Cached::Known(parent),
            Ok(Err(err)) => {
                debug!(%err, namespace, name, kind = kind_key, "owner fetch failed");
                Cached::Failed(Instant::now())
            }
            Err(_) => {
                debug!(namespace, name, kind = kind_key, "owner fetch timed out");
                Cached::Failed(Instant::now())
            }
        };
        self.store(key, entry.clone());
        match entry {
            Cached::Known(parent) => Ok(parent),
            Cached::Failed(_) => Err(()),
        }
    }

    fn lookup(&self, key: &(String, &'static str, String)) -> Option<Cached> {
        self.entries.lock().ok()?.get(key).cloned()
    }

    fn store(&self, key: (String, &'static str, String), entry: Cached) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(key, entry);
        }
    }
}
