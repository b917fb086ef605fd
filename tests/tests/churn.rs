//! Pod churn under a monitor: pods are real processes in kubepods-shaped
//! cgroups and network namespaces; the API look-alike sends live MODIFIED
//! (Terminating) and DELETED events as a rollout, a scale-down and an IP
//! reuse would. Flows are judged with the identities that held at the
//! time of the flow, not when the agent reads a count: a pod's last
//! connections, counted after its DELETED, raise nothing; an IP a new
//! workload reuses alerts for the new workload only.

// Test helpers fail the test by panicking, with the reason in the message.
#![allow(clippy::expect_used)]

use std::time::Duration;

use eastwatch_tests::{
    Agent, Peer, TempDir,
    events::is_alert,
    kube_api::{
        FakeApi, Resource,
        objects::{self, PodSpec},
    },
    pods::{PodCgroup, PodNetwork, container_id, pod_uid},
};
use serde_json::{Value, json};

const NODE: &str = "e2e-node";
const WAIT: Duration = Duration::from_secs(30);
/// Longer than the churn below takes: the last connections of a deleted
/// pod are counted after its DELETED.
const COUNT_INTERVAL: &str = "3s";

/// A pod of Deployment `deployment` in namespace `shop`.
struct Pod {
    uid: String,
    deployment: &'static str,
    hash: &'static str,
    suffix: &'static str,
    ip: &'static str,
    cgroup: Option<PodCgroup>,
}

impl Pod {
    fn new(
        deployment: &'static str,
        hash: &'static str,
        suffix: &'static str,
        ip: &'static str,
    ) -> Self {
        let uid = pod_uid(&format!("{deployment}-{suffix}"));
        let cgroup = PodCgroup::burstable(&uid, &container_id(suffix));
        Self {
            uid,
            deployment,
            hash,
            suffix,
            ip,
            cgroup: Some(cgroup),
        }
    }

    fn name(&self) -> String {
        format!("{}-{}-{}", self.deployment, self.hash, self.suffix)
    }

    fn object(&self) -> Value {
        objects::pod(&PodSpec {
            namespace: "shop",
            deployment: self.deployment,
            hash: self.hash,
            suffix: self.suffix,
            uid: &self.uid,
            node: NODE,
            ip: self.ip,
            service_account: self.deployment,
            labels: &json!({"app": self.deployment}),
        })
    }

    /// ADDED: the pod with its owners.
    fn describe(&self, api: &FakeApi) {
        api.apply(
            Resource::Deployments,
            objects::deployment("shop", self.deployment, &json!({"app": self.deployment})),
        );
        api.apply(
            Resource::ReplicaSets,
            objects::replicaset(
                "shop",
                self.deployment,
                self.hash,
                &json!({"app": self.deployment}),
            ),
        );
        api.apply(Resource::Pods, self.object());
    }

    fn cgroup(&self) -> &eastwatch_tests::TestCgroup {
        self.cgroup.as_ref().expect("pod still running").cgroup()
    }

    /// As kubelet and the API server end a pod: Terminating (MODIFIED),
    /// its container stopped and its cgroup removed, then DELETED.
    fn terminate(&mut self, api: &FakeApi) {
        let mut terminating = self.object();
        terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
        terminating["metadata"]["deletionGracePeriodSeconds"] = 30.into();
        api.apply(Resource::Pods, terminating);
        drop(self.cgroup.take());
        api.delete(Resource::Pods, "shop", &self.name());
    }
}

fn baseline(dir: &TempDir, edges: &[(&str, &str, u16)]) -> String {
    let mut text = String::from(
        "apiVersion: eastwatch.io/v1\nkind: Baseline\nmetadata:\n  name: churn\nspec:\n  edges:\n",
    );
    for (from, to, port) in edges {
        text.push_str(&format!(
            "    - from: {{namespace: shop, workload: {{kind: Deployment, name: {from}}}}}\n      \
             to: {{namespace: shop, workload: {{kind: Deployment, name: {to}}}}}\n      \
             ports: [\"{port}/tcp\"]\n"
        ));
    }
    let path = dir.join("baseline.yaml");
    std::fs::write(&path, text).expect("write baseline");
    path.to_str().expect("utf-8 path").to_owned()
}

