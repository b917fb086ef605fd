//! Kernel diagnostics (aya-log) are off by default and switch at run time.

use std::time::Duration;

use eastwatch_tests::{Agent, Peer, TempDir, TestCgroup};

fn connect_once(cgroup: &TestCgroup) {
    let mut server = Peer::spawn(
        cgroup,
        None,
        &["tcp-serve", "--listen", "127.0.0.1:0", "--count", "1"],
    );
    let addr = server.ready();
    Peer::spawn(cgroup, None, &["tcp-connect", "--to", &addr.to_string()]).finish();
    server.finish();
}

#[test]
fn sigusr1_switches_kernel_diagnostics_on() {
    let mut agent = Agent::start(&[]);
    let quiet = TestCgroup::new("quiet");
    connect_once(&quiet);
    let marker = |cgroup: &TestCgroup| format!("new flow cgroup={}", cgroup.id());
    assert!(
        agent
            .wait_for(Duration::from_secs(20), |e| {
                e["event"] == "flow" && e["cgroup"]["id"].as_u64() == Some(quiet.id())
            })
            .is_some(),
        "the flow itself is reported"
    );

    agent.signal(libc::SIGUSR1);
    assert!(
        agent.wait_for_log(Duration::from_secs(20), "kernel diagnostics switched"),
        "the agent acknowledges the switch:\n{}",
        agent.stderr_text()
    );
    let loud = TestCgroup::new("loud");
    connect_once(&loud);
    assert!(
        agent
            .wait_for(Duration::from_secs(20), |e| {
                e["event"] == "flow" && e["cgroup"]["id"].as_u64() == Some(loud.id())
            })
            .is_some(),
        "the flow itself is reported"
    );
    assert!(
        agent.wait_for_log(Duration::from_secs(20), &marker(&loud)),
        "SIGUSR1 switched kernel diagnostics on:\n{}",
        agent.stderr_text()
    );
    let events = agent.stop();
    assert!(
        !events.stderr.contains(&marker(&quiet)),
        "diagnostics are off by default:\n{}",
        events.stderr
    );
}

/// The same switch in learn mode (every mode installs it): the agent
/// keeps learning and stops cleanly, where SIGUSR1 used to kill it.
#[test]
fn sigusr1_switches_kernel_diagnostics_in_learn_mode_too() {
    let dir = TempDir::new("diagnostics-learn");
    let learned = dir.join("learned.yaml");
    let mut agent = Agent::spawn(&[
        "learn",
        "--out",
        learned.to_str().expect("path"),
        "--count-interval",
        "200ms",
    ]);
    agent.signal(libc::SIGUSR1);
    assert!(
        agent.wait_for_log(Duration::from_secs(5), "kernel diagnostics switched"),
        "the agent acknowledges the switch:\n{}",
        agent.stderr_text()
    );
    let loud = TestCgroup::new("loud-learn");
    connect_once(&loud);
    let marker = format!("new flow cgroup={}", loud.id());
    assert!(
        agent.wait_for_log(Duration::from_secs(5), &marker),
        "SIGUSR1 switched kernel diagnostics on:\n{}",
        agent.stderr_text()
    );
    let learned_edge = agent.wait_for(Duration::from_secs(5), |e| {
        e["event"] == "learned" && e["from"] == format!("cgroup:{}", loud.path())
    });
    assert!(
        learned_edge.is_some(),
        "still learning after the switch:\n{}",
        agent.stderr_text()
    );
    // stop() asserts a clean exit; the summary says learn ran to its end.
    let events = agent.stop();
    assert_eq!(events.summary()["command"], "learn", "{}", events.dump());
}
