//! Baselines end to end: learn a simulated 3-tier app (real processes in
//! their own cgroups and network namespaces), lint the result, monitor it,
//! then move laterally; hot reloads through a ConfigMap-style symlink swap.
//!
//! The resolver on this branch is the host fallback: local ends are
//! `cgroup:<path>`, remote ends `external:<ip>`, so one connection between
//! two local cgroups is two edges (the client's egress and the server's
//! ingress). The assertions name edges through [`Tier`] helpers, so they
//! switch to workload identities in one place.

// Test helpers fail the test by panicking, with the reason in the message.
#![allow(clippy::expect_used)]

use std::{path::Path, process::Command, time::Duration};

use eastwatch_tests::{
    Agent, Lan, Peer, TempDir, TestCgroup, agent::agent_binary, events::is_alert,
};
use serde_json::Value;

const WEB: usize = 0;
const APP: usize = 1;
const DB: usize = 2;

/// The three tiers: each a cgroup and a network namespace on one LAN.
struct ThreeTier {
    lan: Lan,
    cgroups: Vec<TestCgroup>,
    _servers: Vec<Peer>,
}

impl ThreeTier {
    /// app serves 8080/tcp (IPv4 and IPv6); db serves 5432/tcp and
    /// 5353/udp.
    fn start() -> Self {
        let lan = Lan::new(3);
        let cgroups = vec![
            TestCgroup::new("web"),
            TestCgroup::new("app"),
            TestCgroup::new("db"),
        ];
        let mut servers = Vec::new();
        let mut serve = |tier: usize, args: &[&str]| {
            let mut peer = Peer::spawn(&cgroups[tier], Some(&lan.members[tier]), args);
            peer.ready();
            servers.push(peer);
        };
        serve(
            APP,
            &["tcp-serve", "--listen", &format!("{}:8080", Lan::v4(APP))],
        );
        serve(
            APP,
            &["tcp-serve", "--listen", &format!("[{}]:8080", Lan::v6(APP))],
        );
        serve(
            DB,
            &["tcp-serve", "--listen", &format!("{}:5432", Lan::v4(DB))],
        );
        serve(
            DB,
            &["udp-serve", "--listen", &format!("{}:5353", Lan::v4(DB))],
        );
        Self {
            lan,
            cgroups,
            _servers: servers,
        }
    }

    fn cgroup(&self, tier: usize) -> String {
        format!("cgroup:{}", self.cgroups[tier].path())
    }

    /// Runs the peer `args` as `tier` and waits for it to finish.
    fn run(&self, tier: usize, args: &[&str]) {
        Peer::spawn(&self.cgroups[tier], Some(&self.lan.members[tier]), args).finish();
    }

    fn connect(&self, from: usize, to: &str, count: u32) {
        self.run(
            from,
            &["tcp-connect", "--to", to, "--count", &count.to_string()],
        );
    }

    /// The everyday paths: web → app:8080, app → db:5432.
    fn normal_traffic(&self) {
        self.connect(WEB, &format!("{}:8080", Lan::v4(APP)), 2);
        self.connect(APP, &format!("{}:5432", Lan::v4(DB)), 2);
    }

    /// Both observations of `client` → `server`:`port`: the client's egress
    /// and the server's ingress (`address`: the family's address).
    fn edges(
        &self,
        client: usize,
        server: usize,
        port: u16,
        v6: bool,
    ) -> [(String, String, u16); 2] {
        let addr = |tier| if v6 { Lan::v6(tier) } else { Lan::v4(tier) };
        [
            (
                self.cgroup(client),
                format!("external:{}", addr(server)),
                port,
            ),
            (
                format!("external:{}", addr(client)),
                self.cgroup(server),
                port,
            ),
        ]
    }
}

fn eastwatch(args: &[&str]) -> std::process::Output {
    Command::new(agent_binary())
        .args(args)
        .output()
        .expect("run eastwatch")
}

