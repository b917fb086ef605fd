//! Overload: a consumer that falls behind loses events, and every loss is
//! counted, reported, and (where the kernel's flow table still has the edge)
//! recovered.

use eastwatch_tests::{Agent, Peer, TestCgroup, events::FlowExt};

const FIRST_PORT: u16 = 20000;
const LAST_PORT: u16 = 29999;

#[test]
fn a_flooded_ring_buffer_counts_and_reports_every_loss() {
    // A one-page ring buffer holds a few dozen events.
    let agent = Agent::start(&["--ring-buffer-bytes", "4096"]);
    let sweeper = TestCgroup::new("flood");

    // Freeze the consumer; the kernel keeps producing.
    agent.signal(libc::SIGSTOP);
    let sweep = Peer::spawn(
        &sweeper,
        None,
        &[
            "udp-sweep",
            "--to",
            "127.0.0.1",
            "--first",
            &FIRST_PORT.to_string(),
            "--last",
            &LAST_PORT.to_string(),
        ],
    );
    sweep.finish();
    agent.signal(libc::SIGCONT);
    let events = agent.stop();

    let summary = events.summary();
    let kernel = &summary["kernel"];
    let offered = kernel["flow_events_offered"]["total"]
        .as_u64()
        .expect("offered");
    let lost = kernel["flow_ring_buffer_full"]["total"]
        .as_u64()
        .expect("lost");
    let delivered = summary["agent"]["flow_events_decoded"]
        .as_u64()
        .expect("decoded");
    let per_cpu: u64 = kernel["flow_ring_buffer_full"]["per_cpu"]
        .as_array()
        .expect("per cpu")
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    eprintln!(
        "flood: offered={offered} delivered={delivered} lost={lost} decode_rate={}/s",
        summary["decode_rate_per_sec"]
    );
    let sent = u64::from(LAST_PORT - FIRST_PORT) + 1;
    assert!(offered >= sent, "every new edge was offered: {summary}");
    assert!(
        lost > 0,
        "a frozen consumer with one page must lose: {summary}"
    );
    assert_eq!(
        offered,
        delivered + lost,
        "every event delivered or counted lost"
    );
    assert_eq!(per_cpu, lost, "per-CPU counters add up");

    let loss = events
        .of_kind("loss")
        .next()
        .unwrap_or_else(|| panic!("no loss report:\n{}", events.dump()));
    assert!(
        loss["new"]["flow_ring_buffer_full"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{loss}"
    );

    // Nothing lost silently: the kernel's flow table still had every edge,
    // so each port is reported, as a delivered or a recovered flow.
    let flows = events.flows_of(sweeper.id());
    let mut ports: Vec<u64> = flows.iter().map(|f| f.remote_port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len() as u64, sent, "every swept port is reported");
    let recovered = flows.iter().filter(|f| f["origin"] == "recovered").count() as u64;
    assert!(
        recovered > 0,
        "lost events were recovered from the flow table"
    );
    // The agent's count covers every recovered flow it printed, the
    // sweeper's and any other traffic's.
    let printed = events
        .of_kind("flow")
        .filter(|f| f["origin"] == "recovered")
        .count() as u64;
    assert_eq!(summary["agent"]["flows_recovered"].as_u64(), Some(printed));
}