fn monitor(api: &FakeApi, dir: &TempDir, baseline: &str) -> Agent {
    let kubeconfig = api.write_kubeconfig(dir.path(), "e2e");
    Agent::spawn(&[
        "monitor",
        "--baseline",
        baseline,
        "--kubeconfig",
        kubeconfig.to_str().expect("utf-8 path"),
        "--node-name",
        NODE,
        "--count-interval",
        COUNT_INTERVAL,
        "--log",
        "info,eastwatch::identity::kube=debug",
    ])
}

/// Waits until the agent applied `pod` from both pod watches (this
/// node's and the cluster's).
fn wait_known(agent: &Agent, pod: &Pod) {
    for watch in ["local_pods", "pods"] {
        let needle = format!("watch {watch}: applied shop/{}", pod.name());
        assert!(
            agent.wait_for_log(WAIT, &needle),
            "the agent never saw {needle:?}:\n{}",
            agent.stderr_text()
        );
    }
}

/// An alert's edge, `(from, to, port)`, from its `details.edge`
/// (`FROM -> TO PORT/TRANSPORT`).
fn edge(alert: &Value) -> (String, String, u64) {
    let text = alert["details"]["edge"].as_str().unwrap_or_default();
    let (from, rest) = text.split_once(" -> ").unwrap_or_default();
    let (to, port) = rest.rsplit_once(' ').unwrap_or_default();
    let port = port.split('/').next().and_then(|p| p.parse().ok());
    (from.to_owned(), to.to_owned(), port.unwrap_or_default())
}

/// An identity that is one of this test's pods or addresses.
fn ours(id: &str, uids: &[&str]) -> bool {
    id.starts_with("workload:shop/")
        || id.starts_with("external:10.78.0.")
        || uids.iter().any(|uid| id.contains(uid))
}

/// Alerts about this test's traffic: `(from, to, port)` by identity, and
/// the alert.
fn our_alerts(events: &[Value], uids: &[&str]) -> Vec<(String, String, u64, Value)> {
    events
        .iter()
        .filter(|e| is_alert(e))
        .filter_map(|e| {
            let (from, to, port) = edge(e);
            (ours(&from, uids) || ours(&to, uids)).then(|| (from, to, port, e.clone()))
        })
        .collect()
}

fn connect(pod: &Pod, net: &eastwatch_tests::TestNetns, to: &str, count: u64) {
    Peer::spawn(
        pod.cgroup(),
        Some(net),
        &["tcp-connect", "--to", to, "--count", &count.to_string()],
    )
    .finish();
}

#[test]
fn a_rollout_and_a_scale_down_raise_no_alert() {
    eastwatch_tests::require_root();
    let net = PodNetwork::new(80, 8080);
    let api = FakeApi::start();
    api.apply(Resource::Nodes, objects::node(NODE, "192.0.2.1"));
    let mut old_frontend = Pod::new("frontend", "7d9c8b6f5", "r1old", PodNetwork::CLIENT_IP);
    let mut server = Pod::new("api", "5f6d7c8b9", "r1api", PodNetwork::SERVER_IP);
    old_frontend.describe(&api);
    server.describe(&api);
    let dir = TempDir::new("churn-rollout");
    let baseline = baseline(&dir, &[("frontend", "api", 8080)]);
    let agent = monitor(&api, &dir, &baseline);

    let server_addr = format!("{}:8080", PodNetwork::SERVER_IP);
    let mut listener = Peer::spawn(
        server.cgroup(),
        Some(&net.server),
        &["tcp-serve", "--listen", &server_addr, "--count", "40"],
    );
    listener.ready();

    // Rollout: the old frontend pod calls api, and is replaced within a
    // count interval of its last connection.
    connect(&old_frontend, &net.client, &server_addr, 20);
    old_frontend.terminate(&api);
    let new_frontend = Pod::new("frontend", "6c8d9e7f4", "r1new", PodNetwork::CLIENT_IP);
    new_frontend.describe(&api);
    wait_known(&agent, &new_frontend);
    connect(&new_frontend, &net.client, &server_addr, 20);

    // Scale-down: api's last pod goes right after its last connection.
    listener.finish();
    server.terminate(&api);

    let events = agent.stop();
    let uids = [
        old_frontend.uid.as_str(),
        new_frontend.uid.as_str(),
        server.uid.as_str(),
    ];
    let alerts = our_alerts(&events.all, &uids);
    let figures: Vec<_> = alerts.iter().map(|(f, t, p, _)| (f, t, p)).collect();
    println!(
        "churn rollout+scale-down: false alerts {}: {figures:?}",
        alerts.len()
    );
    assert!(
        alerts.is_empty(),
        "a rollout and a scale-down are not lateral movement: {:#?}",
        alerts.iter().map(|a| &a.3).collect::<Vec<_>>()
    );
    // The traffic was seen and judged: the baseline's one rule was used.
    let summary = events.summary();
    assert_eq!(summary["unused_rules"], json!([]), "{summary}");
}

