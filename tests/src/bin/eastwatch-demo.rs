//! `cargo xtask demo`: the whole story on one machine. A simulated node
//! runs a 3-tier shop (frontend → api → db) as real processes in
//! kubepods-shaped cgroups, each pod in its own network namespace with its
//! pod IP, Services as real nftables DNAT, and a local API server that
//! describes the cluster to the agent's kube-rs client. eastwatch learns
//! the everyday paths, writes and lints the baseline, switches to monitor
//! with alerts going to a local OTLP/gRPC receiver, and then the frontend
//! is "compromised": it goes straight to the database, sweeps ports and
//! opens a new UDP path. Last, the baseline becomes NetworkPolicies (pod
//! labels from the API), checked against the attack's alerts and the
//! learned traffic, and a service map. The node is removed on exit, Ctrl-C
//! included; the files to look at stay in `EASTWATCH_DEMO_OUT`.
//!
//! The demo checks its own story: it fails when an attack step raises no
//! alert, when a learned path does, when the receiver gets nothing, or
//! when the policies let the attack through or block the learned traffic.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use eastwatch_tests::{
    Agent, Lan, Peer, TempDir, TestCgroup,
    agent::agent_binary,
    cgroup::cgroup2_mount,
    events::is_alert,
    interrupt::{self, interrupted},
    kube_api::FakeApi,
    otlp::{Collector, Protocol, ReceivedLog},
    pods::{ClusterIp, PodCgroup, container_id, kube_proxy, pod_uid},
    shop::{API, API_SERVICE, DB, DB_SERVICE, FRONTEND, NAMESPACE, NODE, SERVICES, TIERS},
};
use serde_json::Value;

const CLUSTER: &str = "demo";
const UNAUTHORIZED: &str = "eastwatch.alert.unauthorized_flow";

/// Rounds of everyday traffic: each is two connections, each seen at both
/// of its ends.
const EVERYDAY_ROUNDS: u64 = 3;
const EVERYDAY_OBSERVATIONS: u64 = EVERYDAY_ROUNDS * 2 * 2;

#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// Between steps: stop here when interrupted.
fn checkpoint() -> anyhow::Result<()> {
    if interrupted() {
        return Err(Interrupted.into());
    }
    Ok(())
}

fn main() -> ExitCode {
    // Ctrl-C and SIGTERM only set a flag: the demo stops at its next step
    // and unwinds, and every namespace, cgroup and process goes with it.
    interrupt::catch();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "the demo needs root: it loads eBPF programs and makes cgroups and network namespaces"
        );
        return ExitCode::from(2);
    }
    // The harness panics on a failed step (it is shared with the tests);
    // unwinding drops every resource either way, and after Ctrl-C the
    // children's deaths are expected, not worth a backtrace.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !interrupted() {
            default_hook(info);
        }
    }));
    let outcome = std::panic::catch_unwind(run);
    match outcome {
        _ if interrupted() => {
            println!("\ninterrupted: the simulated node is gone (pods, namespaces, cgroups)");
            ExitCode::from(130)
        }
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(err)) => {
            eprintln!("\ndemo failed: {err:#}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("\ndemo failed (see above); the simulated node was removed");
            ExitCode::FAILURE
        }
    }
}

fn heading(text: &str) {
    println!("\n━━ {text}");
}

fn say(text: &str) {
    println!("   {text}");
}

/// This process (the API server and OTLP receiver threads, and the agent
/// it starts) in a cgroup of its own, which the agent is told to exclude:
/// the demo's plumbing is not part of the shop. Moves back out on drop.
struct ControlPlane {
    cgroup: TestCgroup,
    home: PathBuf,
}

impl ControlPlane {
    fn enter() -> anyhow::Result<Self> {
        let (mount, _) = cgroup2_mount();
        let own = std::fs::read_to_string("/proc/self/cgroup").context("read /proc/self/cgroup")?;
        let home = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .context("no cgroup v2 line in /proc/self/cgroup")?;
        let home = mount
            .join(home.trim_start_matches('/'))
            .join("cgroup.procs");
        let cgroup = TestCgroup::new("demo-control-plane");
        std::fs::write(cgroup.procs_file(), std::process::id().to_string())
            .context("join the control-plane cgroup")?;
        Ok(Self { cgroup, home })
    }

