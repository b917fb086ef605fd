//! Baselines over workload identities: with an inventory naming the tiers,
//! both observations of one connection (the client's egress, the server's
//! ingress) are one edge between two workloads; a learned baseline names
//! workloads, not cgroups or addresses; a lateral move alerts once with both
//! workloads, their service accounts and SPIFFE IDs.

use std::time::Duration;

use eastwatch_tests::{Agent, Lan, Peer, TempDir, TestCgroup};
use serde_json::Value;

const TIERS: [&str; 3] = ["web", "app", "db"];

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

#[test]
fn a_three_tier_app_learned_and_monitored_as_workloads() {
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
                .wait_for(Duration::from_secs(20), |e| {
                    e["event"] == "learned"
                        && e["from"] == workload(from)
                        && e["to"] == workload(to)
                })
                .is_some(),
            "never learned {from} -> {to}:\n{}",
            learner.stderr_text()
        );
    }
    let summary = learner.stop();
    let summary = summary.of_kind("summary").last().expect("summary").clone();
    assert_eq!(
        summary["learned_edges"], 2,
        "one edge per connection, whichever end saw it: {summary}"
    );
    let text = std::fs::read_to_string(&learned).expect("learned baseline");
    for name in TIERS {
        assert!(
            text.contains(&format!("name: {name}")),
            "{name} named in\n{text}"
        );
    }
    assert!(
        !text.contains("cgroup") && !text.contains("10.78."),
        "workloads, not cgroups or addresses:\n{text}"
    );

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
        .wait_for(Duration::from_secs(20), is_lateral)
        .unwrap_or_else(|| panic!("no alert for web -> db:\n{}", monitor.stderr_text()));
    let events = monitor.stop();

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
        .all
        .iter()
        .filter(|e| e["event"] == "eastwatch.alert.unauthorized_flow")
        .filter(|e| !is_lateral(e))
        .collect();
    assert!(
        unauthorized.is_empty(),
        "learned paths never alert: {unauthorized:#?}"
    );
}