#[test]
fn a_reused_ip_alerts_for_the_new_workload_only() {
    eastwatch_tests::require_root();
    let net = PodNetwork::new(80, 8080);
    let api = FakeApi::start();
    api.apply(Resource::Nodes, objects::node(NODE, "192.0.2.1"));
    let mut frontend = Pod::new("frontend", "7d9c8b6f5", "ipold", PodNetwork::CLIENT_IP);
    let server = Pod::new("api", "5f6d7c8b9", "ipapi", PodNetwork::SERVER_IP);
    frontend.describe(&api);
    server.describe(&api);
    let dir = TempDir::new("churn-reuse");
    let baseline = baseline(&dir, &[("frontend", "api", 8080)]);
    let mut agent = monitor(&api, &dir, &baseline);

    let mut listeners = Vec::new();
    for port in [8080, 9090] {
        let addr = format!("{}:{port}", PodNetwork::SERVER_IP);
        let mut listener = Peer::spawn(
            server.cgroup(),
            Some(&net.server),
            &["tcp-serve", "--listen", &addr],
        );
        listener.ready();
        listeners.push(listener);
    }
    // frontend's everyday calls, then it goes, and a scanner pod gets its
    // IP before frontend's last connections are counted.
    connect(
        &frontend,
        &net.client,
        &format!("{}:8080", PodNetwork::SERVER_IP),
        20,
    );
    frontend.terminate(&api);
    let scanner = Pod::new("scanner", "5b7c9d2e1", "ipnew", PodNetwork::CLIENT_IP);
    scanner.describe(&api);
    wait_known(&agent, &scanner);
    // The scanner probes api on a port frontend never used.
    connect(
        &scanner,
        &net.client,
        &format!("{}:9090", PodNetwork::SERVER_IP),
        3,
    );
    let (api_id, scanner_id) = (
        "workload:shop/deployment/api",
        "workload:shop/deployment/scanner",
    );
    let found = agent.wait_for(WAIT, |e| {
        is_alert(e) && edge(e) == (scanner_id.to_owned(), api_id.to_owned(), 9090)
    });
    drop(listeners);
    let events = agent.stop();
    let uids = [
        frontend.uid.as_str(),
        scanner.uid.as_str(),
        server.uid.as_str(),
    ];
    let alerts = our_alerts(&events.all, &uids);
    let expected = |(from, to, port, _): &&(String, String, u64, Value)| {
        from == scanner_id && to == api_id && *port == 9090
    };
    let false_alerts: Vec<_> = alerts
        .iter()
        .filter(|a| !expected(a))
        .map(|(f, t, p, _)| (f, t, p))
        .collect();
    let missed = usize::from(found.is_none() || !alerts.iter().any(|a| expected(&a)));
    println!(
        "churn IP reuse: false alerts {}: {false_alerts:?}; missed alerts {missed}",
        false_alerts.len()
    );
    assert_eq!(
        missed,
        0,
        "no alert for scanner -> api:9090:\n{}",
        events.dump()
    );
    assert!(
        false_alerts.is_empty(),
        "only the new workload's connection alerts: {:#?}",
        alerts.iter().map(|a| &a.3).collect::<Vec<_>>()
    );
}