    fn path(&self) -> &str {
        self.cgroup.path()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Out first: removing the cgroup kills what is left in it.
        let _ = std::fs::write(&self.home, std::process::id().to_string());
    }
}

/// The simulated node. Field order is drop order: servers and the pods'
/// cgroups (and every process in them) go before the network and the API.
struct Shop {
    servers: Vec<Peer>,
    pods: Vec<PodCgroup>,
    lan: Lan,
    api: FakeApi,
    kubeconfig: PathBuf,
}

impl Shop {
    fn build(dir: &Path) -> anyhow::Result<Self> {
        let lan = Lan::new(TIERS.len());
        let backends: Vec<String> = SERVICES.iter().map(|s| Lan::v4(s.tier)).collect();
        let cluster_ips: Vec<ClusterIp<'_>> = SERVICES
            .iter()
            .zip(&backends)
            .map(|(s, backend)| ClusterIp {
                ip: s.cluster_ip,
                port: s.port,
                backend_ip: backend,
                backend_port: s.target(),
            })
            .collect();
        let api = FakeApi::start();
        let mut pods = Vec::new();
        let mut uids = Vec::new();
        for (i, tier) in TIERS.iter().enumerate() {
            checkpoint()?;
            let uid = pod_uid(tier.name);
            pods.push(PodCgroup::burstable(&uid, &container_id(tier.name)));
            kube_proxy(&lan.members[i], &lan.device(i), &cluster_ips);
            uids.push(uid);
        }
        eastwatch_tests::shop::describe(&api, &uids);
        let kubeconfig = api.write_kubeconfig(dir, CLUSTER);

        let mut servers = Vec::new();
        for (i, tier) in TIERS.iter().enumerate() {
            let Some(port) = tier.serves else { continue };
            let listen = format!("{}:{port}", Lan::v4(i));
            let mut server = Peer::spawn(
                pods[i].cgroup(),
                Some(&lan.members[i]),
                &["tcp-serve", "--listen", &listen],
            );
            server.ready();
            servers.push(server);
        }
        Ok(Self {
            servers,
            pods,
            lan,
            api,
            kubeconfig,
        })
    }

    fn print(&self) {
        for (i, tier) in TIERS.iter().enumerate() {
            let serves = tier
                .serves
                .map(|p| format!("serves :{p}"))
                .unwrap_or_default();
            say(&format!(
                "pod {:<26} {:<10} {:<12} cgroup {}",
                format!("{NAMESPACE}/{}-{}-{}", tier.name, tier.hash, tier.suffix),
                Lan::v4(i),
                serves,
                self.pods[i].cgroup().path()
            ));
        }
        for service in &SERVICES {
            say(&format!(
                "Service {NAMESPACE}/{:<8} {}:{} → {} (nftables DNAT, as kube-proxy)",
                service.name, service.cluster_ip, service.port, TIERS[service.tier].name
            ));
        }
        say(&format!(
            "Kubernetes API (list/watch) at http://{} for the agent's kube-rs client; {} servers up",
            self.api.addr(),
            self.servers.len()
        ));
    }

    /// The agent's identity flags, and the control plane left out.
    fn agent_args(&self, control: &ControlPlane) -> Vec<String> {
        vec![
            "--exclude-cgroup".into(),
            control.path().into(),
            // Any free port: the demo must not clash with a real agent.
            "--health-listen".into(),
            "127.0.0.1:0".into(),
            "--kubeconfig".into(),
            self.kubeconfig.display().to_string(),
            "--node-name".into(),
            NODE.into(),
            "--count-interval".into(),
            "200ms".into(),
        ]
    }

    fn peer(&self, from: usize, args: &[&str]) -> anyhow::Result<()> {
        checkpoint()?;
        Peer::spawn(
            self.pods[from].cgroup(),
            Some(&self.lan.members[from]),
            args,
        )
        .finish();
        checkpoint()
    }

