//! Baselines over workload identities: with an inventory naming the tiers,
//! both observations of one connection (the client's egress, the server's
//! ingress) are one edge between two workloads; a learned baseline names
//! workloads, not cgroups or addresses; a lateral move alerts once with both
//! workloads, their service accounts and SPIFFE IDs. All of it while
//! unrelated traffic (loopback and network namespaces, TCP and UDP, IPv4 and
//! IPv6, new edges all the time, from other cgroups) runs on the machine:
//! the agent sees it, the assertions are about the app's own traffic.

// Test helpers fail the test by panicking, with the reason in the message.
#![allow(clippy::expect_used)]

use std::time::Duration;

use eastwatch_tests::{Agent, Lan, Noise, Peer, TempDir, TestCgroup, noise};
use serde_json::Value;

const TIERS: [&str; 3] = ["web", "app", "db"];
const WAIT: Duration = Duration::from_secs(30);

fn inventory(cgroups: &[TestCgroup]) -> String {
    let mut text = String::from("cluster: lab\nworkloads:\n");
    for (i, name) in TIERS.iter().enumerate() {
        text.push_str(&format!(
            "  - namespace: shop\n    kind: Deployment\n    name: {name}\n    \
             serviceAccount: {name}\n    labels: {{app: {name}}}\n    \
             cgroups: [{}]\n    ips: [{}]\n",
            cgroups[i].path(),
            Lan::v4(i)
        ));
    }
    text
}

fn workload(name: &str) -> String {
    format!("workload:shop/deployment/{name}")
}

/// The app's identities are all in namespace `shop`.
fn is_ours(end: &Value) -> bool {
    end["identity"]["namespace"] == "shop"
}

fn ours(id: &str) -> bool {
    id.starts_with("workload:shop/")
}

