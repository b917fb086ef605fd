//! Workload identity end to end: "pods" are real processes in
//! kubepods-shaped cgroups, each in its own network namespace with its pod
//! IP; a ClusterIP is real nftables DNAT; a local API server describes the
//! cluster to the agent's real kube-rs client; the agent's JSON names both
//! ends of every flow.

use eastwatch_tests::{
    Agent, Peer,
    events::FlowExt,
    kube_api::FakeApi,
    pods::{PodCgroup, PodNetwork, container_id, describe_shop, pod_uid},
};
use serde_json::{Value, json};
use std::time::Duration;

const NODE: &str = "e2e-node";

fn all_synced(event: &Value) -> bool {
    let resources = &event["identity"]["kubernetes"]["resources"];
    let resources = if resources.is_object() {
        resources
    } else {
        &event["kubernetes"]["resources"]
    };
    resources
        .as_object()
        .is_some_and(|r| !r.is_empty() && r.values().all(|v| v["state"] == "synced"))
}

/// Asserts an end is `shop` Deployment `name` with its service account and
/// SPIFFE ID.
fn assert_workload(end: &Value, name: &str, what: &str) {
    let identity = &end["identity"];
    assert_eq!(
        identity["id"],
        format!("workload:shop/deployment/{name}"),
        "{what}: {end}"
    );
    assert_eq!(identity["type"], "workload", "{what}");
    assert_eq!(identity["cluster"], "e2e", "{what}");
    assert_eq!(identity["namespace"], "shop", "{what}");
    assert_eq!(identity["kind"], "Deployment", "{what}");
    assert_eq!(identity["name"], name, "{what}");
    assert_eq!(identity["serviceAccount"], name, "{what}");
    assert_eq!(
        identity["spiffe_id"],
        format!("spiffe://cluster.local/ns/shop/sa/{name}"),
        "{what}"
    );
    assert_eq!(identity["labels"], json!({"app": name}), "{what}");
    assert!(identity.get("unresolved").is_none(), "{what}: {end}");
}

