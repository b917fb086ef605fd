//! Alerts to a real OTLP collector: two simulated pods (processes in their
//! own cgroups and network namespaces, joined by a veth pair), the real
//! agent in monitor mode with a baseline that allows nothing, a real
//! connection, and the log record a real OTLP receiver (opentelemetry-proto
//! types served with tonic, or decoded from OTLP/HTTP) gets.
//!
//! The resolver on this branch is the host fallback: local ends are
//! `cgroup:<path>`, remote ends `external:<ip>`; `k8s.*` attributes of
//! workloads are covered by the mapping's unit tests.

// Test helpers fail the test by panicking, with the reason in the message.
#![allow(clippy::expect_used)]

use std::{
    collections::BTreeSet,
    process::Command,
    time::{Duration, SystemTime},
};

use eastwatch_tests::{
    Agent, Peer, TempDir, TestCgroup, VethPair,
    agent::agent_binary,
    kube_api::FakeApi,
    otlp::{Collector, Protocol, ReceivedLog, TlsFiles},
    pods::{PodCgroup, PodNetwork, container_id, describe_shop, pod_uid},
};
use serde_json::Value;

const UNAUTHORIZED: &str = "eastwatch.alert.unauthorized_flow";
const GAP: &str = "eastwatch.alert.visibility_gap";
const WAIT: Duration = Duration::from_secs(30);
/// What the agent logs when the collector did not take a batch.
const EXPORT_FAILED: &str = "OTLP export failed";

/// Client and server pods.
struct Pods {
    pair: VethPair,
    client: TestCgroup,
    server: TestCgroup,
}

impl Pods {
    fn new() -> Self {
        Self {
            pair: VethPair::new(),
            client: TestCgroup::new("client"),
            server: TestCgroup::new("server"),
        }
    }

    fn serve(&self, port: u16) -> Peer {
        let mut server = Peer::spawn(
            &self.server,
            Some(&self.pair.b),
            &["tcp-serve", "--listen", &format!("{}:{port}", VethPair::B4)],
        );
        server.ready();
        server
    }

    /// One connection to the server's `port`; returns the client's pid.
    fn connect(&self, port: u16) -> u32 {
        let peer = Peer::spawn(
            &self.client,
            Some(&self.pair.a),
            &["tcp-connect", "--to", &format!("{}:{port}", VethPair::B4)],
        );
        let pid = peer.pid();
        peer.finish();
        pid
    }

    /// A connect the server's node refuses (nothing listens on `port`).
    fn attempt(&self, port: u16) {
        Peer::spawn(
            &self.client,
            Some(&self.pair.a),
            &[
                "tcp-connect",
                "--to",
                &format!("{}:{port}", VethPair::B4),
                "--expect-refused",
            ],
        )
        .finish();
    }

    fn client_id(&self) -> String {
        format!("cgroup:{}", self.client.path())
    }
}

fn empty_baseline(dir: &TempDir) -> String {
    let path = dir.join("baseline.yaml");
    std::fs::write(
        &path,
        "apiVersion: eastwatch.io/v1\nkind: Baseline\nmetadata:\n  name: nothing\nspec:\n  edges: []\n",
    )
    .expect("write baseline");
    path.to_str().expect("path").to_owned()
}

/// `eastwatch monitor` exporting to `collector` with `extra` flags.
fn monitor(dir: &TempDir, collector: &Collector, extra: &[&str], env: &[(&str, &str)]) -> Agent {
    let baseline = empty_baseline(dir);
    let spool = dir.join("spool");
    let endpoint = collector.endpoint();
    let mut args = vec![
        "monitor",
        "--baseline",
        &baseline,
        "--count-interval",
        "200ms",
        "--fan-out-threshold",
        "100000",
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        collector.protocol_flag(),
        "--spool-dir",
        spool.to_str().expect("path"),
        "--health-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    Agent::spawn_with_env(&args, env)
}

/// The client-side (egress) unauthorized-flow record for `port`.
fn egress_to(port: u16, client_id: &str) -> impl Fn(&ReceivedLog) -> bool + '_ {
    move |log: &ReceivedLog| {
        log.event_name() == UNAUTHORIZED
            && log.int("destination.port") == Some(i64::from(port))
            && log.attr("eastwatch.flow.observed").as_deref() == Some("egress")
            && log.attr("eastwatch.source.id").as_deref() == Some(client_id)
            && log.attr("eastwatch.details.report").as_deref() == Some("first")
    }
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .expect("after the epoch")
        .as_nanos() as u64
}