fn canonical(end: &Value) -> String {
    let id = &end["identity"];
    match id["type"].as_str() {
        Some("cgroup") => format!("cgroup:{}", id["path"].as_str().unwrap_or_default()),
        Some("external") => format!("external:{}", id["address"].as_str().unwrap_or_default()),
        other => format!("{other:?}"),
    }
}

/// (from, to, port) of an unauthorized-flow alert.
fn alert_edge(alert: &Value) -> (String, String, u16) {
    let port = alert["flow"]["destination"]
        .as_str()
        .and_then(|d| d.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    (
        canonical(&alert["source"]),
        canonical(&alert["destination"]),
        port,
    )
}

fn unauthorized(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["event"] == "eastwatch.alert.unauthorized_flow")
        .collect()
}

fn report_of(alert: &Value) -> &str {
    alert["details"]["report"].as_str().unwrap_or_default()
}

/// First reports (not repeats, not scans) on `edge`.
fn first_alerts<'a>(events: &'a [Value], edge: &(String, String, u16)) -> Vec<&'a Value> {
    unauthorized(events)
        .into_iter()
        .filter(|a| report_of(a) == "first" && alert_edge(a) == *edge)
        .collect()
}

fn wait_alert(agent: &mut Agent, edge: &(String, String, u16)) -> Value {
    agent
        .wait_for(Duration::from_secs(20), |e| {
            e["event"] == "eastwatch.alert.unauthorized_flow" && alert_edge(e) == *edge
        })
        .unwrap_or_else(|| panic!("no alert for {edge:?}:\n{}", agent.stderr_text()))
}

fn lines_of(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("alert line is JSON"))
        .collect()
}