#[test]
fn frontend_to_api_by_pod_ip_and_cluster_ip_and_to_an_external_address() {
    eastwatch_tests::require_root();
    let net = PodNetwork::new(80, 8080);
    let (frontend_uid, api_uid) = (pod_uid("frontend"), pod_uid("api"));
    let frontend = PodCgroup::burstable(&frontend_uid, &container_id("fe"));
    let api_pod = PodCgroup::burstable(&api_uid, &container_id("api"));

    let kube = FakeApi::start();
    describe_shop(&kube, &frontend_uid, &api_uid, NODE);
    let dir = std::env::temp_dir().join(eastwatch_tests::unique("eastwatch-e2e-kube"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubeconfig = kube.write_kubeconfig(&dir, "e2e");

    let mut agent = Agent::start(&[
        "--kubeconfig",
        kubeconfig.to_str().expect("utf-8 path"),
        "--node-name",
        NODE,
    ]);
    let synced = agent.wait_for(Duration::from_secs(60), |e| {
        (e["event"] == "identity" || e["event"] == "ready") && all_synced(e)
    });
    assert!(
        synced.is_some(),
        "the agent never synced with the API server:\n{}",
        agent.stderr_text()
    );

    let server_addr = format!("{}:8080", PodNetwork::SERVER_IP);
    let mut server = Peer::spawn(
        api_pod.cgroup(),
        Some(&net.server),
        &["tcp-serve", "--listen", &server_addr, "--count", "2"],
    );
    server.ready();
    let direct = Peer::spawn(
        frontend.cgroup(),
        Some(&net.client),
        &["tcp-connect", "--to", &server_addr],
    );
    direct.finish();
    let cluster_ip = format!("{}:80", PodNetwork::CLUSTER_IP);
    let via_service = Peer::spawn(
        frontend.cgroup(),
        Some(&net.client),
        &["tcp-connect", "--to", &cluster_ip],
    );
    via_service.finish();
    server.finish();
    let nobody = format!("{}:5353", PodNetwork::NOBODY_IP);
    let outside = Peer::spawn(
        frontend.cgroup(),
        Some(&net.client),
        &["udp-send", "--to", &nobody],
    );
    outside.finish();
    let events = agent.stop();
    let _ = std::fs::remove_dir_all(&dir);

    let frontend_id = frontend.cgroup().id();
    let api_id = api_pod.cgroup().id();

    // frontend → api's pod IP.
    let direct = events.only_flow("frontend → api pod IP", |f| {
        f["cgroup"]["id"].as_u64() == Some(frontend_id)
            && f.remote_address() == PodNetwork::SERVER_IP
    });
    assert_eq!(
        (direct.direction(), direct.outcome()),
        ("egress", "established")
    );
    assert_workload(&direct["local"], "frontend", "direct, local");
    assert_eq!(
        direct["local"]["identity"]["pod"]["name"],
        "frontend-7d9c8b6f5-x2k4p"
    );
    assert_eq!(
        direct["local"]["identity"]["pod"]["uid"],
        frontend_uid.as_str()
    );
    assert_workload(&direct["remote"], "api", "direct, remote");
    assert_eq!(
        direct["remote"]["identity"]["pod"]["name"],
        "api-5f6d7c8b9-q8w2e"
    );
    assert!(
        direct["remote"]["identity"].get("service").is_none(),
        "{direct}"
    );

    // frontend → api's ClusterIP: seen before the DNAT, the Service named.
    let service = events.only_flow("frontend → api ClusterIP", |f| {
        f["cgroup"]["id"].as_u64() == Some(frontend_id)
            && f.remote_address() == PodNetwork::CLUSTER_IP
    });
    assert_eq!(
        (
            service.direction(),
            service.outcome(),
            service.remote_port()
        ),
        ("egress", "established", 80)
    );
    assert_workload(&service["local"], "frontend", "service, local");
    assert_workload(&service["remote"], "api", "service, remote");
    assert_eq!(
        service["remote"]["identity"]["service"],
        json!({"namespace": "shop", "name": "api"})
    );

    // api's side: both connections came from frontend.
    let ingress = events.only_flow("api ingress", |f| {
        f["cgroup"]["id"].as_u64() == Some(api_id)
    });
    assert_eq!(
        (ingress.direction(), ingress.remote_address()),
        ("ingress", PodNetwork::CLIENT_IP)
    );
    assert_workload(&ingress["local"], "api", "ingress, local");
    assert_workload(
        &ingress["remote"],
        "frontend",
        "ingress, remote (the caller)",
    );
    assert_eq!(
        events.final_count(
            |f| f["cgroup"]["id"].as_u64() == Some(api_id) && f.direction() == "ingress"
        ),
        2
    );

    // An address nobody owns.
    let external = events.only_flow("frontend → nobody", |f| {
        f["cgroup"]["id"].as_u64() == Some(frontend_id)
            && f.remote_address() == PodNetwork::NOBODY_IP
    });
    assert_workload(&external["local"], "frontend", "external, local");
    let remote = &external["remote"]["identity"];
    assert_eq!(
        remote["id"],
        format!("external:{}", PodNetwork::NOBODY_IP),
        "{external}"
    );
    assert_eq!(remote["type"], "external");
    assert_eq!(remote["address"], PodNetwork::NOBODY_IP);
    assert_eq!(
        remote["unresolved"],
        format!("no pod, Service or node has {}", PodNetwork::NOBODY_IP)
    );
    assert!(remote.get("spiffe_id").is_none());
}

#[test]
fn without_kubernetes_a_pod_cgroup_says_why_it_is_unknown() {
    eastwatch_tests::require_root();
    let net = PodNetwork::new(80, 8080);
    let uid = pod_uid("lonely");
    let container = container_id("lonely");
    let pod = PodCgroup::burstable(&uid, &container);
    let agent = Agent::start(&["--no-kubernetes"]);
    let nobody = format!("{}:5353", PodNetwork::NOBODY_IP);
    Peer::spawn(
        pod.cgroup(),
        Some(&net.client),
        &["udp-send", "--to", &nobody],
    )
    .finish();
    let events = agent.stop();
    let ready = events.of_kind("ready").next().expect("ready");
    assert_eq!(ready["identity"]["kubernetes"]["state"], "off");
    let flow = events.only_flow("lonely pod", |f| {
        f["cgroup"]["id"].as_u64() == Some(pod.cgroup().id())
    });
    let local = &flow["local"]["identity"];
    assert_eq!(local["id"], format!("unknown:pod/{uid}"), "{flow}");
    assert_eq!(local["container_id"], container.as_str());
    assert_eq!(
        local["unresolved"],
        format!("pod UID {uid}, but Kubernetes is off (turned off with --no-kubernetes)")
    );
    assert_eq!(
        flow["remote"]["identity"]["id"],
        format!("external:{}", PodNetwork::NOBODY_IP)
    );
}

#[test]
fn a_service_edge_is_learned_once_on_the_servers_port() {
    eastwatch_tests::require_root();
    let net = PodNetwork::new(80, 8080);
    let (frontend_uid, api_uid) = (pod_uid("frontend"), pod_uid("api"));
    let frontend = PodCgroup::burstable(&frontend_uid, &container_id("fe"));
    let api_pod = PodCgroup::burstable(&api_uid, &container_id("api"));
    let kube = FakeApi::start();
    describe_shop(&kube, &frontend_uid, &api_uid, NODE);
    let dir = eastwatch_tests::TempDir::new("eastwatch-e2e-service-edge");
    let kubeconfig = kube.write_kubeconfig(dir.path(), "e2e");
    let learned = dir.join("learned.yaml");
    let mut learner = Agent::spawn(&[
        "learn",
        "--out",
        learned.to_str().expect("utf-8 path"),
        "--kubeconfig",
        kubeconfig.to_str().expect("utf-8 path"),
        "--node-name",
        NODE,
        "--count-interval",
        "200ms",
    ]);
    let mut server = Peer::spawn(
        api_pod.cgroup(),
        Some(&net.server),
        &[
            "tcp-serve",
            "--listen",
            &format!("{}:8080", PodNetwork::SERVER_IP),
            "--count",
            "1",
        ],
    );
    server.ready();
    // Through the ClusterIP: the client dials 80, the server sees 8080.
    Peer::spawn(
        frontend.cgroup(),
        Some(&net.client),
        &[
            "tcp-connect",
            "--to",
            &format!("{}:80", PodNetwork::CLUSTER_IP),
        ],
    )
    .finish();
    server.finish();
    let (from, to) = (
        "workload:shop/deployment/frontend",
        "workload:shop/deployment/api",
    );
    assert!(
        learner
            .wait_for(Duration::from_secs(30), |e| e["event"] == "learned"
                && e["from"] == from
                && e["to"] == to)
            .is_some(),
        "never learned frontend -> api:\n{}",
        learner.stderr_text()
    );
    let events = learner.stop();
    let ports: Vec<u64> = events
        .of_kind("learned")
        .filter(|e| e["from"] == from && e["to"] == to)
        .filter_map(|e| e["port"].as_u64())
        .collect();
    assert_eq!(
        ports,
        [8080],
        "one connection, one edge on the server's port"
    );
    let text = std::fs::read_to_string(&learned).expect("learned baseline");
    assert!(
        text.contains("8080/tcp") && !text.contains("- 80/tcp"),
        "{text}"
    );
}
