//! A Kubernetes API server for tests: the list and watch protocol over real
//! HTTP on 127.0.0.1, with real-shaped JSON, for the real kube-rs client.
//!
//! It keeps objects per resource with resourceVersions from one counter,
//! answers lists (with `limit`/`continue` pages and field selectors) and
//! watches (chunked JSON lines: ADDED, MODIFIED, DELETED, BOOKMARK, and
//! ERROR 410 when the requested version is too old or the test expires
//! the history), GETs of single objects, and 503 while "down".

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Query, State},
    http::{StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

/// The resources the server knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Pods,
    Services,
    Nodes,
    EndpointSlices,
    ReplicaSets,
    Deployments,
    Jobs,
}

impl Resource {
    const ALL: [Resource; 7] = [
        Self::Pods,
        Self::Services,
        Self::Nodes,
        Self::EndpointSlices,
        Self::ReplicaSets,
        Self::Deployments,
        Self::Jobs,
    ];

    /// (group/version prefix, plural, kind, api version, namespaced)
    fn info(self) -> (&'static str, &'static str, &'static str, &'static str, bool) {
        match self {
            Self::Pods => ("/api/v1", "pods", "Pod", "v1", true),
            Self::Services => ("/api/v1", "services", "Service", "v1", true),
            Self::Nodes => ("/api/v1", "nodes", "Node", "v1", false),
            Self::EndpointSlices => (
                "/apis/discovery.k8s.io/v1",
                "endpointslices",
                "EndpointSlice",
                "discovery.k8s.io/v1",
                true,
            ),
            Self::ReplicaSets => (
                "/apis/apps/v1",
                "replicasets",
                "ReplicaSet",
                "apps/v1",
                true,
            ),
            Self::Deployments => (
                "/apis/apps/v1",
                "deployments",
                "Deployment",
                "apps/v1",
                true,
            ),
            Self::Jobs => ("/apis/batch/v1", "jobs", "Job", "batch/v1", true),
        }
    }

    pub fn plural(self) -> &'static str {
        self.info().1
    }

    fn kind(self) -> &'static str {
        self.info().2
    }

    fn api_version(self) -> &'static str {
        self.info().3
    }
}

