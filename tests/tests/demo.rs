//! `cargo xtask demo` runs the `eastwatch-demo` binary: it must tell its
//! whole story (and it checks the story itself: no alert for learned paths,
//! one for each attack step, every alert received over OTLP, the exported
//! policies blocking the attack and passing the learned traffic), and it
//! must leave nothing behind but its files, finished or interrupted with
//! Ctrl-C. It runs with unrelated traffic on the machine, which it must
//! tell apart from the shop's. What it learns of the shop is the fixture
//! the export and map tests read.

// Test helpers fail the test by panicking, with the reason in the message.
#![allow(clippy::expect_used)]

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use eastwatch_tests::{Noise, TempDir, agent::agent_binary, cgroup::cgroup2_mount};

const DEMO: &str = env!("CARGO_BIN_EXE_eastwatch-demo");

/// Shared kubepods parents the demo makes when they are missing.
const KUBEPODS_PARENTS: [&str; 2] = ["kubepods.slice", "kubepods.slice/kubepods-burstable.slice"];

/// The kubepods parents that exist now.
fn kubepods_parents() -> BTreeSet<String> {
    let (mount, _) = cgroup2_mount();
    KUBEPODS_PARENTS
        .iter()
        .filter(|p| mount.join(p).exists())
        .map(|p| p.to_string())
        .collect()
}

/// What the demo process `pid` made and left: network namespaces and test
/// cgroups named after its pid, the pods' cgroups it printed (and their
/// pod slices), and kubepods parents that were not there before it ran.
fn leftovers(pid: u32, printed: &str, parents_before: &BTreeSet<String>) -> BTreeSet<String> {
    let marker = format!("{}x", pid % 100_000);
    let mut found = BTreeSet::new();
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        if name
            .strip_prefix("ew")
            .is_some_and(|rest| rest.starts_with(&marker))
        {
            found.insert(format!("netns {name}"));
        }
    }
    let (mount, _) = cgroup2_mount();
    if let Ok(entries) = std::fs::read_dir(mount.join("eastwatch-tests")) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains(&marker) {
                found.insert(format!("cgroup {}", entry.path().display()));
            }
        }
    }
    let pods = printed
        .lines()
        .filter(|l| l.trim_start().starts_with("pod "))
        .filter_map(|l| l.split(" cgroup /kubepods.slice/").nth(1));
    for pod in pods {
        let scope = mount.join("kubepods.slice").join(pod.trim());
        for dir in [Some(scope.as_path()), scope.parent()]
            .into_iter()
            .flatten()
        {
            if dir.exists() {
                found.insert(format!("cgroup {}", dir.display()));
            }
        }
    }
    for parent in kubepods_parents().difference(parents_before) {
        found.insert(format!("cgroup {parent} (made by the demo)"));
    }
    found
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
    // The story holds while other traffic runs on the machine.
    let _noise = Noise::start();
    let parents = kubepods_parents();
    let files = TempDir::new("demo-out");
    let child = demo(files.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run eastwatch-demo");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for needle in [
        // frontend dials Service api on port 80; one connection is one
        // edge, on the server's port (8080, after the DNAT).
        "learned workload:shop/deployment/frontend → workload:shop/deployment/api tcp/8080",
        "learned workload:shop/deployment/api → workload:shop/deployment/db tcp/5432",
        "learned 2 (edge, port) pairs of the shop",
        "lint",
        "everyday traffic replayed: 0 alerts; the agent judged 12 flow observations",
        "workload:shop/deployment/frontend -> workload:shop/deployment/db port 5432",
        "unauthorized udp flow workload:shop/deployment/frontend -> workload:shop/deployment/api port 9999",
        "T1046",
        "eastwatch.alert.unauthorized_flow first  severity=medium workload:shop/deployment/frontend → workload:shop/deployment/db 10.78.0.3:5432/tcp",
        "8. Prevent",
        "│   name: eastwatch-deployment-db-ingress",
        "│       port: 8080",
        "BLOCKED      workload:shop/deployment/frontend -> workload:shop/deployment/db 5432/tcp",
        "the learned traffic: 2 flows: 2 admitted, 0 blocked, 0 undetermined",
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
    // The agent saw the other traffic too (the monitor runs for a while
    // longer than the learner); the story leaves it out.
    assert!(
        stdout.contains("about other traffic on this machine, not the shop's"),
        "the demo saw no other traffic:\n{stdout}"
    );
    assert_eq!(
        leftovers(pid, &stdout, &parents),
        BTreeSet::new(),
        "the demo left something behind"
    );
}

#[test]
fn ctrl_c_mid_demo_removes_the_simulated_node() {
    eastwatch_tests::require_root();
    let parents = kubepods_parents();
    let files = TempDir::new("demo-out");
    let mut child = demo(files.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn eastwatch-demo");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    // Interrupt while it learns: pods, servers and the agent all running,
    // the first edge learned.
    let mut seen = String::new();
    for line in lines.by_ref().map_while(Result::ok) {
        seen.push_str(&line);
        seen.push('\n');
        if line.trim_start().starts_with("learned workload:") {
            break;
        }
    }
    assert!(
        seen.contains("learned workload:"),
        "the demo never learned:\n{seen}"
    );
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
    assert_eq!(
        leftovers(child.id(), &seen, &parents),
        BTreeSet::new(),
        "Ctrl-C left something behind"
    );
}
