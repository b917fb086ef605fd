//! Flows end to end: the real agent, real programs in real cgroups and
//! network namespaces, and the exact records `eastwatch observe` prints.

use std::time::Duration;

use eastwatch_tests::{Agent, Peer, TestCgroup, TestNetns, VethPair, events::FlowExt};
use serde_json::Value;

fn owned_by(flow: &Value, cgroup: &TestCgroup) -> bool {
    flow["cgroup"]["id"].as_u64() == Some(cgroup.id())
}

/// Asserts the owner, process and netns fields every flow should carry.
fn assert_attributed(flow: &Value, cgroup: &TestCgroup, pid: u32, netns_inode: Option<u64>) {
    assert_eq!(flow["cgroup"]["path"], cgroup.path(), "owner path: {flow}");
    assert_eq!(
        flow["process"]["pid"].as_u64(),
        Some(u64::from(pid)),
        "pid: {flow}"
    );
    assert_eq!(flow["process"]["name"], "eastwatch-peer", "process: {flow}");
    assert!(
        flow["netns"]["cookie"].as_u64().is_some_and(|c| c != 0),
        "netns: {flow}"
    );
    if let Some(inode) = netns_inode {
        assert_eq!(
            flow["netns"]["inode"].as_u64(),
            Some(inode),
            "netns inode: {flow}"
        );
    }
    assert_eq!(flow["origin"], "kernel");
    assert_eq!(flow["count"], 1);
}

#[test]
fn tcp_ipv4_both_ends_have_their_own_owner() {
    let agent = Agent::start(&[]);
    let server_cg = TestCgroup::new("srv");
    let client_cg = TestCgroup::new("cli");
    let mut server = Peer::spawn(
        &server_cg,
        None,
        &["tcp-serve", "--listen", "127.0.0.1:0", "--count", "1"],
    );
    let addr = server.ready();
    let server_pid = server.pid();
    let client = Peer::spawn(
        &client_cg,
        None,
        &["tcp-connect", "--to", &addr.to_string()],
    );
    let client_pid = client.pid();
    client.finish();
    server.finish();
    let events = agent.stop();

    let egress = events.only_flow("client egress", |f| {
        owned_by(f, &client_cg) && f.direction() == "egress"
    });
    assert_attributed(egress, &client_cg, client_pid, None);
    assert_eq!(
        (
            egress.transport(),
            egress.outcome(),
            egress["family"].as_str()
        ),
        ("tcp", "established", Some("ipv4"))
    );
    assert_eq!(
        (egress.remote_address(), egress.remote_port()),
        ("127.0.0.1", u64::from(addr.port()))
    );
    assert_eq!(egress.service_port(), u64::from(addr.port()));

    let ingress = events.only_flow("server ingress", |f| {
        owned_by(f, &server_cg) && f.direction() == "ingress"
    });
    assert_attributed(ingress, &server_cg, server_pid, None);
    assert_eq!(
        ingress["process"]["source"], "socket",
        "accepted in softirq: {ingress}"
    );
    assert_eq!(ingress.outcome(), "established");
    assert_eq!(ingress.service_port(), u64::from(addr.port()));
    assert_eq!(ingress.local_port(), u64::from(addr.port()));
    assert_eq!(
        ingress.remote_port(),
        egress.local_port(),
        "the client's ephemeral port"
    );
    assert!(
        events
            .flows_of(server_cg.id())
            .iter()
            .all(|f| f.direction() == "ingress")
    );
    assert!(
        events
            .flows_of(client_cg.id())
            .iter()
            .all(|f| f.direction() == "egress")
    );
}

#[test]
fn tcp_ipv6_between_network_namespaces() {
    let agent = Agent::start(&[]);
    let net = VethPair::new();
    let server_cg = TestCgroup::new("srv6");
    let client_cg = TestCgroup::new("cli6");
    let listen = format!("[{}]:0", VethPair::B6);
    let mut server = Peer::spawn(
        &server_cg,
        Some(&net.b),
        &["tcp-serve", "--listen", &listen, "--count", "1"],
    );
    let addr = server.ready();
    let server_pid = server.pid();
    let client = Peer::spawn(
        &client_cg,
        Some(&net.a),
        &["tcp-connect", "--to", &addr.to_string()],
    );
    let client_pid = client.pid();
    client.finish();
    server.finish();
    let events = agent.stop();

    let egress = events.only_flow("client egress", |f| owned_by(f, &client_cg));
    assert_attributed(egress, &client_cg, client_pid, Some(net.a.inode()));
    assert_eq!(egress["family"], "ipv6");
    assert_eq!(egress.direction(), "egress");
    assert_eq!(egress.remote_address(), VethPair::B6);
    assert_eq!(egress["local"]["address"], VethPair::A6);

    let ingress = events.only_flow("server ingress", |f| owned_by(f, &server_cg));
    assert_attributed(ingress, &server_cg, server_pid, Some(net.b.inode()));
    assert_eq!(ingress.direction(), "ingress");
    assert_eq!(ingress.remote_address(), VethPair::A6);
    assert_eq!(ingress.service_port(), u64::from(addr.port()));
}