    /// One TCP connection from `from` to `to`, with a line exchanged.
    fn connect(&self, from: usize, to: &str) -> anyhow::Result<()> {
        self.peer(from, &["tcp-connect", "--to", to])
    }

    /// What the shop does all day: frontend → api and api → db, through
    /// their Services.
    fn everyday_traffic(&self) -> anyhow::Result<()> {
        for _ in 0..EVERYDAY_ROUNDS {
            self.connect(FRONTEND, &SERVICES[API_SERVICE].addr())?;
            self.connect(API, &SERVICES[DB_SERVICE].addr())?;
        }
        Ok(())
    }
}

fn workload(tier: usize) -> String {
    format!("workload:{NAMESPACE}/deployment/{}", TIERS[tier].name)
}

const SHOP_PREFIX: &str = "workload:shop/";

/// Whether a canonical identity (a JSON string) is one of the shop's.
fn is_shop(id: &Value) -> bool {
    id.as_str().is_some_and(|id| id.starts_with(SHOP_PREFIX))
}

/// The learn evidence of the shop's edges alone, for the checks and the map.
fn write_shop_evidence(all: &Path, shop: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(all).context("read the learn evidence")?;
    let mut evidence: Value = serde_json::from_str(&text).context("parse the learn evidence")?;
    if let Some(edges) = evidence["edges"].as_array_mut() {
        let shop_end = |end: &Value| end["type"] == "workload" && end["namespace"] == NAMESPACE;
        edges.retain(|e| shop_end(&e["from"]) || shop_end(&e["to"]));
    }
    let text = serde_json::to_string_pretty(&evidence)?;
    std::fs::write(shop, text).context("write the shop's evidence")
}

/// Says how much of what the agent saw was other traffic on this machine:
/// the story is about the shop, the agent watches everything.
fn other_traffic(count: usize, what: &str) {
    if count > 0 {
        say(&format!(
            "(+ {count} {what} about other traffic on this machine, not the shop's)"
        ));
    }
}

/// The baseline file with only the edges that name the shop, and how many
/// other edges were left out.
fn shop_part(yaml: &str) -> (String, usize) {
    let mut shown = String::new();
    let mut hidden = 0;
    let mut edge = String::new();
    let mut flush = |edge: &mut String, shown: &mut String| {
        if edge.contains(&format!("namespace: {NAMESPACE}\n")) {
            shown.push_str(edge);
        } else if !edge.is_empty() {
            hidden += 1;
        }
        edge.clear();
    };
    // The indentation of the `edges:` list's items, while inside it.
    let mut items: Option<usize> = None;
    for line in yaml.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(item) = items {
            let next_item = indent == item && line.trim_start().starts_with("- ");
            if next_item || indent <= item {
                flush(&mut edge, &mut shown);
            }
            if next_item || indent > item {
                edge.push_str(line);
                edge.push('\n');
                continue;
            }
            items = None;
        }
        shown.push_str(line);
        shown.push('\n');
        if line.trim() == "edges:" {
            items = Some(indent);
        }
    }
    flush(&mut edge, &mut shown);
    (shown, hidden)
}

/// Whether an alert's end (`source`, `destination`) is a shop workload.
fn shop_end(end: &Value) -> bool {
    end["identity"]["type"] == "workload" && end["identity"]["namespace"] == NAMESPACE
}

/// Whether an alert's end is tier `tier`'s workload.
fn tier_end(end: &Value, tier: usize) -> bool {
    shop_end(end) && end["identity"]["name"] == TIERS[tier].name
}

fn about_shop(alert: &Value) -> bool {
    shop_end(&alert["source"]) || shop_end(&alert["destination"])
}