fn probe(url: &str) -> bool {
    Command::new(agent_binary())
        .args(["probe", "--url", url])
        .status()
        .expect("run eastwatch probe")
        .success()
}

/// Asserts what every unauthorized-flow record of the client's connection
/// carries; returns the latency from the connection to receipt.
fn assert_unauthorized_record(
    log: &ReceivedLog,
    pods: &Pods,
    port: u16,
    client_pid: u32,
    connected_at: SystemTime,
) -> Duration {
    let r = &log.record;
    assert_eq!(log.event_name(), UNAUTHORIZED);
    // T1210 on an ordinary port: medium, OTLP ERROR (17).
    assert_eq!(r.severity_number, 17, "{log:#?}");
    assert_eq!(r.severity_text, "medium");
    assert!(
        log.body()
            .starts_with(&format!("unauthorized tcp flow {}", pods.client_id())),
        "{}",
        log.body()
    );
    assert!(r.time_unix_nano >= unix_nanos(connected_at), "{log:#?}");
    assert!(r.observed_time_unix_nano >= r.time_unix_nano, "{log:#?}");
    let expect = |key: &str, value: &str| {
        assert_eq!(log.attr(key).as_deref(), Some(value), "{key} in {log:#?}");
    };
    expect("source.address", VethPair::A4);
    assert!(log.int("source.port").is_some_and(|p| p > 0), "{log:#?}");
    expect("destination.address", VethPair::B4);
    assert_eq!(log.int("destination.port"), Some(i64::from(port)));
    expect("network.transport", "tcp");
    expect("network.type", "ipv4");
    assert_eq!(log.int("process.pid"), Some(i64::from(client_pid)));
    expect("process.executable.name", "eastwatch-peer");
    expect("eastwatch.source.id", &pods.client_id());
    expect("eastwatch.source.type", "cgroup");
    expect("eastwatch.source.cgroup", pods.client.path());
    expect(
        "eastwatch.destination.id",
        &format!("external:{}", VethPair::B4),
    );
    expect("eastwatch.destination.type", "external");
    expect("eastwatch.flow.outcome", "established");
    expect("eastwatch.mode", "monitor");
    expect("eastwatch.verdict", "unauthorized");
    expect("eastwatch.alert.kind", "unauthorized_flow");
    assert!(
        log.attr("eastwatch.baseline.digest")
            .is_some_and(|d| d.starts_with("sha256:")),
        "{log:#?}"
    );
    expect("threat.tactic.id", "TA0008");
    expect("threat.technique.id", "T1210");
    expect("threat.framework", "MITRE ATT&CK");
    assert!(log.int("eastwatch.alert.sequence").is_some(), "{log:#?}");
    // No workload on this host: no k8s.* of the observed side.
    assert_eq!(log.attr("k8s.pod.name"), None);
    // Resource.
    assert_eq!(
        log.resource.get("service.version").map(String::as_str),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(log.resource.contains_key("host.name"), "{log:#?}");
    assert_eq!(log.scope, "eastwatch");
    let judged = SystemTime::UNIX_EPOCH + Duration::from_nanos(r.time_unix_nano);
    eprintln!(
        "  connection to judgement {:?}, judgement to receipt {:?}",
        judged.duration_since(connected_at).unwrap_or_default(),
        log.received.duration_since(judged).unwrap_or_default()
    );
    log.received
        .duration_since(connected_at)
        .unwrap_or(Duration::ZERO)
}

#[test]
fn an_unauthorized_flow_reaches_a_grpc_collector_with_every_attribute() {
    let pods = Pods::new();
    let _server = pods.serve(8443);
    let collector = Collector::start(Protocol::Grpc);
    let dir = TempDir::new("otlp-grpc");
    let mut agent = monitor(
        &dir,
        &collector,
        &["--otlp-header", "authorization=Bearer test-token"],
        &[
            ("NODE_NAME", "test-node"),
            ("EASTWATCH_CLUSTER_NAME", "test-cluster"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
        ],
    );
    let ready = agent
        .wait_for(WAIT, |e| e["event"] == "ready")
        .expect("ready");
    assert_eq!(ready["otlp"], true, "{ready}");
    let health = ready["health"].as_str().expect("health address").to_owned();
    assert!(health.starts_with("127.0.0.1:"), "{health}");
    assert!(probe(&format!("http://{health}/readyz")), "readyz");
    assert!(probe(&format!("http://{health}/healthz")), "healthz");

    let connected_at = SystemTime::now();
    let client_pid = pods.connect(8443);
    let client_id = pods.client_id();
    let logs = collector.wait_logs(WAIT, |logs| logs.iter().any(egress_to(8443, &client_id)));
    let log = logs
        .iter()
        .find(|l| egress_to(8443, &client_id)(l))
        .unwrap_or_else(|| panic!("no record:\n{logs:#?}\n{}", agent.stderr_text()));
    let latency = assert_unauthorized_record(log, &pods, 8443, client_pid, connected_at);
    eprintln!("alert latency (connection to receipt, OTLP/gRPC): {latency:?}");
    assert_eq!(
        log.headers.get("authorization").map(String::as_str),
        Some("Bearer test-token")
    );
    assert_eq!(
        log.resource.get("service.name").map(String::as_str),
        Some("eastwatch")
    );
    assert_eq!(
        log.resource.get("k8s.node.name").map(String::as_str),
        Some("test-node")
    );
    assert_eq!(
        log.resource.get("k8s.cluster.name").map(String::as_str),
        Some("test-cluster")
    );

    // The server's node saw the same connection coming in: the
    // destination is the local end there, and the process its listener's.
    let server_id = format!("cgroup:{}", pods.server.path());
    let ingress = collector.wait_logs(WAIT, |logs| {
        logs.iter().any(|l| {
            l.event_name() == UNAUTHORIZED
                && l.attr("eastwatch.destination.id").as_deref() == Some(server_id.as_str())
        })
    });
    let ingress = ingress
        .iter()
        .find(|l| l.attr("eastwatch.destination.id").as_deref() == Some(server_id.as_str()))
        .expect("ingress record");
    assert_eq!(
        ingress.attr("eastwatch.flow.observed").as_deref(),
        Some("ingress")
    );
    assert_eq!(
        ingress.attr("eastwatch.source.id"),
        Some(format!("external:{}", VethPair::A4))
    );
    assert_eq!(ingress.int("destination.port"), Some(8443));
    assert_eq!(ingress.int("process.pid"), Some(i64::from(_server.pid())));

    // Metrics: the names, with bounded attributes only.
    let wanted = [
        "eastwatch.flows.observed",
        "eastwatch.flows.judged",
        "eastwatch.alerts",
        "eastwatch.kernel.flow_map.entries",
        "eastwatch.alerts.exported",
    ];
    let points = collector.wait_points(WAIT, |points| {
        wanted
            .iter()
            .all(|name| points.iter().any(|p| p.metric == *name))
            && points.iter().any(|p| {
                p.metric == "eastwatch.flows.judged"
                    && p.attributes.get("eastwatch.verdict").map(String::as_str)
                        == Some("unauthorized")
                    && p.attributes.get("eastwatch.workload").map(String::as_str)
                        == Some("cgroup:/eastwatch-tests")
            })
    });
    for name in wanted {
        assert!(
            points.iter().any(|p| p.metric == name),
            "metric {name} missing: {:?}",
            points.iter().map(|p| &p.metric).collect::<BTreeSet<_>>()
        );
    }
    let allowed_keys: BTreeSet<&str> = [
        "eastwatch.workload",
        "eastwatch.verdict",
        "eastwatch.alert.kind",
        "eastwatch.alert.severity",
        "eastwatch.kernel.counter",
        "eastwatch.end",
        "eastwatch.file",
        "eastwatch.result",
    ]
    .into();
    for point in &points {
        for (key, value) in &point.attributes {
            assert!(allowed_keys.contains(key.as_str()), "{point:?}");
            assert!(
                !value.contains("10.77.") && !value.contains(pods.client.path()),
                "no addresses or pod cgroups in metric attributes: {point:?}"
            );
        }
    }
    assert!(points.iter().any(|p| {
        p.metric == "eastwatch.alerts"
            && p.attributes.get("eastwatch.alert.kind").map(String::as_str)
                == Some("unauthorized_flow")
            && p.value > 0
    }));
    assert_eq!(
        points
            .iter()
            .find(|p| p.metric == "eastwatch.flows.observed")
            .and_then(|p| p.resource.get("k8s.node.name"))
            .map(String::as_str),
        Some("test-node")
    );

    let events = agent.stop();
    let export = &events.summary()["export"];
    assert!(export["exported"].as_u64().unwrap_or(0) >= 2, "{export}");
    assert_eq!(export["pending"], 0, "{export}");
    assert_eq!(export["dropped"], 0, "{export}");
}

#[test]
fn the_otel_environment_alone_exports_over_otlp_http() {
    let pods = Pods::new();
    let _server = pods.serve(8444);
    let collector = Collector::start(Protocol::Http);
    let dir = TempDir::new("otlp-http");
    let baseline = empty_baseline(&dir);
    let spool = dir.join("spool");
    let endpoint = collector.endpoint();
    // No eastwatch export flag at all: the standard variables only.
    let mut agent = Agent::spawn_with_env(
        &[
            "monitor",
            "--baseline",
            &baseline,
            "--count-interval",
            "200ms",
            "--fan-out-threshold",
            "100000",
            "--spool-dir",
            spool.to_str().expect("path"),
            "--health-listen",
            "127.0.0.1:0",
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-soc-token=env-token"),
            ("OTEL_SERVICE_NAME", "soc-eastwatch"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment.name=test,k8s.cluster.name=from-env",
            ),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
        ],
    );
    let connected_at = SystemTime::now();
    let client_pid = pods.connect(8444);
    let client_id = pods.client_id();
    let logs = collector.wait_logs(WAIT, |logs| logs.iter().any(egress_to(8444, &client_id)));
    let log = logs
        .iter()
        .find(|l| egress_to(8444, &client_id)(l))
        .unwrap_or_else(|| panic!("no record:\n{logs:#?}\n{}", agent.stderr_text()));
    let latency = assert_unauthorized_record(log, &pods, 8444, client_pid, connected_at);
    eprintln!("alert latency (connection to receipt, OTLP/HTTP): {latency:?}");
    assert_eq!(
        log.headers.get("x-soc-token").map(String::as_str),
        Some("env-token")
    );
    assert_eq!(
        log.resource.get("service.name").map(String::as_str),
        Some("soc-eastwatch")
    );
    assert_eq!(
        log.resource
            .get("deployment.environment.name")
            .map(String::as_str),
        Some("test")
    );
    assert_eq!(
        log.resource.get("k8s.cluster.name").map(String::as_str),
        Some("from-env")
    );
    let points = collector.wait_points(WAIT, |p| {
        p.iter().any(|p| p.metric == "eastwatch.flows.observed")
    });
    assert!(
        points
            .iter()
            .any(|p| p.metric == "eastwatch.flows.observed"),
        "metrics over OTLP/HTTP"
    );
    assert!(
        agent
            .wait_for(WAIT, printed_by(pods.client.path()))
            .is_some()
    );
    agent.stop();
}

/// An unauthorized-flow alert the agent printed about `cgroup`'s traffic.
fn printed_by(cgroup: &str) -> impl Fn(&Value) -> bool + '_ {
    move |e: &Value| {
        e["event"] == UNAUTHORIZED && e["source"]["identity"]["path"].as_str() == Some(cgroup)
    }
}

/// The ports of our client's first (egress) alerts, in receipt order.
fn received_ports(collector: &Collector, client_id: &str) -> Vec<u16> {
    collector
        .logs()
        .iter()
        .filter(|l| {
            l.event_name() == UNAUTHORIZED
                && l.attr("eastwatch.source.id").as_deref() == Some(client_id)
                && l.attr("eastwatch.flow.observed").as_deref() == Some("egress")
        })
        .filter_map(|l| l.int("destination.port").map(|p| p as u16))
        .collect()
}

/// Waits until the agent printed the first alert for each port (so it is
/// in the spool).
fn wait_printed(agent: &mut Agent, client_id: &str, ports: &[u16]) {
    for port in ports {
        let printed = agent.wait_for(WAIT, |e| {
            e["event"] == UNAUTHORIZED
                && e["details"]["report"] == "first"
                && e["source"]["identity"]["path"].as_str() == client_id.strip_prefix("cgroup:")
                && e["flow"]["destination"]
                    .as_str()
                    .is_some_and(|d| d.ends_with(&format!(":{port}")))
        });
        assert!(printed.is_some(), "no alert for port {port}");
    }
}

#[test]
fn collector_down_then_up_every_alert_arrives_once_in_order_across_a_restart() {
    let pods = Pods::new();
    let client_id = pods.client_id();
    let mut collector = Collector::start(Protocol::Grpc);
    let dir = TempDir::new("otlp-down");
    let mut agent = monitor(&dir, &collector, &[], &[]);

    // Down for a while: four unauthorized attempts wait in the spool.
    collector.down();
    let first: Vec<u16> = (31001..=31004).collect();
    for port in &first {
        pods.attempt(*port);
    }
    wait_printed(&mut agent, &client_id, &first);
    assert!(
        agent.wait_for_log(WAIT, EXPORT_FAILED),
        "the agent never tried the collector:\n{}",
        agent.stderr_text()
    );
    assert!(
        received_ports(&collector, &client_id).is_empty(),
        "the collector was down"
    );
    collector.up();
    collector.wait_logs(WAIT, |_| {
        received_ports(&collector, &client_id).len() >= first.len()
    });
    assert_eq!(received_ports(&collector, &client_id), first);

    // Down again, and the agent restarts before it comes back: the spool
    // on disk carries the alerts over.
    collector.down();
    let second: Vec<u16> = (31005..=31006).collect();
    for port in &second {
        pods.attempt(*port);
    }
    wait_printed(&mut agent, &client_id, &second);
    let events = agent.stop();
    let export = &events.summary()["export"];
    assert!(
        export["export_failures"].as_u64().unwrap_or(0) > 0,
        "{export}"
    );
    assert!(export["pending"].as_u64().unwrap_or(0) >= 2, "{export}");
    collector.up();
    let agent = monitor(&dir, &collector, &[], &[]);
    pods.attempt(31007);
    let all: Vec<u16> = (31001..=31007).collect();
    collector.wait_logs(WAIT, |_| {
        received_ports(&collector, &client_id).len() >= all.len()
    });
    // Once the agent has exited, nothing more can arrive: a duplicate
    // would be here by now.
    let events = agent.stop();
    assert_eq!(
        received_ports(&collector, &client_id),
        all,
        "every alert exactly once, in order\n{}",
        events.stderr
    );
    let sequences: Vec<i64> = collector
        .logs()
        .iter()
        .filter_map(|l| l.int("eastwatch.alert.sequence"))
        .collect();
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "spool order survives the restart: {sequences:?}"
    );
}