#[test]
fn learn_lint_monitor_then_lateral_moves_alert_once() {
    let tiers = ThreeTier::start();
    let dir = TempDir::new("baseline");
    let learned = dir.join("learned.yaml");
    let evidence = dir.join("evidence.json");
    let checkpoint = dir.join("checkpoint.json");

    // Learn.
    let mut learner = Agent::spawn(&[
        "learn",
        "--out",
        learned.to_str().expect("path"),
        "--evidence",
        evidence.to_str().expect("path"),
        "--checkpoint",
        checkpoint.to_str().expect("path"),
        "--count-interval",
        "200ms",
    ]);
    tiers.normal_traffic();
    let normal: Vec<_> = [
        tiers.edges(WEB, APP, 8080, false),
        tiers.edges(APP, DB, 5432, false),
    ]
    .concat();
    for (from, to, port) in &normal {
        let seen = learner.wait_for(Duration::from_secs(20), |e| {
            e["event"] == "learned"
                && e["from"] == from.as_str()
                && e["to"] == to.as_str()
                && e["port"] == *port
        });
        assert!(
            seen.is_some(),
            "never learned {from} -> {to} {port}:\n{}",
            learner.stderr_text()
        );
    }
    let learn_events = learner.stop();
    // Exactly the everyday paths, of all the edges with a tier at one end.
    let tier_ids: Vec<String> = (0..3).map(|tier| tiers.cgroup(tier)).collect();
    let mut learned_ours: Vec<(String, String, u16)> = learn_events
        .of_kind("learned")
        .map(|e| {
            (
                e["from"].as_str().unwrap_or_default().to_owned(),
                e["to"].as_str().unwrap_or_default().to_owned(),
                e["port"].as_u64().unwrap_or_default() as u16,
            )
        })
        .filter(|(from, to, _)| tier_ids.contains(from) || tier_ids.contains(to))
        .collect();
    learned_ours.sort();
    let mut expected = normal.clone();
    expected.sort();
    assert_eq!(learned_ours, expected);

    // The learned file: reviewable, no counters or timestamps, lints clean.
    let text = std::fs::read_to_string(&learned).expect("learned baseline");
    assert!(
        text.starts_with("apiVersion: eastwatch.io/v1\nkind: Baseline\n"),
        "{text}"
    );
    for (from, _, _) in &normal {
        if let Some(path) = from.strip_prefix("cgroup:") {
            assert!(text.contains(path), "{path} in\n{text}");
        }
    }
    assert!(!text.contains("count") && !text.contains("seen"), "{text}");
    let lint = eastwatch(&["baseline", "lint", learned.to_str().expect("path")]);
    assert!(
        lint.status.success(),
        "lint: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    // Every learned path is allowed, web straight to the db is not.
    for (from, to, port) in &normal {
        let out = eastwatch(&[
            "baseline",
            "explain",
            learned.to_str().expect("path"),
            "--from",
            from,
            "--to",
            to,
            "--port",
            &format!("{port}/tcp"),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let [web_db, _] = tiers.edges(WEB, DB, 5432, false);
    let out = eastwatch(&[
        "baseline",
        "explain",
        learned.to_str().expect("path"),
        "--from",
        &web_db.0,
        "--to",
        &web_db.1,
        "--port",
        "5432/tcp",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("unauthorized"));
    // Evidence: counts and samples, apart from the baseline.
    let evidence: Value =
        serde_json::from_slice(&std::fs::read(&evidence).expect("evidence")).expect("JSON");
    let web_app = evidence["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .find(|e| e["port"] == 8080 && e["from"]["path"] == tiers.cgroups[WEB].path())
        .unwrap_or_else(|| panic!("no web -> app evidence: {evidence}"));
    assert_eq!(web_app["count"], 2, "{web_app}");
    assert_eq!(web_app["from_processes"][0], "eastwatch-peer");
    assert!(checkpoint.exists(), "checkpoint written");
    // A restart with the same checkpoint resumes what was learned.
    let resumed = Agent::spawn(&[
        "learn",
        "--out",
        learned.to_str().expect("path"),
        "--checkpoint",
        checkpoint.to_str().expect("path"),
    ]);
    let resumed = resumed.stop();
    let ready = resumed.of_kind("ready").next().expect("ready").clone();
    assert!(
        ready["learned_edges_resumed"].as_u64().unwrap_or(0) >= 4,
        "{ready}"
    );
    let again = std::fs::read_to_string(&learned).expect("learned baseline");
    for (from, _, _) in &normal {
        if let Some(path) = from.strip_prefix("cgroup:") {
            assert!(again.contains(path), "{path} kept after resume");
        }
    }

    // Monitor.
    let alerts_file = dir.join("alerts.jsonl");
    let mut monitor = Agent::spawn(&[
        "monitor",
        "--baseline",
        learned.to_str().expect("path"),
        "--window",
        "10m",
        "--fan-out-threshold",
        "5",
        "--alerts-file",
        alerts_file.to_str().expect("path"),
        "--count-interval",
        "200ms",
    ]);
    let ready = monitor
        .events_so_far(Duration::from_millis(10))
        .into_iter()
        .find(|e| e["event"] == "ready")
        .expect("ready");
    let digest = ready["baseline_digest"]
        .as_str()
        .expect("digest")
        .to_owned();
    assert!(digest.starts_with("sha256:"), "{ready}");

    tiers.normal_traffic();
    // Web straight to the database, three times.
    tiers.connect(WEB, &format!("{}:5432", Lan::v4(DB)), 3);
    // An IPv6 path nobody learned.
    tiers.connect(WEB, &format!("[{}]:8080", Lan::v6(APP)), 2);
    // A new UDP path.
    tiers.run(
        APP,
        &[
            "udp-send",
            "--to",
            &format!("{}:5353", Lan::v4(DB)),
            "--count",
            "2",
            "--reply",
        ],
    );
    // A port sweep from the compromised web tier.
    tiers.run(
        WEB,
        &[
            "tcp-sweep",
            "--to",
            &Lan::v4(DB),
            "--first",
            "6000",
            "--last",
            "6019",
        ],
    );

    let lateral: Vec<(String, String, u16)> = [
        tiers.edges(WEB, DB, 5432, false),
        tiers.edges(WEB, APP, 8080, true),
        tiers.edges(APP, DB, 5353, false),
    ]
    .concat();
    for edge in &lateral {
        wait_alert(&mut monitor, edge);
    }
    let scan = monitor
        .wait_for(Duration::from_secs(20), |e| e["technique"]["id"] == "T1046")
        .unwrap_or_else(|| panic!("no scan alert:\n{}", monitor.stderr_text()));
    let events = monitor.stop().all;
    let dump = || {
        events
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };

    // Each lateral edge: exactly one first report in the window.
    for edge in &lateral {
        let found = first_alerts(&events, edge);
        assert_eq!(found.len(), 1, "{edge:?}: {found:#?}\n{}", dump());
    }
    // Learned paths never alert.
    for edge in &normal {
        let any: Vec<_> = unauthorized(&events)
            .into_iter()
            .filter(|a| alert_edge(a) == *edge)
            .collect();
        assert!(any.is_empty(), "learned path alerted: {any:#?}");
    }
    // The alert carries both ends, the flow, the verdict and the baseline.
    let alert = first_alerts(&events, &lateral[0])[0];
    assert_eq!(alert["verdict"], "unauthorized");
    assert_eq!(alert["baseline_digest"], digest.as_str());
    assert_eq!(alert["mode"], "monitor");
    assert_eq!(alert["severity"], "medium");
    assert_eq!(alert["technique"]["id"], "T1210");
    assert_eq!(alert["flow"]["transport"], "tcp");
    assert_eq!(alert["flow"]["observed"], "egress");
    assert_eq!(
        alert["flow"]["destination"],
        format!("{}:5432", Lan::v4(DB))
    );
    assert_eq!(alert["flow"]["process"]["name"], "eastwatch-peer");
    assert!(
        alert["rule"]
            .as_str()
            .is_some_and(|r| r.contains("nearest")),
        "{alert}"
    );
    // Repeats: one report when the window closed (here: at shutdown); the
    // first report and the repeats add up to the three connections.
    let total: u64 = unauthorized(&events)
        .into_iter()
        .filter(|a| alert_edge(a) == lateral[0])
        .map(|a| a["flow"]["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, 3, "{}", dump());
    // The IPv6 and UDP paths.
    let v6 = first_alerts(&events, &lateral[2])[0];
    assert_eq!(v6["flow"]["family"], "ipv6");
    let udp = first_alerts(&events, &lateral[4])[0];
    assert_eq!(udp["flow"]["transport"], "udp");

    // The sweep: web's fifth new target made it a scan; one T1046 alert,
    // the ports after it folded in, none alerted twice.
    let web = tiers.cgroup(WEB);
    let scans: Vec<_> = unauthorized(&events)
        .into_iter()
        .filter(|a| report_of(a) == "scan")
        .filter(|a| canonical(&a["source"]) == web)
        .collect();
    assert_eq!(scans.len(), 1, "{scans:#?}");
    assert_eq!(scan["severity"], "high");
    let swept: Vec<_> = unauthorized(&events)
        .into_iter()
        .filter(|a| report_of(a) == "first" && canonical(&a["source"]) == web)
        .filter(|a| (6000..=6019).contains(&alert_edge(a).2))
        .collect();
    // Targets before the scan: web → db 5432, web → app [v6] 8080, then
    // 6000 and 6001; 6002 was the fifth.
    assert_eq!(swept.len(), 2, "{swept:#?}\n{}", dump());
    for a in &swept {
        assert_eq!(a["flow"]["outcome"], "attempted");
        assert_eq!(a["severity"], "low");
    }

    // The alerts file has exactly what stdout had.
    let on_stdout: Vec<&Value> = events.iter().filter(|e| is_alert(e)).collect();
    let in_file = lines_of(&alerts_file);
    assert_eq!(in_file.len(), on_stdout.len());
    assert!(in_file.iter().zip(&on_stdout).all(|(a, b)| a == *b));
}

/// Writes `files` into a new `..<version>` directory next to `..data` and
/// swaps the `..data` symlink to it atomically, as the kubelet does for a
/// ConfigMap volume.
fn configmap_update(dir: &Path, version: &str, files: &[(&str, &str)]) {
    let data = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&data).expect("mkdir");
    for (name, text) in files {
        std::fs::write(data.join(name), text).expect("write");
        let link = dir.join(name);
        if !link.exists() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).expect("symlink");
        }
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
}

fn edge_yaml(from: &str, to: &str, port: &str) -> String {
    let selector = |id: &str| {
        if let Some(path) = id.strip_prefix("cgroup:") {
            format!("{{cgroup: {path}}}")
        } else {
            format!("{{cidr: {}}}", id.trim_start_matches("external:"))
        }
    };
    format!(
        "    - from: {}\n      to: {}\n      ports: [\"{port}\"]\n",
        selector(from),
        selector(to)
    )
}

fn baseline_yaml(name: &str, edges: &[String]) -> String {
    if edges.is_empty() {
        return format!(
            "apiVersion: eastwatch.io/v1\nkind: Baseline\nmetadata:\n  name: {name}\nspec:\n  edges: []\n"
        );
    }
    format!(
        "apiVersion: eastwatch.io/v1\nkind: Baseline\nmetadata:\n  name: {name}\nspec:\n  edges:\n{}",
        edges.concat()
    )
}

#[test]
fn hot_reload_of_a_merged_baseline_and_a_broken_one() {
    let tiers = ThreeTier::start();
    let dir = TempDir::new("reload");
    let volume = dir.join("volume");
    std::fs::create_dir_all(&volume).expect("mkdir");
    // The reviewed baseline: only web → app.
    let [wa_out, wa_in] = tiers.edges(WEB, APP, 8080, false);
    let base = baseline_yaml(
        "shop",
        &[
            edge_yaml(&wa_out.0, &wa_out.1, "8080/tcp"),
            edge_yaml(&wa_in.0, &wa_in.1, "8080/tcp"),
        ],
    );
    configmap_update(&volume, "v1", &[("baseline.yaml", &base)]);
    let baseline = volume.join("baseline.yaml");

    let mut monitor = Agent::spawn(&[
        "monitor",
        "--baseline",
        baseline.to_str().expect("path"),
        "--count-interval",
        "200ms",
    ]);
    // web → db: not approved yet.
    let x = tiers.edges(WEB, DB, 5432, false);
    tiers.connect(WEB, &format!("{}:5432", Lan::v4(DB)), 1);
    let before = wait_alert(&mut monitor, &x[0]);
    let v1_digest = before["baseline_digest"]
        .as_str()
        .expect("digest")
        .to_owned();

    // Approve it: merge the approval into the reviewed baseline, ship the
    // merge as the next ConfigMap version.
    let approval = dir.join("approval.yaml");
    std::fs::write(
        &approval,
        baseline_yaml(
            "approval",
            &[
                edge_yaml(&x[0].0, &x[0].1, "5432/tcp"),
                edge_yaml(&x[1].0, &x[1].1, "5432/tcp"),
            ],
        ),
    )
    .expect("write");
    let base_file = dir.join("base.yaml");
    std::fs::write(&base_file, &base).expect("write");
    let merged = dir.join("merged.yaml");
    let out = eastwatch(&[
        "baseline",
        "merge",
        base_file.to_str().expect("path"),
        approval.to_str().expect("path"),
        "--out",
        merged.to_str().expect("path"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let merged_text = std::fs::read_to_string(&merged).expect("merged");
    let diff = eastwatch(&[
        "baseline",
        "diff",
        base_file.to_str().expect("path"),
        merged.to_str().expect("path"),
        "--format",
        "json",
    ]);
    let diff: Value = serde_json::from_slice(&diff.stdout).expect("diff JSON");
    assert_eq!(diff["added"].as_array().map(Vec::len), Some(2), "{diff}");
    assert_eq!(diff["removed"].as_array().map(Vec::len), Some(0), "{diff}");
    configmap_update(&volume, "v2", &[("baseline.yaml", &merged_text)]);
    let applied = monitor
        .wait_for(Duration::from_secs(20), |e| {
            e["verdict"] == "baseline-applied"
        })
        .unwrap_or_else(|| panic!("merged baseline never applied:\n{}", monitor.stderr_text()));
    assert_eq!(applied["event"], "eastwatch.alert.agent_health");
    let v2_digest = applied["baseline_digest"]
        .as_str()
        .expect("digest")
        .to_owned();
    assert_ne!(v1_digest, v2_digest);

    // The approved edge is silent now; an unapproved one still alerts.
    tiers.connect(WEB, &format!("{}:5432", Lan::v4(DB)), 1);
    let y = (tiers.cgroup(WEB), format!("external:{}", Lan::v4(DB)), 6379);
    tiers.run(
        WEB,
        &[
            "tcp-sweep",
            "--to",
            &Lan::v4(DB),
            "--first",
            "6379",
            "--last",
            "6379",
        ],
    );
    let y_alert = wait_alert(&mut monitor, &y);
    assert_eq!(y_alert["baseline_digest"], v2_digest.as_str());

    // A broken baseline is rejected with its position; the merged one
    // keeps running.
    let broken = merged_text.replace("5432/tcp", "5432/sctp");
    configmap_update(&volume, "v3", &[("baseline.yaml", &broken)]);
    let rejected = monitor
        .wait_for(Duration::from_secs(20), |e| {
            e["verdict"] == "baseline-rejected"
        })
        .unwrap_or_else(|| panic!("broken baseline not rejected:\n{}", monitor.stderr_text()));
    let errors = rejected["details"]["errors"].as_str().unwrap_or_default();
    assert!(
        errors.contains("baseline.yaml:") && errors.contains("protocol \"sctp\""),
        "{errors}"
    );
    assert_eq!(rejected["baseline_digest"], v2_digest.as_str());
    tiers.connect(WEB, &format!("{}:5432", Lan::v4(DB)), 1);
    let z = (tiers.cgroup(WEB), format!("external:{}", Lan::v4(DB)), 7000);
    tiers.run(
        WEB,
        &[
            "tcp-sweep",
            "--to",
            &Lan::v4(DB),
            "--first",
            "7000",
            "--last",
            "7000",
        ],
    );
    let z_alert = wait_alert(&mut monitor, &z);
    assert_eq!(z_alert["baseline_digest"], v2_digest.as_str());
    let events = monitor.stop().all;

    // After the swap, web → db was never reported again.
    let swap = events
        .iter()
        .position(|e| e["verdict"] == "baseline-applied")
        .expect("applied");
    let after: Vec<_> = events[swap..]
        .iter()
        .filter(|e| e["event"] == "eastwatch.alert.unauthorized_flow")
        .filter(|e| x.contains(&alert_edge(e)))
        .collect();
    assert!(
        after.is_empty(),
        "approved edge alerted after reload: {after:#?}"
    );
    assert_eq!(first_alerts(&events, &y).len(), 1);
    assert_eq!(first_alerts(&events, &z).len(), 1);
}

#[test]
fn per_scope_modes_learn_a_new_team_while_the_rest_is_monitored() {
    let lan = Lan::new(2);
    let team = TestCgroup::new("team");
    let (mount, root) = eastwatch_tests::cgroup::cgroup2_mount();
    let relative = format!(
        "{}/svc",
        team.path()
            .trim_start_matches(root.trim_end_matches('/'))
            .trim_start_matches('/')
    );
    let svc = TestCgroup::at(&mount, &root, &relative);
    let srv = TestCgroup::new("legacy");
    let mut server = Peer::spawn(
        &srv,
        Some(&lan.members[1]),
        &["tcp-serve", "--listen", &format!("{}:8080", Lan::v4(1))],
    );
    server.ready();

    let dir = TempDir::new("scopes");
    std::fs::write(dir.join("baseline.yaml"), baseline_yaml("empty", &[])).expect("write");
    let config = |learn_srv: bool| {
        let mut scopes = format!(
            "    - mode: learn\n      match: {{cgroup: \"{}/*\"}}\n",
            team.path()
        );
        if learn_srv {
            scopes.push_str(&format!(
                "    - mode: learn\n      match: {{cgroup: {}}}\n",
                srv.path()
            ));
        }
        format!(
            "apiVersion: eastwatch.io/v1\nkind: AgentConfig\nspec:\n  defaultMode: monitor\n  scopes:\n{scopes}  baseline: baseline.yaml\n  learn:\n    out: learned.yaml\n  monitor:\n    window: 10m\n"
        )
    };
    let config_path = dir.join("agent.yaml");
    std::fs::write(&config_path, config(false)).expect("write");
    let mut agent = Agent::spawn(&[
        "run",
        "--config",
        config_path.to_str().expect("path"),
        "--count-interval",
        "200ms",
    ]);

    Peer::spawn(
        &svc,
        Some(&lan.members[0]),
        &["tcp-connect", "--to", &format!("{}:8080", Lan::v4(1))],
    )
    .finish();
    let svc_id = format!("cgroup:{}", svc.path());
    let srv_id = format!("cgroup:{}", srv.path());
    // The team's end learns; the legacy server's end is judged.
    let learned = agent.wait_for(Duration::from_secs(20), |e| {
        e["event"] == "learned" && e["from"] == svc_id.as_str()
    });
    assert!(
        learned.is_some(),
        "team egress not learned:\n{}",
        agent.stderr_text()
    );
    let ingress = (format!("external:{}", Lan::v4(0)), srv_id.clone(), 8080);
    wait_alert(&mut agent, &ingress);

    // Hand the legacy server to learn mode too, by editing the config in
    // place (written next to it and renamed over it).
    let tmp = dir.join("agent.yaml.new");
    std::fs::write(&tmp, config(true)).expect("write");
    std::fs::rename(&tmp, &config_path).expect("rename");
    agent
        .wait_for(Duration::from_secs(20), |e| {
            e["verdict"] == "config-applied"
        })
        .unwrap_or_else(|| panic!("config never applied:\n{}", agent.stderr_text()));
    Peer::spawn(
        &svc,
        Some(&lan.members[0]),
        &["tcp-connect", "--to", &format!("{}:8080", Lan::v4(1))],
    )
    .finish();
    let relearned = agent.wait_for(Duration::from_secs(20), |e| {
        e["event"] == "learned" && e["to"] == srv_id.as_str()
    });
    assert!(
        relearned.is_some(),
        "legacy ingress not learned after reload:\n{}",
        agent.stderr_text()
    );

    // A broken config is rejected with its position; the last good one
    // stays in force (the legacy server keeps learning).
    std::fs::write(
        &tmp,
        config(true).replace("defaultMode: monitor", "defaultMode: sometimes"),
    )
    .expect("write");
    std::fs::rename(&tmp, &config_path).expect("rename");
    let rejected = agent
        .wait_for(Duration::from_secs(20), |e| {
            e["verdict"] == "config-rejected"
        })
        .unwrap_or_else(|| panic!("broken config not rejected:\n{}", agent.stderr_text()));
    let errors = rejected["details"]["errors"].as_str().unwrap_or_default();
    assert!(errors.contains("agent.yaml:4:"), "{errors}");
    let mut second = Peer::spawn(
        &srv,
        Some(&lan.members[1]),
        &["tcp-serve", "--listen", &format!("{}:8081", Lan::v4(1))],
    );
    second.ready();
    Peer::spawn(
        &svc,
        Some(&lan.members[0]),
        &["tcp-connect", "--to", &format!("{}:8081", Lan::v4(1))],
    )
    .finish();
    let still = agent.wait_for(Duration::from_secs(20), |e| {
        e["event"] == "learned" && e["to"] == srv_id.as_str() && e["port"] == 8081
    });
    assert!(
        still.is_some(),
        "the last good config is gone:\n{}",
        agent.stderr_text()
    );
    let events = agent.stop().all;

    let from_team: Vec<_> = unauthorized(&events)
        .into_iter()
        .filter(|a| canonical(&a["source"]) == svc_id)
        .collect();
    assert!(
        from_team.is_empty(),
        "a learning scope alerted: {from_team:#?}"
    );
    assert_eq!(first_alerts(&events, &ingress).len(), 1);
    let text = std::fs::read_to_string(dir.join("learned.yaml")).expect("learned");
    assert!(
        text.contains(svc.path()) && text.contains(srv.path()),
        "{text}"
    );
}
