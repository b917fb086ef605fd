//! Kubernetes as a source of identity: watches of Pods (this node's, by
//! field selector, and the cluster's), Services, EndpointSlices and Nodes
//! through kube-rs, reflected into a compact [`ClusterState`] that lookups
//! read without waiting.
//!
//! Each watch lists (in pages of 500), then watches from the list's
//! resourceVersion with bookmarks. A `410 Gone` or any error re-lists
//! after a backoff (0.8 s doubling to 30 s); the state keeps the last good
//! data meanwhile and reports itself stale.

pub mod config;
pub mod convert;
pub mod owners;
pub mod snapshot;
pub mod store;

use std::{
    fmt::Debug,
    future::Future,
    sync::{Arc, RwLock, RwLockReadGuard},
    time::SystemTime,
};

use futures_util::StreamExt as _;
use k8s_openapi::api::{
    core::v1::{Node, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{WatchStreamExt as _, watcher},
};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use self::{
    owners::OwnerCache,
    store::{ClusterState, DeletedKey, Record, ResourceKind},
};

/// How long the API server holds a watch open; a silent connection is
/// given up five seconds after that, so a black-holed server is noticed
/// within about a minute.
const WATCH_TIMEOUT_SECS: u32 = 55;

#[derive(Debug, Clone)]
pub struct KubeOptions {
    pub cluster: String,
    /// This node: its pods are watched with a field selector.
    pub node_name: Option<String>,
    /// How long deleted pods and the addresses they held stay known.
    pub departed_grace: std::time::Duration,
}

/// Running watches and what they reflect; dropping it stops them.
pub struct KubeSource {
    state: Arc<RwLock<ClusterState>>,
    kinds: Vec<ResourceKind>,
    tasks: Vec<JoinHandle<()>>,
}

impl KubeSource {
    /// Starts the watches (on the current tokio runtime).
    pub fn start(client: Client, options: KubeOptions) -> Self {
        let mut source = Self {
            state: Arc::new(RwLock::new(ClusterState::new(options.departed_grace))),
            kinds: Vec::new(),
            tasks: Vec::new(),
        };
        let owners = Arc::new(OwnerCache::new(client.clone()));
        let cluster: Arc<str> = options.cluster.as_str().into();
        let pods = move |pod: Pod| pod_record(owners.clone(), cluster.clone(), pod);
        let base = watcher::Config::default().timeout(WATCH_TIMEOUT_SECS);
        if let Some(node) = &options.node_name {
            let local = base.clone().fields(&format!("spec.nodeName={node}"));
            source.watch(
                ResourceKind::LocalPods,
                Api::all(client.clone()),
                local,
                pods.clone(),
            );
        }
        source.watch(
            ResourceKind::Pods,
            Api::all(client.clone()),
            base.clone(),
            pods,
        );
        source.watch(
            ResourceKind::Services,
            Api::all(client.clone()),
            base.clone(),
            |s: Service| std::future::ready(convert::service_record(&s).map(Record::Service)),
        );
        source.watch(
            ResourceKind::EndpointSlices,
            Api::all(client.clone()),
            base.clone(),
            |s: EndpointSlice| std::future::ready(convert::slice_record(&s).map(Record::Slice)),
        );
        source.watch(ResourceKind::Nodes, Api::all(client), base, |n: Node| {
            std::future::ready(Some(Record::Node(convert::node_record(&n))))
        });
        source
    }

    /// Starts reflecting `kind` from `api` into the state.
    fn watch<K, F, Fut>(
        &mut self,
        kind: ResourceKind,
        api: Api<K>,
        config: watcher::Config,
        convert: F,
    ) where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
        F: Fn(K) -> Fut + Send + 'static,
        Fut: Future<Output = Option<Record>> + Send + 'static,
    {
        self.kinds.push(kind);
        self.tasks.push(tokio::spawn(reflect(
            api,
            config,
            kind,
            self.state.clone(),
            convert,
        )));
    }

    /// The state, for a quick lookup; never held across an await.
    pub fn read(&self) -> RwLockReadGuard<'_, ClusterState> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The resources being watched.
    pub fn kinds(&self) -> &[ResourceKind] {
        &self.kinds
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn write(state: &RwLock<ClusterState>) -> std::sync::RwLockWriteGuard<'_, ClusterState> {
    state
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One watch: list, watch, re-list on 410 and errors (with backoff), and
/// every change into the state.
/// A pod as the store keeps it, its workload found through its owners.
async fn pod_record(owners: Arc<OwnerCache>, cluster: Arc<str>, pod: Pod) -> Option<Record> {
    let (_, kind, name) = owners.workload_of_pod(&pod).await?;
    convert::pod_record(&pod, &cluster, kind, name).map(Record::Pod)
}

async fn reflect<K, F, Fut>(
    api: Api<K>,
    config: watcher::Config,
    kind: ResourceKind,
    state: Arc<RwLock<ClusterState>>,
    convert: F,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
    F: Fn(K) -> Fut + Send,
    Fut: Future<Output = Option<Record>> + Send,
{
    write(&state).started(kind, SystemTime::now());
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    // A list in progress: replaced into the state whole when complete, so
    // lookups never see half a list.
    let mut listing: Option<Vec<Record>> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => {
                debug!(resource = kind.as_str(), "listing");
                listing = Some(Vec::new());
            }
            Ok(watcher::Event::InitApply(object)) => {
                if let Some(record) = convert(object).await {
                    listing.get_or_insert_default().push(record);
                }
            }
            Ok(watcher::Event::InitDone) => {
                let records = listing.take().unwrap_or_default();
                info!(resource = kind.as_str(), objects = records.len(), "listed");
                write(&state).replace(kind, records, SystemTime::now());
            }
            Ok(watcher::Event::Apply(object)) => {
                let name = object_name(&object);
                if let Some(record) = convert(object).await {
                    write(&state).apply(kind, record, SystemTime::now());
                    debug!("watch {}: applied {name}", kind.as_str());
                }
            }
            Ok(watcher::Event::Delete(object)) => {
                let key = DeletedKey {
                    uid: object.uid(),
                    namespace: object.namespace(),
                    name: object.name_any(),
                };
                write(&state).delete(kind, &key, SystemTime::now());
                debug!("watch {}: deleted {}", kind.as_str(), object_name(&object));
            }
            Err(err) => {
                let error = error_chain(&err);
                warn!(resource = kind.as_str(), %error, "Kubernetes watch failed; retrying");
                write(&state).failed(kind, error, SystemTime::now());
            }
        }
    }
}

/// `namespace/name`, or `name` for cluster-scoped objects.
fn object_name<K: Resource>(object: &K) -> String {
    match object.namespace() {
        Some(namespace) => format!("{namespace}/{}", object.name_any()),
        None => object.name_any(),
    }
}

/// An error with its causes, `a: b: c`, without repeats.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