#[test]
fn a_full_spool_counts_the_loss_and_raises_a_visibility_gap() {
    let pods = Pods::new();
    let client_id = pods.client_id();
    let mut collector = Collector::start(Protocol::Grpc);
    let dir = TempDir::new("otlp-full");
    let mut agent = monitor(&dir, &collector, &["--spool-max-bytes", "65536"], &[]);
    collector.down();
    // 150 distinct unauthorized paths: more than 64 KiB of alerts.
    Peer::spawn(
        &pods.client,
        Some(&pods.pair.a),
        &[
            "tcp-sweep",
            "--to",
            VethPair::B4,
            "--first",
            "32001",
            "--last",
            "32150",
        ],
    )
    .finish();
    let last: Vec<u16> = vec![32150];
    wait_printed(&mut agent, &client_id, &last);
    collector.up();
    let logs = collector.wait_logs(WAIT, |logs| {
        logs.iter().any(|l| {
            l.event_name() == GAP
                && l.attr("eastwatch.verdict").as_deref() == Some("spool-overflow")
        })
    });
    let gap = logs
        .iter()
        .find(|l| l.event_name() == GAP)
        .unwrap_or_else(|| panic!("no visibility gap:\n{}", agent.stderr_text()));
    // High: alerts were lost.
    assert_eq!(gap.record.severity_number, 19, "{gap:#?}");
    let dropped: u64 = gap
        .attr("eastwatch.details.dropped")
        .and_then(|d| d.parse().ok())
        .expect("dropped count");
    assert!(dropped > 0, "{gap:#?}");
    assert!(gap.body().contains("dropped"), "{}", gap.body());

    // Nothing lost silently: every alert the agent raised was either
    // received or counted as dropped.
    let events = agent.stop();
    let raised = events.of_kind(UNAUTHORIZED).count() as u64;
    let logs = collector.logs();
    let received = logs
        .iter()
        .filter(|l| l.event_name() == UNAUTHORIZED)
        .count() as u64;
    let counted: u64 = logs
        .iter()
        .filter(|l| l.event_name() == GAP)
        .filter_map(|l| l.attr("eastwatch.details.dropped.unauthorized_flow"))
        .filter_map(|d| d.parse::<u64>().ok())
        .sum();
    assert!(counted > 0);
    assert_eq!(
        raised,
        received + counted,
        "raised = received + counted dropped"
    );
    let export = &events.summary()["export"];
    assert!(
        export["dropped"].as_u64().unwrap_or(0) >= counted,
        "{export}"
    );
    assert!(export["gap_alerts"].as_u64().unwrap_or(0) >= 1, "{export}");
    // The received ones are in order.
    let ports = received_ports(&collector, &client_id);
    assert!(ports.windows(2).all(|w| w[0] < w[1]), "{ports:?}");
}

