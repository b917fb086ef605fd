//! The Kubernetes identity source end to end at the protocol level: the
//! real kube-rs client, through eastwatch's watches and resolver, against
//! a local server that speaks the list/watch protocol with real-shaped
//! objects.

// Test helpers fail the test by panicking, with the reason in the message.
#![allow(clippy::expect_used)]

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use eastwatch::{IdentityArgs, IdentityResolver, SyncState};
use eastwatch_policy::{
    flow::{Direction, Flow, FlowKey, NetnsRef, Process, ProcessSource, Transport},
    identity::{Identity, ResolvedEnd, ResolvedFlow},
};
use eastwatch_tests::{
    kube_api::{
        FakeApi, Resource,
        objects::{self, PodSpec},
    },
    pods::{Shop, ShopPod},
};
use serde_json::json;

const FRONTEND_UID: &str = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b";
const API_UID: &str = "7a2b3c4d-5e6f-4a70-8b9c-0d1e2f3a4b5c";
const NODE_AGENT_UID: &str = "9c4d5e6f-7081-4c92-ad0e-1f2a3b4c5d6e";
const CONTAINER: &str = "a3f9c2e1d4b5a6978877665544332211a3f9c2e1d4b5a6978877665544332211";

fn pod_cgroup(uid: &str) -> String {
    format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{CONTAINER}.scope",
        uid.replace('-', "_")
    )
}

/// A TCP flow of the pod whose container is in `cgroup` (at 10.1.0.2),
/// in network namespace `netns`, with `remote` on service port `port`.
fn flow(cgroup: &str, direction: Direction, remote: &str, port: u16, netns: u64) -> Flow {
    let remote: IpAddr = remote.parse().expect("ip");
    let local: IpAddr = "10.1.0.2".parse().expect("ip");
    let (local, remote) = match direction {
        Direction::Egress => (SocketAddr::new(local, 40000), SocketAddr::new(remote, port)),
        Direction::Ingress => (SocketAddr::new(local, port), SocketAddr::new(remote, 40000)),
    };
    let flow = Flow::example(direction, Transport::Tcp, local, remote, 4242).owned_by(cgroup);
    Flow {
        key: FlowKey {
            netns_cookie: netns,
            ..flow.key
        },
        first_seen: SystemTime::now(),
        process: Some(Process {
            pid: 1,
            name: "app".into(),
            source: ProcessSource::Hook,
        }),
        netns: NetnsRef {
            cookie: netns,
            inode: None,
        },
        ..flow
    }
}

/// A cluster: `shop` with Deployments frontend and api, Service api, two
/// nodes.
fn cluster(api: &FakeApi) {
    Shop {
        frontend: ShopPod {
            uid: FRONTEND_UID,
            node: "node-a",
            ip: "10.1.0.2",
        },
        api: ShopPod {
            uid: API_UID,
            node: "node-b",
            ip: "10.1.0.3",
        },
        cluster_ip: "10.96.0.10",
        labels: &json!({"tier": "web"}),
    }
    .describe(api);
    api.apply(Resource::Nodes, objects::node("node-a", "192.0.2.1"));
    api.apply(Resource::Nodes, objects::node("node-b", "192.0.2.2"));
    // A DaemonSet's hostNetwork pod: its address is node-a's.
    let mut agent = objects::pod(&PodSpec {
        namespace: "kube-system",
        deployment: "node-agent",
        hash: "unused",
        suffix: "unused",
        uid: NODE_AGENT_UID,
        node: "node-a",
        ip: "192.0.2.1",
        service_account: "node-agent",
        labels: &json!({"app": "node-agent", "controller-revision-hash": "6d8f7b9c5", "pod-template-generation": "1"}),
    });
    agent["metadata"]["name"] = "node-agent-7xq2p".into();
    agent["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "node-agent",
        "uid": objects::uid_from("ds/node-agent"), "controller": true, "blockOwnerDeletion": true}]);
    agent["metadata"]["labels"]
        .as_object_mut()
        .expect("labels")
        .remove("pod-template-hash");
    agent["spec"]["hostNetwork"] = true.into();
    api.apply(Resource::Pods, agent);
}