/// One UDP exchange (request and reply) in each of the four ways to do it;
/// the reply never shows up as a flow of its own.
fn udp_exchange(listen: &str, connected: bool, netns: Option<&VethPair>) {
    let agent = Agent::start(&[]);
    let server_cg = TestCgroup::new("usrv");
    let client_cg = TestCgroup::new("ucli");
    let mut server = Peer::spawn(
        &server_cg,
        netns.map(|n| &n.b),
        &["udp-serve", "--listen", listen, "--count", "3"],
    );
    let addr = server.ready();
    let server_pid = server.pid();
    let mut args = vec!["udp-send", "--reply", "--count", "3"];
    let to = addr.to_string();
    args.extend(["--to", to.as_str()]);
    if connected {
        args.push("--connected");
    }
    let client = Peer::spawn(&client_cg, netns.map(|n| &n.a), &args);
    let client_pid = client.pid();
    client.finish();
    server.finish();
    let events = agent.stop();

    let client_flows = events.flows_of(client_cg.id());
    assert_eq!(
        client_flows.len(),
        1,
        "replies are not new flows: {client_flows:#?}"
    );
    let egress = client_flows[0];
    assert_attributed(egress, &client_cg, client_pid, netns.map(|n| n.a.inode()));
    assert_eq!(
        (egress.direction(), egress.transport(), egress.outcome()),
        ("egress", "udp", "datagram")
    );
    assert_eq!(egress.remote_port(), u64::from(addr.port()));
    // Unconnected sends count datagrams; a connected socket counts its
    // connect() (the kernel sees no address on its sends).
    let is_client_egress = |f: &Value| owned_by(f, &client_cg) && f.direction() == "egress";
    let sends = if connected { 1 } else { 3 };
    assert_eq!(events.final_count(is_client_egress), sends);

    let server_flows = events.flows_of(server_cg.id());
    assert_eq!(
        server_flows.len(),
        1,
        "replies are not new flows: {server_flows:#?}"
    );
    let ingress = server_flows[0];
    assert_attributed(ingress, &server_cg, server_pid, netns.map(|n| n.b.inode()));
    assert_eq!(ingress.direction(), "ingress");
    assert_eq!(ingress.service_port(), u64::from(addr.port()));
    let is_server_ingress = |f: &Value| owned_by(f, &server_cg) && f.direction() == "ingress";
    assert_eq!(
        events.final_count(is_server_ingress),
        3,
        "three datagrams received"
    );
}

#[test]
fn udp_unconnected_ipv4_between_namespaces() {
    let net = VethPair::new();
    udp_exchange(&format!("{}:0", VethPair::B4), false, Some(&net));
}

#[test]
fn udp_connected_ipv4_between_namespaces() {
    let net = VethPair::new();
    udp_exchange(&format!("{}:0", VethPair::B4), true, Some(&net));
}

#[test]
fn udp_unconnected_ipv6_on_loopback() {
    udp_exchange("[::1]:0", false, None);
}

#[test]
fn udp_connected_ipv6_between_namespaces() {
    let net = VethPair::new();
    udp_exchange(&format!("[{}]:0", VethPair::B6), true, Some(&net));
}

#[test]
fn v4_mapped_destination_is_reported_as_ipv4() {
    let agent = Agent::start(&[]);
    let server_cg = TestCgroup::new("msrv");
    let client_cg = TestCgroup::new("mcli");
    let mut server = Peer::spawn(
        &server_cg,
        None,
        &["tcp-serve", "--listen", "127.0.0.1:0", "--count", "1"],
    );
    let addr = server.ready();
    let mapped = format!("[::ffff:127.0.0.1]:{}", addr.port());
    let client = Peer::spawn(&client_cg, None, &["tcp-connect", "--to", &mapped]);
    client.finish();
    server.finish();
    let events = agent.stop();

    let egress = events.only_flow("client egress", |f| owned_by(f, &client_cg));
    assert_eq!(egress["family"], "ipv4", "{egress}");
    assert_eq!(egress.remote_address(), "127.0.0.1");
    assert_eq!(egress["v4_mapped"], true);
    assert_eq!(egress["local"]["address"], "127.0.0.1");
    let ingress = events.only_flow("server ingress", |f| owned_by(f, &server_cg));
    assert_eq!(ingress["family"], "ipv4");
    assert_eq!(ingress.remote_port(), egress.local_port());
}