#[test]
fn a_kernel_overflow_in_observe_becomes_a_visibility_gap_record() {
    let collector = Collector::start(Protocol::Grpc);
    let dir = TempDir::new("otlp-loss");
    let spool = dir.join("spool");
    let endpoint = collector.endpoint();
    let agent = Agent::start(&[
        "--ring-buffer-bytes",
        "4096",
        "--otlp-endpoint",
        &endpoint,
        "--spool-dir",
        spool.to_str().expect("path"),
        "--health-listen",
        "off",
    ]);
    let sweeper = TestCgroup::new("flood");
    agent.signal(libc::SIGSTOP);
    Peer::spawn(
        &sweeper,
        None,
        &[
            "udp-sweep",
            "--to",
            "127.0.0.1",
            "--first",
            "40000",
            "--last",
            "45000",
        ],
    )
    .finish();
    agent.signal(libc::SIGCONT);
    let logs = collector.wait_logs(WAIT, |logs| logs.iter().any(|l| l.event_name() == GAP));
    let events = agent.stop();
    let gap = logs
        .iter()
        .find(|l| l.event_name() == GAP)
        .unwrap_or_else(|| panic!("no visibility gap record:\n{}", events.dump()));
    assert_eq!(
        gap.attr("eastwatch.verdict").as_deref(),
        Some("kernel-events-lost")
    );
    let lost: u64 = gap
        .attr("eastwatch.details.flow_ring_buffer_full")
        .and_then(|n| n.parse().ok())
        .expect("lost count");
    assert!(lost > 0, "{gap:#?}");
    assert!(
        gap.attr("eastwatch.details.total.flow_events_offered")
            .is_some(),
        "{gap:#?}"
    );
    let loss: Value = events
        .of_kind("loss")
        .next()
        .cloned()
        .unwrap_or_else(|| panic!("no loss line:\n{}", events.dump()));
    assert!(loss["new"]["flow_ring_buffer_full"].as_u64().unwrap_or(0) > 0);
}

