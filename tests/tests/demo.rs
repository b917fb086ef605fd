//! `cargo xtask demo` runs the `eastwatch-demo` binary: it must tell its
//! whole story (and it checks the story itself: no alert for learned paths,
//! one for each attack step, every alert received over OTLP, the exported
//! policies blocking the attack and passing the learned traffic), and it
//! must leave nothing behind but its files, finished or interrupted with
//! Ctrl-C. What it learns is the fixture the export and map tests read.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use eastwatch_tests::{TempDir, agent::agent_binary, cgroup::cgroup2_mount};

const DEMO: &str = env!("CARGO_BIN_EXE_eastwatch-demo");

/// Network namespaces and kubepods/test cgroups on the machine.
fn leftovers() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    if let Ok(list) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&list.stdout).lines() {
            found.insert(format!("netns {line}"));
        }
    }
    let (mount, _) = cgroup2_mount();
    for top in ["kubepods.slice", "eastwatch-tests"] {
        walk(&mount.join(top), &mut found);
    }
    found
}

fn walk(dir: &Path, found: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.insert(format!("cgroup {}", entry.path().display()));
            walk(&entry.path(), found);
        }
    }
}

fn demo(out: &Path) -> Command {
    let mut command = Command::new(DEMO);
    command
        .env("EASTWATCH_BIN", agent_binary())
        .env("EASTWATCH_DEMO_OUT", out);
    command
}

#[test]
fn the_demo_tells_the_whole_story_and_leaves_nothing_behind() {
    eastwatch_tests::require_root();
    let before = leftovers();
    let files = TempDir::new("demo-out");
    let out = demo(files.path()).output().expect("run eastwatch-demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for needle in [
        "learned workload:shop/deployment/frontend → workload:shop/deployment/api tcp/80",
        "learned workload:shop/deployment/api → workload:shop/deployment/db tcp/5432",
        "lint",
        "everyday traffic replayed: 0 alerts",
        "workload:shop/deployment/frontend -> workload:shop/deployment/db port 5432",
        "unauthorized udp flow workload:shop/deployment/frontend -> workload:shop/deployment/api port 9999",
        "T1046",
        "eastwatch.alert.unauthorized_flow first  severity=medium workload:shop/deployment/frontend → workload:shop/deployment/db 10.78.0.3:5432/tcp",
        "8. Prevent",
        "│   name: eastwatch-deployment-db-ingress",
        "│       port: 8080",
        "BLOCKED      workload:shop/deployment/frontend -> workload:shop/deployment/db 5432/tcp",
        "the learned traffic: 3 flows: 3 admitted, 0 blocked, 0 undetermined",
        "10. The service map",
    ] {
        assert!(stdout.contains(needle), "no {needle:?} in\n{stdout}");
    }
    // Learning is deterministic: the baseline is the fixture's, byte for
    // byte, so the export and map tests read what the demo learns.
    let learned = std::fs::read_to_string(files.join("shop-baseline.yaml")).expect("baseline");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo/shop-baseline.yaml");
    assert_eq!(learned, std::fs::read_to_string(fixture).expect("fixture"));
    for file in [
        "shop-evidence.json",
        "shop-alerts.jsonl",
        "shop-networkpolicies.yaml",
        "shop-ciliumnetworkpolicies.yaml",
        "shop-map.html",
    ] {
        let len = std::fs::metadata(files.join(file)).map_or(0, |m| m.len());
        assert!(len > 0, "the demo wrote no {file}");
    }
    assert_eq!(leftovers(), before, "the demo left something behind");
}

#[test]
fn ctrl_c_mid_demo_removes_the_simulated_node() {
    eastwatch_tests::require_root();
    let before = leftovers();
    let files = TempDir::new("demo-out");
    let mut child = demo(files.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn eastwatch-demo");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    // Interrupt while it learns: pods, servers and the agent all running.
    let mut seen = String::new();
    for line in lines.by_ref().map_while(Result::ok) {
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("2. Learn") {
            break;
        }
    }
    assert!(
        seen.contains("2. Learn"),
        "the demo never started learning:\n{seen}"
    );
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("wait demo");
    assert_eq!(
        status.code(),
        Some(130),
        "exit status after Ctrl-C: {status}\n{}",
        rest.join("\n")
    );
    assert!(
        rest.iter().any(|l| l.contains("interrupted")),
        "it says it was interrupted: {rest:?}"
    );
    assert_eq!(leftovers(), before, "Ctrl-C left something behind");
}