#[test]
fn refused_connect_is_an_attempt() {
    let agent = Agent::start(&[]);
    // A namespace of its own: nothing else can be listening there.
    let netns = TestNetns::new();
    let client_cg = TestCgroup::new("refused");
    let closed = "127.0.0.1:9";
    let client = Peer::spawn(
        &client_cg,
        Some(&netns),
        &["tcp-connect", "--expect-refused", "--to", closed],
    );
    let output = client.finish();
    assert!(output.starts_with("refused"), "{output}");
    let events = agent.stop();

    let attempt = events.only_flow("refused connect", |f| owned_by(f, &client_cg));
    assert_eq!(
        (attempt.direction(), attempt.outcome()),
        ("egress", "attempted")
    );
    assert_eq!(attempt.remote_port(), 9);
    assert_eq!(attempt["netns"]["inode"].as_u64(), Some(netns.inode()));
    assert!(
        events
            .flows_of(client_cg.id())
            .iter()
            .all(|f| f.outcome() != "established"),
        "nothing was established"
    );
}

/// Namespaces made after the agent started and gone before it reads their
/// flows (nothing pins them, and inode numbers of gone namespaces are
/// reused): each flow still names its namespace by cookie and by the inode
/// its process saw.
#[test]
fn flows_of_namespaces_gone_before_the_agent_reads_them_carry_their_inode() {
    let agent = Agent::start(&[]);
    let cgroup = TestCgroup::new("unpinned");
    // Frozen: it reads the events only once every namespace is gone.
    agent.signal(libc::SIGSTOP);
    let mut made = Vec::new();
    for _ in 0..3 {
        let peer = Peer::spawn(&cgroup, None, &["unpinned-loopback"]);
        let pid = u64::from(peer.pid());
        let output = peer.finish();
        let inode: u64 = output
            .trim()
            .strip_prefix("netns ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no inode: {output}"));
        made.push((pid, inode));
    }
    agent.signal(libc::SIGCONT);
    let events = agent.stop();

    let mut cookies = std::collections::BTreeSet::new();
    for (pid, inode) in made {
        let flows: Vec<&Value> = events
            .flows_of(cgroup.id())
            .into_iter()
            .filter(|f| f["process"]["pid"].as_u64() == Some(pid))
            .collect();
        // TCP and UDP, each seen at both ends.
        assert_eq!(flows.len(), 4, "{flows:#?}\n{}", events.dump());
        for flow in &flows {
            assert_eq!(flow["netns"]["inode"].as_u64(), Some(inode), "{flow}");
            assert_eq!(flow["netns"]["cookie"], flows[0]["netns"]["cookie"]);
        }
        cookies.insert(flows[0]["netns"]["cookie"].as_u64());
    }
    assert_eq!(cookies.len(), 3, "a cookie per namespace: {cookies:?}");
}

#[test]
fn a_thousand_repeats_fold_into_one_flow() {
    let agent = Agent::start(&[]);
    let server_cg = TestCgroup::new("fsrv");
    let client_cg = TestCgroup::new("fcli");
    let mut server = Peer::spawn(
        &server_cg,
        None,
        &["tcp-serve", "--listen", "127.0.0.1:0", "--count", "1000"],
    );
    let addr = server.ready();
    let client = Peer::spawn(
        &client_cg,
        None,
        &["tcp-connect", "--count", "1000", "--to", &addr.to_string()],
    );
    client.finish();
    server.finish();
    let events = agent.stop();

    let is_egress = |f: &Value| owned_by(f, &client_cg) && f.direction() == "egress";
    let is_ingress = |f: &Value| owned_by(f, &server_cg) && f.direction() == "ingress";
    // One new-flow record each: the kernel sent one event, not a thousand.
    events.only_flow("client egress", is_egress);
    events.only_flow("server ingress", is_ingress);
    assert_eq!(events.final_count(is_egress), 1000, "{}", events.dump());
    assert_eq!(events.final_count(is_ingress), 1000);
    assert_eq!(events.flows_of(client_cg.id()).len(), 1);
    assert_eq!(events.flows_of(server_cg.id()).len(), 1);
}