/// Mutual TLS: the collector requires a client certificate from the test
/// CA. Over gRPC the files come from the flags; over OTLP/HTTP from the
/// standard variables the exporter crate does not read itself.
#[test]
fn mutual_tls_over_grpc_by_flags_and_over_http_by_environment() {
    let pods = Pods::new();
    let _server = pods.serve(8445);
    let client_id = pods.client_id();
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let dir = TempDir::new("otlp-tls");
        let files = TlsFiles::generate(dir.path());
        let collector = Collector::start_tls(protocol, &files);
        let path = |p: &std::path::Path| p.to_str().expect("path").to_owned();
        let (ca, cert, key) = (
            path(&files.ca),
            path(&files.client_cert),
            path(&files.client_key),
        );
        let mut agent = match protocol {
            Protocol::Grpc => monitor(
                &dir,
                &collector,
                &[
                    "--otlp-ca",
                    &ca,
                    "--otlp-client-cert",
                    &cert,
                    "--otlp-client-key",
                    &key,
                ],
                &[],
            ),
            Protocol::Http => monitor(
                &dir,
                &collector,
                &[],
                &[
                    ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str()),
                    ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", cert.as_str()),
                    ("OTEL_EXPORTER_OTLP_CLIENT_KEY", key.as_str()),
                ],
            ),
        };
        assert!(collector.endpoint().starts_with("https://127.0.0.1:"));
        pods.connect(8445);
        let logs = collector.wait_logs(WAIT, |logs| logs.iter().any(egress_to(8445, &client_id)));
        assert!(
            logs.iter().any(egress_to(8445, &client_id)),
            "{protocol:?}: no record over mutual TLS:\n{}",
            agent.stderr_text()
        );
        assert!(
            agent
                .wait_for(WAIT, printed_by(pods.client.path()))
                .is_some()
        );
        let events = agent.stop();
        assert_eq!(events.summary()["export"]["pending"], 0, "{protocol:?}");
    }

    // Without a client certificate the collector refuses the agent: the
    // alert stays spooled and the failures are counted.
    let dir = TempDir::new("otlp-tls-refused");
    let files = TlsFiles::generate(dir.path());
    let collector = Collector::start_tls(Protocol::Grpc, &files);
    let ca = files.ca.to_str().expect("path").to_owned();
    let mut agent = monitor(&dir, &collector, &["--otlp-ca", &ca], &[]);
    pods.connect(8445);
    assert!(
        agent
            .wait_for(WAIT, printed_by(pods.client.path()))
            .is_some()
    );
    assert!(
        agent.wait_for_log(WAIT, EXPORT_FAILED),
        "the agent never tried the collector:\n{}",
        agent.stderr_text()
    );
    let events = agent.stop();
    assert!(
        collector.logs().is_empty(),
        "accepted without a client certificate"
    );
    let export = &events.summary()["export"];
    assert!(
        export["export_failures"].as_u64().unwrap_or(0) > 0,
        "{export}"
    );
    assert!(export["pending"].as_u64().unwrap_or(0) > 0, "{export}");
}