/// Waits until the agent's metrics count `observations` judged flow
/// observations of the shop's workloads (every verdict): then everything
/// the replay could raise has been raised.
fn wait_judged(collector: &Collector, observations: u64) -> anyhow::Result<u64> {
    let judged = || -> u64 {
        let mut latest: std::collections::BTreeMap<(String, String), i64> = Default::default();
        for point in collector.points() {
            let (Some(workload), Some(verdict)) = (
                point.attributes.get("eastwatch.workload"),
                point.attributes.get("eastwatch.verdict"),
            ) else {
                continue;
            };
            if point.metric == "eastwatch.flows.judged" && workload.starts_with(SHOP_PREFIX) {
                let total = latest
                    .entry((workload.clone(), verdict.clone()))
                    .or_default();
                *total = (*total).max(point.value);
            }
        }
        latest.values().map(|v| *v as u64).sum()
    };
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        checkpoint()?;
        let now = judged();
        if now >= observations {
            return Ok(now);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "the agent judged {} of the shop's {observations} flow observations",
        judged()
    )
}

/// Waits for an event, interruptibly.
fn wait_for(
    agent: &mut Agent,
    timeout: Duration,
    matches: impl Fn(&Value) -> bool,
) -> anyhow::Result<Option<Value>> {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        checkpoint()?;
        if let Some(found) = agent.wait_for(Duration::from_millis(200), &matches) {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn agent_args<'a>(first: &[&'a str], shop: &'a [String]) -> Vec<&'a str> {
    let mut args = first.to_vec();
    args.extend(shop.iter().map(String::as_str));
    args
}

fn run() -> anyhow::Result<()> {
    let eastwatch = agent_binary();
    println!(
        "eastwatch demo: one simulated Kubernetes node, a 3-tier shop, a compromised frontend"
    );
    let dir = TempDir::new("eastwatch-demo");
    let out = output_dir()?;
    let control = ControlPlane::enter()?;

    heading("1. The node: pods in kubepods cgroups and network namespaces, Services, the API");
    let shop = Shop::build(dir.path())?;
    shop.print();
    say(&format!(
        "the demo's own plumbing (API server, OTLP receiver, agent) runs in {}, excluded with --exclude-cgroup",
        control.path()
    ));
    let identity = shop.agent_args(&control);

    heading("2. Learn: eastwatch watches the everyday traffic");
    let learned_file = out.join("learned.yaml");
    let baseline = out.join("shop-baseline.yaml");
    let all_evidence = out.join("evidence.json");
    let evidence = out.join("shop-evidence.json");
    let (baseline_arg, evidence_arg) = (path(&baseline)?, path(&all_evidence)?);
    let mut learner = Agent::spawn(&agent_args(
        &[
            "learn",
            "--out",
            path(&learned_file)?,
            "--evidence",
            evidence_arg,
            "--name",
            "shop",
        ],
        &identity,
    ));
    shop.everyday_traffic()?;
    for (from, to) in [(FRONTEND, API), (API, DB)] {
        let learned = wait_for(&mut learner, Duration::from_secs(20), |e| {
            e["event"] == "learned" && e["from"] == workload(from) && e["to"] == workload(to)
        })?
        .with_context(|| {
            format!(
                "never learned {} -> {}:\n{}",
                workload(from),
                workload(to),
                learner.stderr_text()
            )
        })?;
        say(&format!(
            "learned {} → {} {}/{}",
            learned["from"].as_str().unwrap_or_default(),
            learned["to"].as_str().unwrap_or_default(),
            learned["transport"].as_str().unwrap_or_default(),
            learned["port"]
        ));
    }
    let learned = learner.stop();
    let (shop_edges, other_edges): (Vec<&Value>, Vec<&Value>) = learned
        .of_kind("learned")
        .partition(|e| is_shop(&e["from"]) || is_shop(&e["to"]));
    say(&format!(
        "learned {} (edge, port) pairs of the shop",
        shop_edges.len()
    ));
    other_traffic(other_edges.len(), "edges learned");
    heading(&format!(
        "3. Review: the shop's part of {} as it goes to code review ({})",
        learned_file.display(),
        baseline.display()
    ));
    let text = std::fs::read_to_string(&learned_file).context("read the learned baseline")?;
    // The reviewer keeps the shop's edges: what else this machine did is
    // someone else's baseline.
    let (shown, hidden) = shop_part(&text);
    std::fs::write(&baseline, &shown).context("write the reviewed baseline")?;
    for line in shown.lines() {
        println!("   │ {line}");
    }
    other_traffic(hidden, "edges left to their owners' review");
    write_shop_evidence(&all_evidence, &evidence)?;
    let lint = Command::new(&eastwatch)
        .args(["baseline", "lint", baseline_arg])
        .output()
        .context("run eastwatch baseline lint")?;
    let lint_out = String::from_utf8_lossy(&lint.stdout) + String::from_utf8_lossy(&lint.stderr);
    say(&format!(
        "$ eastwatch baseline lint {} → {}",
        baseline.display(),
        if lint.status.success() {
            "ok"
        } else {
            "FAILED"
        }
    ));
    for line in lint_out.lines().filter(|l| !l.trim().is_empty()) {
        say(&format!("  {line}"));
    }
    ensure!(lint.status.success(), "the learned baseline does not lint");

    heading("4. Monitor, with alerts to a local OTLP/gRPC receiver");
    let collector = Collector::start(Protocol::Grpc);
    let endpoint = collector.endpoint();
    let spool = dir.join("spool");
    let alerts_file = out.join("shop-alerts.jsonl");
    let mut monitor = Agent::spawn_with_env(
        &agent_args(
            &[
                "monitor",
                "--baseline",
                baseline_arg,
                "--alerts-file",
                path(&alerts_file)?,
                "--otlp-endpoint",
                &endpoint,
                "--otlp-protocol",
                collector.protocol_flag(),
                "--spool-dir",
                path(&spool)?,
                "--fan-out-threshold",
                "8",
            ],
            &identity,
        ),
        // Metrics often enough to tell when the replay has been judged.
        &[("OTEL_METRIC_EXPORT_INTERVAL", "300")],
    );
    say(&format!("receiver at {endpoint}; agent monitoring"));
    shop.everyday_traffic()?;
    let judged = wait_judged(&collector, EVERYDAY_OBSERVATIONS)?;
    let quiet = shop_alerts(&mut monitor);
    say(&format!(
        "everyday traffic replayed: {} alerts; the agent judged {judged} flow observations of the shop (learned paths are allowed)",
        quiet.len()
    ));
    for alert in &quiet {
        print_alert(alert);
    }
    ensure!(quiet.is_empty(), "learned paths raised alerts");

    heading("5. Attack: the frontend is compromised and moves laterally");
    let db_pod = format!("{}:5432", Lan::v4(DB));
    say(&format!(
        "a) frontend → db's pod IP {db_pod} directly, skipping the api tier"
    ));
    shop.connect(FRONTEND, &db_pod)?;
    expect_alert(&mut monitor, "frontend → db", |a| {
        a["event"] == UNAUTHORIZED
            && tier_end(&a["source"], FRONTEND)
            && tier_end(&a["destination"], DB)
    })?;
    let udp_to = format!("{}:9999", Lan::v4(API));
    say(&format!("b) a new UDP path: frontend → api {udp_to}/udp"));
    shop.peer(FRONTEND, &["udp-send", "--to", &udp_to, "--count", "3"])?;
    expect_alert(&mut monitor, "the UDP path", |a| {
        a["event"] == UNAUTHORIZED
            && tier_end(&a["source"], FRONTEND)
            && a["flow"]["transport"] == "udp"
    })?;
    let db_ip = Lan::v4(DB);
    say(&format!("c) a port sweep of {db_ip}, ports 20-40"));
    shop.peer(
        FRONTEND,
        &["tcp-sweep", "--to", &db_ip, "--first", "20", "--last", "40"],
    )?;
    expect_alert(&mut monitor, "the sweep (T1046)", |a| {
        tier_end(&a["source"], FRONTEND) && a["details"]["report"] == "scan"
    })?;
    // Stopping closes the windows: repeats are reported then.
    let events = monitor.stop();
    let (raised, others): (Vec<&Value>, Vec<&Value>) = events
        .all
        .iter()
        .filter(|e| is_alert(e))
        .partition(|a| about_shop(a));

    heading("6. Alerts printed by the agent (JSON lines on stdout; summaries here)");
    for alert in &raised {
        print_alert(alert);
    }
    other_traffic(others.len(), "alerts");

    heading("7. Alerts received over OTLP/gRPC (official opentelemetry-proto types)");
    // The agent drained its spool before it exited.
    let shop_logs = |logs: &[ReceivedLog]| -> Vec<ReceivedLog> {
        logs.iter()
            .filter(|l| {
                ["eastwatch.source.id", "eastwatch.destination.id"]
                    .iter()
                    .any(|key| l.attr(key).is_some_and(|id| id.starts_with(SHOP_PREFIX)))
            })
            .cloned()
            .collect()
    };
    let received = shop_logs(&collector.wait_logs(Duration::from_secs(10), |logs| {
        shop_logs(logs).len() >= raised.len()
    }));
    for log in &received {
        print_log(log);
    }
    ensure!(
        received.len() == raised.len(),
        "{} alerts printed but {} received over OTLP",
        raised.len(),
        received.len()
    );
    prevent(&eastwatch, &shop, &out)?;
    println!(
        "\nDone: {} alerts raised, {} log records received; removing the node.",
        raised.len(),
        received.len()
    );
    Ok(())
}

/// What the demo leaves for you to look at, in `EASTWATCH_DEMO_OUT`
/// (`cargo xtask demo`: `target/demo`).
const OUTPUTS: [&str; 6] = [
    "shop-baseline.yaml",
    "shop-evidence.json",
    "shop-alerts.jsonl",
    "shop-networkpolicies.yaml",
    "shop-ciliumnetworkpolicies.yaml",
    "shop-map.html",
];

fn output_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("EASTWATCH_DEMO_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("eastwatch-demo"));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    for name in OUTPUTS {
        match std::fs::remove_file(dir.join(name)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                return Err(err).with_context(|| format!("remove the old {name}"));
            }
            _ => {}
        }
    }
    Ok(dir)
}