#[derive(Default)]
struct Collection {
    /// (namespace, name) → object.
    objects: BTreeMap<(String, String), Value>,
    /// (resourceVersion, type, object) since `oldest`.
    history: Vec<(u64, &'static str, Value)>,
    /// Watches from before this version get 410 Gone.
    oldest: u64,
    /// Bumped to end open watches with 410.
    epoch: u64,
}

#[derive(Default)]
struct ApiState {
    version: u64,
    collections: HashMap<Resource, Collection>,
    requests: Vec<String>,
    down: bool,
    list_delay: Duration,
}

type Shared = Arc<(Mutex<ApiState>, watch::Sender<u64>)>;

/// The running server; stopped on drop.
pub struct FakeApi {
    addr: SocketAddr,
    shared: Shared,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeApi {
    pub fn start() -> Self {
        let (changes, _) = watch::channel(0);
        let shared: Shared = Arc::new((Mutex::new(ApiState::default()), changes));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let state = shared.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind 127.0.0.1:0");
                addr_tx
                    .send(listener.local_addr().expect("local addr"))
                    .expect("send addr");
                let app = Router::new().fallback(handle).with_state(state);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx.recv().expect("server address");
        Self {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kubeconfig for this server, written into `dir`.
    pub fn write_kubeconfig(&self, dir: &Path, cluster: &str) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: http://{}\n\
             users:\n- name: tester\n  user:\n    token: test-token\n\
             contexts:\n- name: {cluster}-ctx\n  context:\n    cluster: {cluster}\n    user: tester\n    namespace: default\n\
             current-context: {cluster}-ctx\n",
            self.addr
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    fn with<T>(&self, change: impl FnOnce(&mut ApiState) -> T) -> T {
        let (lock, changes) = &*self.shared;
        let result = change(&mut lock.lock().expect("api state"));
        changes.send_modify(|n| *n += 1);
        result
    }

    /// Adds or replaces an object (ADDED or MODIFIED to watchers).
    pub fn apply(&self, resource: Resource, object: Value) {
        self.with(|state| state.apply(resource, object));
    }

    /// A pod with its owners: the Deployment and its ReplicaSet.
    pub fn apply_deployment_pod(&self, pod: &objects::PodSpec<'_>) {
        self.apply(
            Resource::Deployments,
            objects::deployment(pod.namespace, pod.deployment, pod.labels),
        );
        self.apply(
            Resource::ReplicaSets,
            objects::replicaset(pod.namespace, pod.deployment, pod.hash, pod.labels),
        );
        self.apply(Resource::Pods, objects::pod(pod));
    }

    pub fn delete(&self, resource: Resource, namespace: &str, name: &str) {
        self.with(|state| state.delete(resource, namespace, name));
    }

    /// Removes an object without telling watchers (as if the event fell
    /// into a compacted history): only a re-list shows it.
    pub fn delete_silently(&self, resource: Resource, namespace: &str, name: &str) {
        self.with(|state| {
            state.version += 1;
            state
                .collections
                .entry(resource)
                .or_default()
                .objects
                .remove(&(namespace.to_owned(), name.to_owned()));
        });
    }

    /// A BOOKMARK to watchers of `resource`.
    pub fn bookmark(&self, resource: Resource) {
        self.with(|state| {
            let version = state.version;
            let object = json!({
                "kind": resource.kind(),
                "apiVersion": resource.api_version(),
                "metadata": {"resourceVersion": version.to_string()},
            });
            state
                .collections
                .entry(resource)
                .or_default()
                .history
                .push((version, "BOOKMARK", object));
        });
    }

    /// Forgets `resource`'s history: open watches end with 410 Gone and so
    /// does any watch from an older version, until the client re-lists.
    pub fn expire(&self, resource: Resource) {
        self.with(|state| {
            state.version += 1;
            let version = state.version;
            let collection = state.collections.entry(resource).or_default();
            collection.history.clear();
            collection.oldest = version;
            collection.epoch += 1;
        });
    }

    /// While down, every request gets 503 and open watches end.
    pub fn set_down(&self, down: bool) {
        self.with(|state| {
            state.down = down;
            if down {
                for collection in state.collections.values_mut() {
                    collection.epoch += 1;
                }
            }
        });
    }

    /// Delays every list response (a slow API server).
    pub fn set_list_delay(&self, delay: Duration) {
        self.with(|state| state.list_delay = delay);
    }

    /// Requests so far, as `LIST pods`, `WATCH pods rv=12`, `GET replicasets shop/x`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.0.lock().expect("api state").requests.clone()
    }

    pub fn count_requests(&self, prefix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.starts_with(prefix))
            .count()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Open watches end when the runtime goes.
        self.with(|state| state.down = true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn key_of(object: &Value) -> (String, String) {
    let meta = &object["metadata"];
    (
        meta["namespace"].as_str().unwrap_or_default().to_owned(),
        meta["name"].as_str().unwrap_or_default().to_owned(),
    )
}

impl ApiState {
    fn apply(&mut self, resource: Resource, mut object: Value) {
        self.version += 1;
        let version = self.version;
        object["kind"] = resource.kind().into();
        object["apiVersion"] = resource.api_version().into();
        object["metadata"]["resourceVersion"] = version.to_string().into();
        let collection = self.collections.entry(resource).or_default();
        let kind = match collection.objects.insert(key_of(&object), object.clone()) {
            Some(_) => "MODIFIED",
            None => "ADDED",
        };
        collection.history.push((version, kind, object));
    }

    fn delete(&mut self, resource: Resource, namespace: &str, name: &str) {
        self.version += 1;
        let version = self.version;
        let collection = self.collections.entry(resource).or_default();
        if let Some(mut object) = collection
            .objects
            .remove(&(namespace.to_owned(), name.to_owned()))
        {
            object["metadata"]["resourceVersion"] = version.to_string().into();
            collection.history.push((version, "DELETED", object));
        }
    }
}

/// `spec.nodeName=x,metadata.namespace=y`: every term must match.
fn matches_fields(object: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let (path, expected, negate) = match term.split_once("!=") {
            Some((p, v)) => (p, v, true),
            None => match term.split_once('=') {
                Some((p, v)) => (p, v.trim_start_matches('='), false),
                None => return false,
            },
        };
        let mut value = object;
        for part in path.split('.') {
            value = &value[part];
        }
        (value.as_str().unwrap_or_default() == expected) != negate
    })
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Which resource (and namespace, name) a path addresses.
fn route(path: &str) -> Option<(Resource, Option<String>, Option<String>)> {
    for resource in Resource::ALL {
        let (prefix, plural, ..) = resource.info();
        let Some(rest) = path.strip_prefix(prefix) else {
            continue;
        };
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        match parts.as_slice() {
            [p] if *p == plural => return Some((resource, None, None)),
            ["namespaces", ns, p] if *p == plural => {
                return Some((resource, Some((*ns).to_owned()), None));
            }
            ["namespaces", ns, p, name] if *p == plural => {
                return Some((resource, Some((*ns).to_owned()), Some((*name).to_owned())));
            }
            [p, name] if *p == plural => return Some((resource, None, Some((*name).to_owned()))),
            _ => {}
        }
    }
    None
}

async fn handle(
    State(shared): State<Shared>,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some((resource, namespace, name)) = route(uri.path()) else {
        return json_response(
            StatusCode::NOT_FOUND,
            &status(404, "NotFound", &format!("no route {}", uri.path())),
        );
    };
    let watching = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let (delay, down) = {
        let mut state = shared.0.lock().expect("api state");
        let what = match (&name, watching) {
            (Some(name), _) => format!(
                "GET {} {}/{name}",
                resource.plural(),
                namespace.as_deref().unwrap_or_default()
            ),
            (None, true) => format!(
                "WATCH {} rv={}",
                resource.plural(),
                query.get("resourceVersion").map_or("", String::as_str)
            ),
            (None, false) => format!("LIST {}", resource.plural()),
        };
        let fields = query
            .get("fieldSelector")
            .map(|f| format!(" fields={f}"))
            .unwrap_or_default();
        state.requests.push(what + &fields);
        (state.list_delay, state.down)
    };
    if down {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &status(503, "ServiceUnavailable", "the API server is down (test)"),
        );
    }
    if let Some(name) = name {
        let state = shared.0.lock().expect("api state");
        let key = (namespace.unwrap_or_default(), name);
        return match state
            .collections
            .get(&resource)
            .and_then(|c| c.objects.get(&key))
        {
            Some(object) => json_response(StatusCode::OK, object),
            None => json_response(
                StatusCode::NOT_FOUND,
                &status(
                    404,
                    "NotFound",
                    &format!("{} \"{}\" not found", resource.plural(), key.1),
                ),
            ),
        };
    }
    if watching {
        return watch_response(shared, resource, namespace, query);
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    list_response(&shared, resource, namespace.as_deref(), &query)
}

fn list_response(
    shared: &Shared,
    resource: Resource,
    namespace: Option<&str>,
    query: &HashMap<String, String>,
) -> Response {
    let state = shared.0.lock().expect("api state");
    let empty = Collection::default();
    let collection = state.collections.get(&resource).unwrap_or(&empty);
    let items: Vec<&Value> = collection
        .objects
        .iter()
        .filter(|((ns, _), _)| namespace.is_none_or(|want| want == ns))
        .map(|(_, o)| o)
        .filter(|o| matches_fields(o, query.get("fieldSelector")))
        .collect();
    let offset: usize = query
        .get("continue")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let page: Vec<Value> = items
        .iter()
        .skip(offset)
        .take(limit)
        .map(|o| {
            // List items carry no kind or apiVersion; the list does.
            let mut item = (*o).clone();
            if let Some(map) = item.as_object_mut() {
                map.remove("kind");
                map.remove("apiVersion");
            }
            item
        })
        .collect();
    let mut metadata = json!({"resourceVersion": state.version.to_string()});
    let next = offset.saturating_add(page.len());
    if next < items.len() {
        metadata["continue"] = next.to_string().into();
        metadata["remainingItemCount"] = (items.len() - next).into();
    }
    json_response(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", resource.kind()),
            "apiVersion": resource.api_version(),
            "metadata": metadata,
            "items": page,
        }),
    )
}

/// A chunked stream of watch events, one JSON object a line.
fn watch_response(
    shared: Shared,
    resource: Resource,
    namespace: Option<String>,
    query: HashMap<String, String>,
) -> Response {
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(300), Duration::from_secs);
    let bookmarks = query.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let selector = query.get("fieldSelector").cloned();
    let (tx, mut rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = shared.1.subscribe();
        let mut sent_up_to = from;
        let epoch = {
            let state = shared.0.lock().expect("api state");
            state.collections.get(&resource).map_or(0, |c| c.epoch)
        };
        loop {
            // Events to send, or the reason to stop, under the lock.
            let (events, gone) = {
                let state = shared.0.lock().expect("api state");
                let empty = Collection::default();
                let collection = state.collections.get(&resource).unwrap_or(&empty);
                if state.down {
                    return;
                }
                if collection.epoch != epoch || sent_up_to < collection.oldest {
                    (Vec::new(), true)
                } else {
                    let events: Vec<(u64, &'static str, Value)> = collection
                        .history
                        .iter()
                        .filter(|(v, _, _)| *v > sent_up_to)
                        .filter(|(_, kind, object)| {
                            if *kind == "BOOKMARK" {
                                return bookmarks;
                            }
                            let (ns, _) = key_of(object);
                            namespace.as_deref().is_none_or(|want| want == ns)
                                && matches_fields(object, selector.as_ref())
                        })
                        .cloned()
                        .collect();
                    let newest = collection.history.last().map_or(sent_up_to, |(v, _, _)| *v);
                    sent_up_to = sent_up_to.max(newest);
                    (events, false)
                }
            };
            if gone {
                let line = json!({
                    "type": "ERROR",
                    "object": status(410, "Expired", &format!("too old resource version: {from}")),
                });
                let _ = tx.send(Bytes::from(format!("{line}\n"))).await;
                return;
            }
            for (_, kind, object) in events {
                let line = json!({"type": kind, "object": object});
                if tx.send(Bytes::from(format!("{line}\n"))).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|b| b.map(Ok::<Bytes, Infallible>))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Real-shaped objects.
pub mod objects {
    use serde_json::{Value, json};

    pub const CREATED: &str = "2026-11-20T09:00:00Z";

    fn owner(api_version: &str, kind: &str, name: &str, uid: &str) -> Value {
        json!([{
            "apiVersion": api_version,
            "kind": kind,
            "name": name,
            "uid": uid,
            "controller": true,
            "blockOwnerDeletion": true,
        }])
    }

    pub fn uid_from(seed: &str) -> String {
        // A deterministic UID-shaped string from a seed.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in seed.bytes() {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        let hex = format!(
            "{hash:016x}{:016x}",
            hash.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15
        );
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }

    pub fn deployment(namespace: &str, name: &str, labels: &Value) -> Value {
        json!({
            "metadata": {
                "name": name, "namespace": namespace, "uid": uid_from(&format!("deploy/{namespace}/{name}")),
                "generation": 1, "creationTimestamp": CREATED, "labels": labels,
                "annotations": {"deployment.kubernetes.io/revision": "1"},
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": name, "image": format!("registry.example/{name}:1.0")}]}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600,
            },
            "status": {"observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "availableReplicas": 2, "updatedReplicas": 2},
        })
    }

    /// The ReplicaSet a Deployment made: `<deployment>-<hash>`.
    pub fn replicaset(namespace: &str, deployment: &str, hash: &str, labels: &Value) -> Value {
        let mut pod_labels = labels.clone();
        pod_labels["pod-template-hash"] = hash.into();
        json!({
            "metadata": {
                "name": format!("{deployment}-{hash}"), "namespace": namespace,
                "uid": uid_from(&format!("rs/{namespace}/{deployment}-{hash}")),
                "generation": 1, "creationTimestamp": CREATED, "labels": pod_labels,
                "annotations": {"deployment.kubernetes.io/desired-replicas": "2", "deployment.kubernetes.io/revision": "1"},
                "ownerReferences": owner("apps/v1", "Deployment", deployment, &uid_from(&format!("deploy/{namespace}/{deployment}"))),
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": pod_labels},
                "template": {"metadata": {"labels": pod_labels}, "spec": {"containers": [{"name": deployment, "image": format!("registry.example/{deployment}:1.0")}]}},
            },
            "status": {"replicas": 2, "fullyLabeledReplicas": 2, "readyReplicas": 2, "availableReplicas": 2, "observedGeneration": 1},
        })
    }

    /// A running pod of a Deployment's ReplicaSet.
    pub struct PodSpec<'a> {
        pub namespace: &'a str,
        pub deployment: &'a str,
        pub hash: &'a str,
        pub suffix: &'a str,
        pub uid: &'a str,
        pub node: &'a str,
        pub ip: &'a str,
        pub service_account: &'a str,
        pub labels: &'a Value,
    }

    pub fn pod(p: &PodSpec<'_>) -> Value {
        let rs = format!("{}-{}", p.deployment, p.hash);
        let mut labels = p.labels.clone();
        labels["pod-template-hash"] = p.hash.into();
        json!({
            "metadata": {
                "name": format!("{rs}-{}", p.suffix), "generateName": format!("{rs}-"),
                "namespace": p.namespace, "uid": p.uid, "creationTimestamp": CREATED, "labels": labels,
                "ownerReferences": owner("apps/v1", "ReplicaSet", &rs, &uid_from(&format!("rs/{}/{rs}", p.namespace))),
            },
            "spec": {
                "containers": [{
                    "name": p.deployment, "image": format!("registry.example/{}:1.0", p.deployment),
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                    "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                    "imagePullPolicy": "IfNotPresent",
                }],
                "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
                "serviceAccountName": p.service_account, "serviceAccount": p.service_account,
                "nodeName": p.node, "securityContext": {}, "schedulerName": "default-scheduler",
                "tolerations": [
                    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                ],
                "priority": 0, "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority",
            },
            "status": {
                "phase": "Running",
                "conditions": [
                    {"type": "Initialized", "status": "True", "lastTransitionTime": CREATED},
                    {"type": "Ready", "status": "True", "lastTransitionTime": CREATED},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": CREATED},
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": CREATED},
                ],
                "hostIP": "192.0.2.1", "hostIPs": [{"ip": "192.0.2.1"}],
                "podIP": p.ip, "podIPs": [{"ip": p.ip}],
                "startTime": CREATED, "qosClass": "Burstable",
                "containerStatuses": [{
                    "name": p.deployment, "ready": true, "restartCount": 0, "started": true,
                    "image": format!("registry.example/{}:1.0", p.deployment),
                    "imageID": format!("registry.example/{}@sha256:{}", p.deployment, "ab".repeat(32)),
                    "containerID": format!("containerd://{}", "cd".repeat(32)),
                    "state": {"running": {"startedAt": CREATED}},
                    "lastState": {},
                }],
            },
        })
    }

    pub fn service(
        namespace: &str,
        name: &str,
        cluster_ip: &str,
        port: u16,
        target: u16,
        selector: &Value,
    ) -> Value {
        json!({
            "metadata": {
                "name": name, "namespace": namespace, "uid": uid_from(&format!("svc/{namespace}/{name}")),
                "creationTimestamp": CREATED, "labels": selector,
            },
            "spec": {
                "type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                "ports": [{"name": "http", "protocol": "TCP", "port": port, "targetPort": target}],
                "selector": selector, "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
            },
            "status": {"loadBalancer": {}},
        })
    }

    /// An EndpointSlice of Service `service` with ready pod endpoints
    /// (pod name, IP, node).
    pub fn endpoint_slice(
        namespace: &str,
        service: &str,
        suffix: &str,
        port: u16,
        endpoints: &[(&str, &str, &str)],
    ) -> Value {
        let name = format!("{service}-{suffix}");
        let endpoints: Vec<Value> = endpoints
            .iter()
            .map(|(pod, ip, node)| json!({
                "addresses": [ip],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": node,
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod, "uid": uid_from(&format!("pod/{namespace}/{pod}"))},
            }))
            .collect();
        json!({
            "metadata": {
                "name": name, "generateName": format!("{service}-"), "namespace": namespace,
                "uid": uid_from(&format!("eps/{namespace}/{name}")), "creationTimestamp": CREATED,
                "labels": {"kubernetes.io/service-name": service, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                "ownerReferences": owner("v1", "Service", service, &uid_from(&format!("svc/{namespace}/{service}"))),
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "http", "protocol": "TCP", "port": port}],
        })
    }

    pub fn node(name: &str, internal_ip: &str) -> Value {
        json!({
            "metadata": {
                "name": name, "uid": uid_from(&format!("node/{name}")), "creationTimestamp": CREATED,
                "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
            },
            "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]},
            "status": {
                "addresses": [{"type": "InternalIP", "address": internal_ip}, {"type": "Hostname", "address": name}],
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": CREATED, "lastTransitionTime": CREATED}],
                "nodeInfo": {"kubeletVersion": "v1.37.0", "containerRuntimeVersion": "containerd://2.1.0", "kernelVersion": "6.18.0", "osImage": "Debian", "architecture": "amd64", "operatingSystem": "linux", "machineID": "", "systemUUID": "", "bootID": "", "kubeProxyVersion": ""},
            },
        })
    }
}