#[test]
fn a_cgroup_that_lived_briefly_still_has_its_path() {
    let mut agent = Agent::start(&[]);
    let server_cg = TestCgroup::new("ssrv");
    let mut server = Peer::spawn(
        &server_cg,
        None,
        &["tcp-serve", "--listen", "127.0.0.1:0", "--count", "1"],
    );
    let addr = server.ready();

    // Freeze the agent so it cannot look the cgroup up while it exists: only
    // the kernel's mkdir event can name it.
    agent.signal(libc::SIGSTOP);
    let brief = TestCgroup::new("brief");
    let (brief_id, brief_path) = (brief.id(), brief.path().to_owned());
    let client = Peer::spawn(&brief, None, &["tcp-connect", "--to", &addr.to_string()]);
    client.finish();
    brief.remove();
    assert!(!std::path::Path::new(&brief_path).exists());
    agent.signal(libc::SIGCONT);
    server.finish();
    let found = agent.wait_for(Duration::from_secs(10), |e| {
        e["event"] == "flow" && e["cgroup"]["id"].as_u64() == Some(brief_id)
    });
    let events = agent.stop();
    let flow = found.unwrap_or_else(|| panic!("no flow from the brief cgroup:\n{}", events.dump()));
    assert_eq!(flow["cgroup"]["path"], brief_path.as_str(), "{flow}");
    assert_eq!(flow["cgroup"]["removed"], true, "{flow}");
    assert_eq!(flow.direction(), "egress");
}

#[test]
fn connections_older_than_the_agent_are_reported_once() {
    let server_cg = TestCgroup::new("osrv");
    let client_cg = TestCgroup::new("ocli");
    let mut server = Peer::spawn(
        &server_cg,
        None,
        &["tcp-serve", "--listen", "127.0.0.1:0", "--count", "2"],
    );
    let addr = server.ready();
    let mut holder = Peer::spawn(
        &client_cg,
        None,
        &["tcp-connect", "--hold", "--to", &addr.to_string()],
    );
    holder.done();

    let agent = Agent::start(&[]);
    // A new connection to the listener that predates the agent: the kernel
    // has no owner stamp for it, the start-up scan does.
    let late = Peer::spawn(
        &client_cg,
        None,
        &["tcp-connect", "--to", &addr.to_string()],
    );
    late.finish();
    holder.release();
    server.finish();
    let events = agent.stop();

    let old_egress = events.only_flow("pre-existing egress", |f| {
        owned_by(f, &client_cg) && f["origin"] == "preexisting"
    });
    assert_eq!(old_egress.direction(), "egress");
    assert_eq!(old_egress.remote_port(), u64::from(addr.port()));
    assert_eq!(old_egress["cgroup"]["path"], client_cg.path());
    assert_eq!(old_egress["process"]["source"], "procfs");
    assert_eq!(
        old_egress["process"]["pid"].as_u64(),
        Some(u64::from(holder.pid()))
    );

    let old_ingress = events.only_flow("pre-existing ingress", |f| {
        owned_by(f, &server_cg) && f["origin"] == "preexisting"
    });
    assert_eq!(old_ingress.direction(), "ingress");
    assert_eq!(old_ingress.service_port(), u64::from(addr.port()));
    assert_eq!(old_ingress["cgroup"]["path"], server_cg.path());

    // The late connection's accept side joins the same edge under the
    // listener's owner.
    let is_ingress = |f: &Value| owned_by(f, &server_cg) && f.direction() == "ingress";
    assert_eq!(events.final_count(is_ingress), 2, "{}", events.dump());
    // The test's server is the only TCP socket on 127.0.0.1 at its port.
    let on_test_port = |f: &Value| {
        f.transport() == "tcp"
            && f.service_port() == u64::from(addr.port())
            && f.remote_address() == "127.0.0.1"
    };
    // At least the two pre-existing ends (the late connection folds in).
    assert!(events.of_kind("flow").filter(|f| on_test_port(f)).count() >= 2);
    assert!(
        events
            .of_kind("flow")
            .filter(|f| on_test_port(f))
            .all(|f| f["cgroup"]["id"].as_u64() != Some(0)),
        "no flow on the test port is left without an owner:\n{}",
        events.dump()
    );
}

#[test]
fn agent_reports_startup_and_summary() {
    let agent = Agent::start(&[]);
    let events = agent.stop();
    let ready = events.of_kind("ready").next().expect("ready");
    assert_eq!(
        ready["programs"].as_array().map(Vec::len),
        Some(10),
        "{ready}"
    );
    let (mount, _) = eastwatch_tests::cgroup::cgroup2_mount();
    assert_eq!(ready["cgroup2_mount"], mount.display().to_string());
    let summary = events.summary();
    let offered = summary["kernel"]["flow_events_offered"]["total"]
        .as_u64()
        .expect("offered");
    let decoded = summary["agent"]["flow_events_decoded"]
        .as_u64()
        .expect("decoded");
    let lost = summary["kernel"]["flow_ring_buffer_full"]["total"]
        .as_u64()
        .expect("lost");
    assert_eq!(offered, decoded + lost, "{summary}");
}