/// Runs `eastwatch` with `args`; its stderr lines are said, its output
/// returned.
fn eastwatch_says(eastwatch: &Path, args: &[&str]) -> anyhow::Result<std::process::Output> {
    say(&format!("$ eastwatch {}", args.join(" ")));
    let output = Command::new(eastwatch)
        .args(args)
        .output()
        .with_context(|| format!("run eastwatch {}", args.join(" ")))?;
    for line in String::from_utf8_lossy(&output.stderr).lines() {
        say(&format!("  {line}"));
    }
    Ok(output)
}

/// The reviewed baseline becomes prevention (network policies, checked
/// against what was seen) and a picture (the service map).
fn prevent(eastwatch: &Path, shop: &Shop, out: &Path) -> anyhow::Result<()> {
    heading("8. Prevent: the baseline as Kubernetes NetworkPolicies (pod labels from the API)");
    let (baseline, evidence, alerts) = (
        path_of(out, "shop-baseline.yaml")?,
        path_of(out, "shop-evidence.json")?,
        path_of(out, "shop-alerts.jsonl")?,
    );
    let kubeconfig = path(&shop.kubeconfig)?;
    // `eastwatch baseline export` of the learned baseline, labels from the
    // shop's API.
    let export = |format: &str, rest: &[&str]| {
        let mut args = vec![
            "baseline",
            "export",
            &baseline,
            "--format",
            format,
            "--kubeconfig",
            kubeconfig,
        ];
        args.extend_from_slice(rest);
        eastwatch_says(eastwatch, &args)
    };
    for (format, file) in [
        ("networkpolicy", "shop-networkpolicies.yaml"),
        ("ciliumnetworkpolicy", "shop-ciliumnetworkpolicies.yaml"),
    ] {
        let target = path_of(out, file)?;
        let export = export(format, &["--out", &target])?;
        ensure!(
            export.status.success(),
            "eastwatch baseline export --format {format} failed"
        );
        if format == "networkpolicy" {
            let text = std::fs::read_to_string(&target).context("read the exported policies")?;
            for line in text.lines() {
                println!("   │ {line}");
            }
        }
    }
    say(
        "the db admits only the api on 5432/tcp; the api only the frontend on 8080/tcp, the port its pods",
    );
    say("receive behind Service api's port 80 (policies apply after kube-proxy's DNAT)");

    heading("9. Check: what enforcing them would have blocked");
    let check = export("networkpolicy", &["--check", &alerts])?;
    let report = String::from_utf8_lossy(&check.stdout);
    for line in report.lines() {
        say(&format!("  {line}"));
    }
    ensure!(
        check.status.code() == Some(1)
            && report.contains("BLOCKED      workload:shop/deployment/frontend -> workload:shop/deployment/db 5432/tcp")
            && report.contains("BLOCKED      workload:shop/deployment/frontend -> workload:shop/deployment/api 9999/udp"),
        "the check does not block the attack:\n{report}"
    );
    let everyday = export("networkpolicy", &["--check", &evidence])?;
    let report = String::from_utf8_lossy(&everyday.stdout);
    say(&format!(
        "  the learned traffic: {}",
        report.lines().last().unwrap_or_default()
    ));
    ensure!(
        everyday.status.success(),
        "the policies block learned traffic:\n{report}"
    );

    heading("10. The service map");
    let map = path_of(out, "shop-map.html")?;
    let graph = eastwatch_says(
        eastwatch,
        &[
            "baseline",
            "graph",
            &baseline,
            "--evidence",
            &evidence,
            "--alerts",
            &alerts,
            "--out",
            &map,
        ],
    )?;
    ensure!(graph.status.success(), "eastwatch baseline graph failed");
    say(&format!(
        "open {map} in any browser: namespaces, ports, unused edges dashed, the attack in red"
    ));
    say(&format!("the demo's files stay in {}", out.display()));
    Ok(())
}