/// A lateral move between two simulated pods, with the cluster described by
/// a Kubernetes API server: the record names the observed pod (`k8s.*`,
/// `container.id`) and both workloads with their SPIFFE IDs, and the
/// resource names the node and the cluster (the kubeconfig's).
#[test]
fn a_pod_to_pod_alert_carries_kubernetes_attributes_and_both_workloads() {
    let net = PodNetwork::new(80, 8080);
    let (frontend_uid, api_uid) = (pod_uid("frontend"), pod_uid("api"));
    let frontend_container = container_id("fe");
    let frontend = PodCgroup::burstable(&frontend_uid, &frontend_container);
    let kube = FakeApi::start();
    describe_shop(&kube, &frontend_uid, &api_uid, "e2e-node");
    let dir = TempDir::new("export-k8s");
    let kubeconfig = kube.write_kubeconfig(dir.path(), "e2e");
    let collector = Collector::start(Protocol::Grpc);
    let agent = monitor(
        &dir,
        &collector,
        &[
            "--kubeconfig",
            kubeconfig.to_str().expect("path"),
            "--node-name",
            "e2e-node",
        ],
        &[],
    );

    // Through the ClusterIP to a port nobody serves: refused, so the
    // frontend's egress is the only observation of the edge.
    let to = format!("{}:80", PodNetwork::CLUSTER_IP);
    Peer::spawn(
        frontend.cgroup(),
        Some(&net.client),
        &["tcp-connect", "--to", &to, "--expect-refused"],
    )
    .finish();
    // (The agent's own watch connections to the API server alert too: the
    // baseline is empty.)
    let from_frontend = |l: &ReceivedLog| {
        l.event_name() == UNAUTHORIZED
            && l.attr("eastwatch.source.id").as_deref() == Some("workload:shop/deployment/frontend")
    };
    let logs = collector.wait_logs(WAIT, |logs| logs.iter().any(from_frontend));
    let log = logs
        .iter()
        .find(|l| from_frontend(l))
        .unwrap_or_else(|| panic!("no alert:\n{logs:#?}\n{}", agent.stderr_text()));
    let expect = |key: &str, value: &str| {
        assert_eq!(log.attr(key).as_deref(), Some(value), "{key} in {log:#?}");
    };
    expect("eastwatch.flow.observed", "egress");
    expect("eastwatch.flow.outcome", "attempted");
    expect("k8s.namespace.name", "shop");
    expect("k8s.pod.name", "frontend-7d9c8b6f5-x2k4p");
    expect("k8s.pod.uid", &frontend_uid);
    expect("k8s.deployment.name", "frontend");
    expect("container.id", &frontend_container);
    expect("destination.address", PodNetwork::CLUSTER_IP);
    expect("destination.port", "80");
    expect("eastwatch.source.id", "workload:shop/deployment/frontend");
    expect("eastwatch.source.service_account", "frontend");
    expect(
        "eastwatch.source.spiffe_id",
        "spiffe://cluster.local/ns/shop/sa/frontend",
    );
    expect("eastwatch.destination.id", "workload:shop/deployment/api");
    expect("eastwatch.destination.service", "shop/api");
    expect(
        "eastwatch.destination.spiffe_id",
        "spiffe://cluster.local/ns/shop/sa/api",
    );
    expect("threat.technique.id", "T1210");
    assert_eq!(log.record.severity_text, "low", "attempted: {log:#?}");
    for (key, value) in [("k8s.node.name", "e2e-node"), ("k8s.cluster.name", "e2e")] {
        assert_eq!(
            log.resource.get(key).map(String::as_str),
            Some(value),
            "{key} in {:#?}",
            log.resource
        );
    }
    drop(agent);
}