struct Setup {
    api: FakeApi,
    dir: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let api = FakeApi::start();
        let dir = std::env::temp_dir().join(format!(
            "eastwatch-kube-{}-{}",
            std::process::id(),
            api.addr().port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self { api, dir }
    }

    fn args(&self) -> IdentityArgs {
        IdentityArgs {
            no_kubernetes: false,
            kubeconfig: Some(self.api.write_kubeconfig(&self.dir, "test-cluster")),
            node_name: Some("node-a".into()),
            ..IdentityArgs::default()
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls (never times) until `check` holds, or fails with what it saw.
async fn eventually<T: std::fmt::Debug>(
    what: &str,
    mut probe: impl FnMut() -> T,
    check: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = probe();
        if check(&seen) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "never: {what}; last seen {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn synced(resolver: &IdentityResolver) {
    eventually("all watches synced", || resolver.status(), |s| s.synced()).await;
}

fn id(end: &ResolvedEnd) -> String {
    end.identity.canonical()
}

fn resolve_remote(resolver: &IdentityResolver, ip: &str) -> ResolvedEnd {
    resolver
        .resolve(flow(
            &pod_cgroup(FRONTEND_UID),
            Direction::Egress,
            ip,
            80,
            7,
        ))
        .remote
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ends_of_pod_service_node_and_external_flows() {
    let setup = Setup::new();
    cluster(&setup.api);
    let resolver = IdentityResolver::start(&setup.args()).await.expect("start");
    synced(&resolver).await;

    // frontend → api's pod IP.
    let direct: ResolvedFlow = resolver.resolve(flow(
        &pod_cgroup(FRONTEND_UID),
        Direction::Egress,
        "10.1.0.3",
        8080,
        7,
    ));
    assert_eq!(id(&direct.local), "workload:shop/deployment/frontend");
    let Identity::Workload(frontend) = &direct.local.identity else {
        panic!("{direct:#?}")
    };
    assert_eq!(
        frontend.cluster, "test-cluster",
        "from the kubeconfig context"
    );
    assert_eq!(frontend.service_account, "frontend");
    assert_eq!(
        frontend.labels,
        [
            ("app".to_owned(), "frontend".to_owned()),
            ("tier".to_owned(), "web".to_owned())
        ]
        .into(),
        "pod labels without pod-template-hash"
    );
    assert_eq!(
        direct.local.spiffe_id.as_deref(),
        Some("spiffe://cluster.local/ns/shop/sa/frontend")
    );
    let pod = direct.local.pod.as_ref().expect("pod");
    assert_eq!(
        (pod.name.as_str(), pod.uid.as_str()),
        ("frontend-7d9c8b6f5-x2k4p", FRONTEND_UID)
    );
    assert_eq!(direct.local.container_id.as_deref(), Some(CONTAINER));
    assert_eq!(id(&direct.remote), "workload:shop/deployment/api");
    assert_eq!(
        direct.remote.spiffe_id.as_deref(),
        Some("spiffe://cluster.local/ns/shop/sa/api")
    );
    assert_eq!(
        direct.remote.pod.as_ref().map(|p| p.name.as_str()),
        Some("api-5f6d7c8b9-q8w2e")
    );
    assert_eq!(direct.remote.service, None);

    // frontend → api's ClusterIP: the Service, and its backend workload.
    let via_service = resolve_remote(&resolver, "10.96.0.10");
    assert_eq!(id(&via_service), "workload:shop/deployment/api");
    let service = via_service.service.as_ref().expect("service named");
    assert_eq!(
        (service.namespace.as_str(), service.name.as_str()),
        ("shop", "api")
    );
    assert_eq!(
        via_service.spiffe_id.as_deref(),
        Some("spiffe://cluster.local/ns/shop/sa/api")
    );
    assert!(via_service.other_backends.is_empty());

    // api's side: ingress from frontend's pod IP (api runs on node-b: the
    // cluster-wide pod watch knows it).
    let ingress = resolver.resolve(flow(
        &pod_cgroup(API_UID),
        Direction::Ingress,
        "10.1.0.2",
        8080,
        8,
    ));
    assert_eq!(id(&ingress.local), "workload:shop/deployment/api");
    assert_eq!(id(&ingress.remote), "workload:shop/deployment/frontend");
    assert_eq!(
        ingress.remote.spiffe_id.as_deref(),
        Some("spiffe://cluster.local/ns/shop/sa/frontend")
    );

    // A node, loopback in a pod's own namespace and on the host, and an
    // address nobody has.
    assert_eq!(id(&resolve_remote(&resolver, "192.0.2.2")), "node:node-b");
    let looped = resolve_remote(&resolver, "127.0.0.1");
    assert_eq!(
        id(&looped),
        "workload:shop/deployment/frontend",
        "{looped:#?}"
    );
    let host_netns = eastwatch::current_cookie().expect("cookie");
    let on_host = resolver.resolve(flow(
        "/system.slice/kubelet.service",
        Direction::Egress,
        "127.0.0.1",
        10248,
        host_netns,
    ));
    assert_eq!(id(&on_host.local), "systemd:kubelet.service");
    assert_eq!(id(&on_host.remote), "node:node-a");
    let external = resolve_remote(&resolver, "203.0.113.9");
    assert_eq!(id(&external), "external:203.0.113.9");
    assert_eq!(
        external.unresolved.as_deref(),
        Some("no pod, Service or node has 203.0.113.9")
    );

    // A hostNetwork pod: itself by its cgroup, its node by its address.
    let host_pod = resolver.resolve(flow(
        &pod_cgroup(NODE_AGENT_UID),
        Direction::Egress,
        "10.1.0.3",
        8080,
        host_netns,
    ));
    assert_eq!(
        id(&host_pod.local),
        "workload:kube-system/daemonset/node-agent"
    );
    assert_eq!(
        host_pod.local.identity.workload().map(|w| w.labels.clone()),
        Some([("app".to_owned(), "node-agent".to_owned())].into()),
        "no revision labels"
    );
    assert_eq!(id(&resolve_remote(&resolver, "192.0.2.1")), "node:node-a");
    let host_looped = resolver.resolve(flow(
        &pod_cgroup(NODE_AGENT_UID),
        Direction::Egress,
        "127.0.0.1",
        9100,
        host_netns,
    ));
    assert_eq!(
        id(&host_looped.remote),
        "node:node-a",
        "hostNetwork loopback is the node"
    );

    // A pod cgroup nobody knows.
    let stranger = resolver.resolve(flow(
        &pod_cgroup("00000000-0000-4000-8000-000000000000"),
        Direction::Egress,
        "10.1.0.3",
        80,
        7,
    ));
    assert_eq!(
        id(&stranger.local),
        "unknown:pod/00000000-0000-4000-8000-000000000000"
    );
    assert_eq!(
        stranger.local.unresolved.as_deref(),
        Some("no pod with UID 00000000-0000-4000-8000-000000000000 in the cluster")
    );

    // How it asked: node pods by field selector, the ReplicaSets once each.
    let requests = setup.api.requests();
    assert!(
        requests
            .iter()
            .any(|r| r == "LIST pods fields=spec.nodeName=node-a"),
        "{requests:#?}"
    );
    assert_eq!(
        setup
            .api
            .count_requests("GET replicasets shop/frontend-7d9c8b6f5"),
        1,
        "{requests:#?}"
    );
    assert_eq!(
        setup
            .api
            .count_requests("GET replicasets shop/api-5f6d7c8b9"),
        1,
        "{requests:#?}"
    );
    for resource in ["pods", "services", "endpointslices", "nodes"] {
        assert!(
            setup.api.count_requests(&format!("WATCH {resource}")) >= 1,
            "{resource}: {requests:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_added_modified_deleted_bookmarks_and_relists_after_410() {
    let setup = Setup::new();
    cluster(&setup.api);
    let resolver = IdentityResolver::start(&IdentityArgs {
        // Departed pods forgotten at once, so each change shows as it is
        // (the grace period is tested in the store and end to end).
        departed_grace: Duration::ZERO,
        ..setup.args()
    })
    .await
    .expect("start");
    synced(&resolver).await;

    // ADDED: a CronJob's Job's pod, on this node.
    let job_pod_uid = "8b3c4d5e-6f70-4b81-9c0d-1e2f3a4b5c6d";
    setup.api.apply(
        Resource::Jobs,
        json!({
            "metadata": {
                "name": "nightly-29384756", "namespace": "shop", "uid": objects::uid_from("job/nightly"),
                "creationTimestamp": objects::CREATED, "labels": {"app": "nightly"},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly",
                    "uid": objects::uid_from("cronjob/nightly"), "controller": true, "blockOwnerDeletion": true}],
            },
            "spec": {"completions": 1, "parallelism": 1, "backoffLimit": 6,
                "template": {"metadata": {"labels": {"app": "nightly"}}, "spec": {"containers": [{"name": "job", "image": "registry.example/nightly:1"}], "restartPolicy": "Never"}}},
            "status": {"active": 1, "startTime": objects::CREATED},
        }),
    );
    let mut job_pod = objects::pod(&PodSpec {
        namespace: "shop",
        deployment: "nightly",
        hash: "unused",
        suffix: "unused",
        uid: job_pod_uid,
        node: "node-a",
        ip: "10.1.0.7",
        service_account: "batch",
        labels: &json!({"app": "nightly", "job-name": "nightly-29384756", "batch.kubernetes.io/job-name": "nightly-29384756"}),
    });
    job_pod["metadata"]["name"] = "nightly-29384756-abcde".into();
    job_pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "nightly-29384756",
        "uid": objects::uid_from("job/nightly"), "controller": true, "blockOwnerDeletion": true}]);
    job_pod["metadata"]["labels"]
        .as_object_mut()
        .expect("labels")
        .remove("pod-template-hash");
    setup.api.apply(Resource::Pods, job_pod.clone());
    let job_flow = flow(
        &pod_cgroup(job_pod_uid),
        Direction::Egress,
        "10.96.0.10",
        80,
        9,
    );
    let resolved = eventually(
        "the job pod resolves",
        || resolver.resolve(job_flow.clone()),
        |r| id(&r.local) == "workload:shop/cronjob/nightly",
    )
    .await;
    let Identity::Workload(nightly) = &resolved.local.identity else {
        panic!()
    };
    assert_eq!(
        nightly.labels,
        [("app".to_owned(), "nightly".to_owned())].into(),
        "no per-run labels"
    );
    assert_eq!(nightly.service_account, "batch");

    // A BOOKMARK changes nothing and the watch goes on.
    setup.api.bookmark(Resource::Pods);

    // MODIFIED: api's pod gets a new IP; the old one is nobody's.
    let mut moved = objects::pod(&PodSpec {
        namespace: "shop",
        deployment: "api",
        hash: "5f6d7c8b9",
        suffix: "q8w2e",
        uid: API_UID,
        node: "node-b",
        ip: "10.1.0.4",
        service_account: "api",
        labels: &json!({"app": "api", "tier": "web"}),
    });
    moved["status"]["podIP"] = "10.1.0.4".into();
    setup.api.apply(Resource::Pods, moved);
    eventually(
        "the new IP is api's",
        || id(&resolve_remote(&resolver, "10.1.0.4")),
        |i| i == "workload:shop/deployment/api",
    )
    .await;
    assert_eq!(
        id(&resolve_remote(&resolver, "10.1.0.3")),
        "external:10.1.0.3"
    );

    // DELETED: the frontend pod goes; its cgroup no longer names a workload.
    setup
        .api
        .delete(Resource::Pods, "shop", "frontend-7d9c8b6f5-x2k4p");
    let gone = eventually(
        "the frontend pod is gone",
        || {
            resolver.resolve(flow(
                &pod_cgroup(FRONTEND_UID),
                Direction::Egress,
                "10.1.0.4",
                80,
                7,
            ))
        },
        |r| matches!(r.local.identity, Identity::Unknown { .. }),
    )
    .await;
    assert_eq!(
        gone.local.unresolved.as_deref(),
        Some(format!("no pod with UID {FRONTEND_UID} in the cluster").as_str())
    );

    // 410 Gone: the Service's history is compacted and its deletion never
    // reaches the watch; only the re-list shows it.
    let lists_before = setup.api.count_requests("LIST services");
    setup.api.delete_silently(Resource::Services, "shop", "api");
    setup.api.expire(Resource::Services);
    let after = eventually(
        "the Service is gone after a re-list",
        || resolve_remote(&resolver, "10.96.0.10"),
        |e| e.service.is_none(),
    )
    .await;
    assert_eq!(id(&after), "external:10.96.0.10");
    assert!(
        setup.api.count_requests("LIST services") > lists_before,
        "{:#?}",
        setup.api.requests()
    );
    synced(&resolver).await;

    // And the pods watch still follows changes after the bookmark.
    setup
        .api
        .delete(Resource::Pods, "shop", "nightly-29384756-abcde");
    eventually(
        "the job pod is deleted",
        || resolver.resolve(job_flow.clone()),
        |r| matches!(r.local.identity, Identity::Unknown { .. }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_down_api_server_keeps_the_last_state_and_says_why() {
    let setup = Setup::new();
    cluster(&setup.api);
    // Slow: lists take a while; meanwhile lookups say what they wait for.
    setup.api.set_list_delay(Duration::from_secs(2));
    let resolver = IdentityResolver::start(&setup.args()).await.expect("start");
    let waiting = resolve_remote(&resolver, "10.1.0.3");
    assert_eq!(id(&waiting), "external:10.1.0.3");
    let why = waiting.unresolved.expect("why");
    assert!(
        why.starts_with("no pod, Service or node has 10.1.0.3 so far: pods not listed yet"),
        "{why}"
    );
    synced(&resolver).await;
    setup.api.set_list_delay(Duration::ZERO);
    assert_eq!(
        id(&resolve_remote(&resolver, "10.1.0.3")),
        "workload:shop/deployment/api"
    );

    // Down: watches fail; what was listed still resolves, the rest says so.
    setup.api.set_down(true);
    let status = eventually(
        "the watches notice",
        || resolver.status(),
        |s| {
            s.states()
                .iter()
                .all(|(_, state)| *state == SyncState::Stale)
        },
    )
    .await;
    let text = serde_json::to_string(&status).expect("json");
    assert!(text.contains("unreachable since"), "{text}");
    assert_eq!(
        id(&resolve_remote(&resolver, "10.1.0.3")),
        "workload:shop/deployment/api"
    );
    let unknown = resolve_remote(&resolver, "10.1.0.99");
    let why = unknown.unresolved.expect("why");
    assert!(
        why.starts_with(
            "no pod, Service or node has 10.1.0.99 so far: Kubernetes API unreachable since"
        ) && why.contains("pods as listed at"),
        "{why}"
    );

    // Back: the next change arrives and the watches are healthy again.
    setup.api.set_down(false);
    setup
        .api
        .apply(Resource::Nodes, objects::node("node-c", "192.0.2.3"));
    eventually(
        "node-c arrives",
        || id(&resolve_remote(&resolver, "192.0.2.3")),
        |i| i == "node:node-c",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_never_reached_leaves_pods_unknown_with_the_reason() {
    let setup = Setup::new();
    let mut args = setup.args();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let text = std::fs::read_to_string(args.kubeconfig.as_ref().expect("path")).expect("read");
    let path = setup.dir.join("unreachable");
    std::fs::write(
        &path,
        text.replace(&setup.api.addr().port().to_string(), &port.to_string()),
    )
    .expect("write");
    args.kubeconfig = Some(path);
    let resolver = IdentityResolver::start(&args).await.expect("starts anyway");
    eventually(
        "unreachable",
        || resolver.status(),
        |s| {
            s.states()
                .iter()
                .all(|(_, state)| *state == SyncState::Unreachable)
        },
    )
    .await;
    let resolved = resolver.resolve(flow(
        &pod_cgroup(FRONTEND_UID),
        Direction::Egress,
        "10.1.0.3",
        80,
        7,
    ));
    assert_eq!(id(&resolved.local), format!("unknown:pod/{FRONTEND_UID}"));
    let why = resolved.local.unresolved.expect("why");
    assert!(
        why.starts_with(&format!(
            "no pod with UID {FRONTEND_UID}: Kubernetes API unreachable since"
        )) && why.contains("pods on this node never listed"),
        "{why}"
    );
    assert_eq!(resolved.local.container_id.as_deref(), Some(CONTAINER));
    assert_eq!(id(&resolved.remote), "external:10.1.0.3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_kubernetes_hosts_and_the_inventory_name_the_ends() {
    let setup = Setup::new();
    let inventory = setup.dir.join("inventory.yaml");
    std::fs::write(
        &inventory,
        "workloads:\n  - namespace: shop\n    kind: Deployment\n    name: api\n    serviceAccount: api\n    cgroups: [/system.slice/api.service]\n    ips: [10.9.0.3]\n\
         services:\n  - namespace: shop\n    name: api\n    ips: [10.9.96.10]\n    backends: [shop/deployment/api]\n",
    )
    .expect("write");
    let args = IdentityArgs {
        no_kubernetes: true,
        inventory: Some(inventory),
        cluster_name: Some("lab".into()),
        ..IdentityArgs::default()
    };
    let resolver = IdentityResolver::start(&args).await.expect("start");
    let served = resolver.resolve(flow(
        "/system.slice/api.service",
        Direction::Ingress,
        "10.9.0.1",
        8080,
        1,
    ));
    assert_eq!(id(&served.local), "workload:shop/deployment/api");
    assert_eq!(
        served.local.identity.workload().map(|w| w.cluster.as_str()),
        Some("lab")
    );
    assert_eq!(id(&served.remote), "external:10.9.0.1");
    assert_eq!(
        served.remote.unresolved.as_deref(),
        Some("not in the inventory; Kubernetes is off (turned off with --no-kubernetes)")
    );
    let via_service = resolver.resolve(flow(
        &format!("/system.slice/docker-{CONTAINER}.scope"),
        Direction::Egress,
        "10.9.96.10",
        80,
        1,
    ));
    assert_eq!(
        id(&via_service.local),
        format!("container:docker/{}", &CONTAINER[..12])
    );
    assert_eq!(id(&via_service.remote), "workload:shop/deployment/api");
    assert_eq!(
        via_service.remote.service.as_ref().map(|s| s.name.as_str()),
        Some("api")
    );
    let pod = resolver.resolve(flow(
        &pod_cgroup(API_UID),
        Direction::Egress,
        "10.9.0.3",
        80,
        1,
    ));
    assert_eq!(id(&pod.local), format!("unknown:pod/{API_UID}"));
    assert_eq!(
        pod.local.unresolved.as_deref(),
        Some(
            format!("pod UID {API_UID}, but Kubernetes is off (turned off with --no-kubernetes)")
                .as_str()
        )
    );
}