/// The learned baseline's edges with an end in `shop`.
fn our_edges(yaml: &str) -> Vec<Value> {
    let doc: Value = serde_saphyr::from_str(yaml).expect("learned baseline is YAML");
    doc["spec"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .filter(|e| e["from"]["namespace"] == "shop" || e["to"]["namespace"] == "shop")
        .cloned()
        .collect()
}

#[test]
fn a_three_tier_app_learned_and_monitored_as_workloads() {
    let noise = Noise::start();
    let lan = Lan::new(3);
    let cgroups: Vec<TestCgroup> = TIERS.iter().map(|t| TestCgroup::new(t)).collect();
    let dir = TempDir::new("workloads");
    let inventory_file = dir.join("inventory.yaml");
    std::fs::write(&inventory_file, inventory(&cgroups)).expect("write inventory");
    let inv = inventory_file.to_str().expect("path");

    let mut servers = Vec::new();
    for (tier, port) in [(1, 8080), (2, 5432)] {
        let listen = format!("{}:{port}", Lan::v4(tier));
        let mut server = Peer::spawn(
            &cgroups[tier],
            Some(&lan.members[tier]),
            &["tcp-serve", "--listen", &listen],
        );
        server.ready();
        servers.push(server);
    }
    let connect = |from: usize, to: usize, port: u16| {
        let to = format!("{}:{port}", Lan::v4(to));
        Peer::spawn(
            &cgroups[from],
            Some(&lan.members[from]),
            &["tcp-connect", "--to", &to],
        )
        .finish();
    };

    // Learn the everyday paths.
    let learned = dir.join("learned.yaml");
    let mut learner = Agent::spawn(&[
        "learn",
        "--out",
        learned.to_str().expect("path"),
        "--inventory",
        inv,
        "--no-kubernetes",
        "--count-interval",
        "200ms",
    ]);
    connect(0, 1, 8080);
    connect(1, 2, 5432);
    for (from, to) in [("web", "app"), ("app", "db")] {
        assert!(
            learner
                .wait_for(WAIT, |e| {
                    e["event"] == "learned"
                        && e["from"] == workload(from)
                        && e["to"] == workload(to)
                })
                .is_some(),
            "never learned {from} -> {to}:\n{}",
            learner.stderr_text()
        );
    }
    // The unrelated traffic ran beside the app: the learner learned it too.
    assert!(
        learner.wait_until(WAIT, |seen| noise_not_learned(seen).is_empty()),
        "no noise of these kinds learned: {:?}",
        noise_not_learned(&learner.events_so_far(Duration::ZERO))
    );
    let learn_events = learner.stop();
    let mut ours_learned: Vec<(&str, &str, u64)> = learn_events
        .of_kind("learned")
        .map(|e| {
            (
                e["from"].as_str().unwrap_or_default(),
                e["to"].as_str().unwrap_or_default(),
                e["port"].as_u64().unwrap_or_default(),
            )
        })
        .filter(|(from, to, _)| ours(from) || ours(to))
        .collect();
    ours_learned.sort_unstable();
    let (web, app, db) = (workload("web"), workload("app"), workload("db"));
    assert_eq!(
        ours_learned,
        [
            (app.as_str(), db.as_str(), 5432),
            (web.as_str(), app.as_str(), 8080)
        ],
        "one edge per connection, whichever end saw it"
    );
    let text = std::fs::read_to_string(&learned).expect("learned baseline");
    let edges = our_edges(&text);
    assert_eq!(edges.len(), 2, "{text}");
    for edge in &edges {
        for end in [&edge["from"], &edge["to"]] {
            assert_eq!(end["namespace"], "shop", "{edge}");
            assert!(
                end.get("cgroup").is_none() && end.get("cidr").is_none(),
                "workloads, not cgroups or addresses: {edge}"
            );
            let workload = &end["workload"];
            assert!(
                workload["kind"] == "Deployment" && TIERS.iter().any(|t| workload["name"] == *t),
                "named by workload: {edge}"
            );
        }
    }

    // Monitor, then move laterally: web straight to the database.
    let mut monitor = Agent::spawn(&[
        "monitor",
        "--baseline",
        learned.to_str().expect("path"),
        "--inventory",
        inv,
        "--no-kubernetes",
        "--count-interval",
        "200ms",
    ]);
    connect(0, 1, 8080);
    connect(1, 2, 5432);
    connect(0, 2, 5432);
    let is_lateral = |e: &Value| {
        e["event"] == "eastwatch.alert.unauthorized_flow"
            && e["source"]["identity"]["name"] == "web"
            && e["destination"]["identity"]["name"] == "db"
    };
    let alert = monitor
        .wait_for(WAIT, is_lateral)
        .unwrap_or_else(|| panic!("no alert for web -> db:\n{}", monitor.stderr_text()));
    // And the monitor alerted on the noise's new edges.
    assert!(
        monitor.wait_until(WAIT, |seen| noise_not_alerted(seen).is_empty()),
        "no alert on noise of these kinds: {:?}",
        noise_not_alerted(&monitor.events_so_far(Duration::ZERO))
    );
    let events = monitor.stop();
    drop(noise);

    let lateral: Vec<&Value> = events
        .all
        .iter()
        .filter(|e| is_lateral(e) && e["details"]["report"] == "first")
        .collect();
    assert_eq!(
        lateral.len(),
        1,
        "both observations are one edge, alerted once: {lateral:#?}"
    );
    assert_eq!(
        alert["source"]["spiffe_id"], "spiffe://cluster.local/ns/shop/sa/web",
        "{alert}"
    );
    assert_eq!(
        alert["destination"]["spiffe_id"],
        "spiffe://cluster.local/ns/shop/sa/db"
    );
    assert_eq!(alert["source"]["identity"]["serviceAccount"], "web");
    assert_eq!(alert["destination"]["identity"]["namespace"], "shop");
    let unauthorized: Vec<&Value> = events
        .of_kind("eastwatch.alert.unauthorized_flow")
        .filter(|e| is_ours(&e["source"]) || is_ours(&e["destination"]))
        .filter(|e| !is_lateral(e))
        .collect();
    assert!(
        unauthorized.is_empty(),
        "learned paths never alert: {unauthorized:#?}"
    );
}

/// The kinds of unrelated traffic the learner has not learned an edge of
/// yet: TCP and UDP, on the loopback (whose far end is this node) and on
/// the noise's own network between namespaces, IPv4 and IPv6.
fn noise_not_learned(events: &[Value]) -> Vec<&'static str> {
    let noise_cgroup = |end: &Value| {
        end.as_str()
            .and_then(|id| id.strip_prefix("cgroup:"))
            .is_some_and(noise::owns)
    };
    let edges: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "learned" && (noise_cgroup(&e["from"]) || noise_cgroup(&e["to"])))
        .collect();
    let has_end = |prefix: &str| {
        edges.iter().any(|e| {
            [&e["from"], &e["to"]]
                .iter()
                .any(|end| end.as_str().is_some_and(|id| id.starts_with(prefix)))
        })
    };
    let mut missing = Vec::new();
    for transport in ["tcp", "udp"] {
        if !edges.iter().any(|e| e["transport"] == transport) {
            missing.push(transport);
        }
    }
    for (what, prefix) in [
        ("loopback", "node:".to_owned()),
        (
            "namespaces IPv4",
            format!("external:{}", noise::LAN_V4_PREFIX),
        ),
        (
            "namespaces IPv6",
            format!("external:{}", noise::LAN_V6_PREFIX),
        ),
    ] {
        if !has_end(&prefix) {
            missing.push(what);
        }
    }
    missing
}

/// The loopback families the monitor has not alerted on a new noise edge
/// of yet.
fn noise_not_alerted(events: &[Value]) -> Vec<&'static str> {
    let noise_alerts: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["event"] == "eastwatch.alert.unauthorized_flow"
                && e["source"]["identity"]["path"]
                    .as_str()
                    .is_some_and(noise::owns)
        })
        .collect();
    [("loopback IPv4", "127.0.0.1:"), ("loopback IPv6", "[::1]:")]
        .into_iter()
        .filter(|(_, prefix)| {
            !noise_alerts.iter().any(|a| {
                a["flow"]["destination"]
                    .as_str()
                    .is_some_and(|d| d.starts_with(prefix))
            })
        })
        .map(|(what, _)| what)
        .collect()
}