/// A tmpfs mounted for one test (needs root), unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: std::path::PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs at {}", path.display());
        Self(path)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The spool's disk fills up (a 32 KiB tmpfs under a 64 KiB spool bound)
/// while the collector is down. Once it is back: no re-send storm (the
/// acknowledgement that cannot be written does not make batches go out
/// again), alerts raised meanwhile and afterwards arrive (from memory while
/// the disk is full), and every drop is counted with its true reason (the
/// disk, not the spool's bound).
#[test]
fn a_full_spool_disk_neither_storms_nor_loses_new_alerts() {
    let pods = Pods::new();
    let client_id = pods.client_id();
    let mut collector = Collector::start(Protocol::Grpc);
    let dir = TempDir::new("otlp-disk-full");
    let _disk = Tmpfs::mount(dir.join("spool"), "32k");
    let mut agent = monitor(&dir, &collector, &["--spool-max-bytes", "65536"], &[]);
    collector.down();
    Peer::spawn(
        &pods.client,
        Some(&pods.pair.a),
        &[
            "tcp-sweep",
            "--to",
            VethPair::B4,
            "--first",
            "32001",
            "--last",
            "32150",
        ],
    )
    .finish();
    wait_printed(&mut agent, &client_id, &[32150]);
    collector.up();
    let logs = collector.wait_logs(WAIT, |logs| {
        logs.iter().any(|l| {
            l.event_name() == GAP
                && l.attr("eastwatch.verdict").as_deref() == Some("spool-overflow")
        })
    });
    let gap = logs
        .iter()
        .find(|l| l.event_name() == GAP)
        .unwrap_or_else(|| panic!("no visibility gap:\n{}", agent.stderr_text()));
    assert!(
        gap.attr("eastwatch.details.dropped_for.disk")
            .and_then(|d| d.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
            && gap
                .attr("eastwatch.details.dropped_for.spool_limit")
                .is_none(),
        "dropped for the disk, not the spool's bound: {gap:#?}"
    );
    assert!(
        gap.body().contains("disk") && !gap.body().contains("spool was full"),
        "{}",
        gap.body()
    );

    // Raised after the collector came back, with the disk still full.
    pods.attempt(33001);
    collector.wait_logs(WAIT, |logs| logs.iter().any(egress_to(33001, &client_id)));
    assert!(
        collector.logs().iter().any(egress_to(33001, &client_id)),
        "a new alert never arrived:\n{}",
        agent.stderr_text()
    );

    let events = agent.stop();
    let raised = events.of_kind(UNAUTHORIZED).count() as u64;
    let logs = collector.logs();
    let unauthorized: Vec<&ReceivedLog> = logs
        .iter()
        .filter(|l| l.event_name() == UNAUTHORIZED)
        .collect();
    let unique: BTreeSet<i64> = unauthorized
        .iter()
        .filter_map(|l| l.int("eastwatch.alert.sequence"))
        .collect();
    // At least once, not a storm: at most one batch sent twice.
    assert!(
        unauthorized.len() <= unique.len() + 256,
        "{} records for {} alerts",
        unauthorized.len(),
        unique.len()
    );
    let counted: u64 = logs
        .iter()
        .filter(|l| l.event_name() == GAP)
        .filter_map(|l| l.attr("eastwatch.details.dropped.unauthorized_flow"))
        .filter_map(|d| d.parse::<u64>().ok())
        .sum();
    assert_eq!(
        raised,
        unique.len() as u64 + counted,
        "raised = received + counted dropped"
    );
    let counted_all: u64 = logs
        .iter()
        .filter(|l| l.event_name() == GAP)
        .filter_map(|l| l.attr("eastwatch.details.dropped"))
        .filter_map(|d| d.parse::<u64>().ok())
        .sum();
    let export = &events.summary()["export"];
    assert!(
        export["spool_write_failures"].as_u64().unwrap_or(0) > 0
            && export["dropped_disk"].as_u64() == Some(counted_all)
            && export["dropped_spool_limit"].as_u64() == Some(0),
        "{export}"
    );
}
