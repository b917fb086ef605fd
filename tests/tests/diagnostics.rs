//! Kernel diagnostics (aya-log) are off by default and switch at run time.

use std::time::Duration;

use eastwatch_tests::{Agent, Peer, TestCgroup};

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
            .wait_for(Duration::from_secs(5), |e| {
                e["event"] == "flow" && e["cgroup"]["id"].as_u64() == Some(quiet.id())
            })
            .is_some(),
        "the flow itself is reported"
    );

    agent.signal(libc::SIGUSR1);
    assert!(
        agent.wait_for_log(Duration::from_secs(5), "kernel diagnostics switched"),
        "the agent acknowledges the switch:\n{}",
        agent.stderr_text()
    );
    let loud = TestCgroup::new("loud");
    connect_once(&loud);
    assert!(
        agent
            .wait_for(Duration::from_secs(5), |e| {
                e["event"] == "flow" && e["cgroup"]["id"].as_u64() == Some(loud.id())
            })
            .is_some(),
        "the flow itself is reported"
    );
    assert!(
        agent.wait_for_log(Duration::from_secs(5), &marker(&loud)),
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