fn path_of(dir: &Path, name: &str) -> anyhow::Result<String> {
    path(&dir.join(name)).map(str::to_owned)
}

fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

/// The alerts about the shop printed so far (every report).
fn shop_alerts(agent: &mut Agent) -> Vec<Value> {
    agent
        .events_so_far(Duration::from_millis(300))
        .into_iter()
        .filter(is_alert)
        .filter(about_shop)
        .collect()
}

fn expect_alert(
    agent: &mut Agent,
    what: &str,
    matches: impl Fn(&Value) -> bool,
) -> anyhow::Result<()> {
    match wait_for(agent, Duration::from_secs(20), matches)? {
        Some(alert) => {
            say(&format!("   alerted: {}", one_line(&alert)));
            Ok(())
        }
        None => bail!("no alert for {what}:\n{}", agent.stderr_text()),
    }
}

fn one_line(alert: &Value) -> String {
    let technique = alert["technique"]["id"]
        .as_str()
        .or_else(|| alert["technique"].as_str())
        .unwrap_or("-");
    format!(
        "[{}] {} {}",
        alert["severity"].as_str().unwrap_or("?"),
        technique,
        alert["summary"].as_str().unwrap_or_default()
    )
}

fn print_alert(alert: &Value) {
    say(&format!(
        "{:<6} {}",
        alert["details"]["report"].as_str().unwrap_or(""),
        one_line(alert)
    ));
}

fn print_log(log: &ReceivedLog) {
    let attr = |key: &str| log.attr(key).unwrap_or_else(|| "-".into());
    say(&format!(
        "{} {:<6} severity={} {} → {} {}:{}/{} technique={} node={}",
        log.event_name(),
        attr("eastwatch.details.report"),
        log.record.severity_text,
        attr("eastwatch.source.id"),
        attr("eastwatch.destination.id"),
        attr("destination.address"),
        attr("destination.port"),
        attr("network.transport"),
        attr("threat.technique.id"),
        log.resource
            .get("k8s.node.name")
            .map_or("-", String::as_str),
    ));
}
