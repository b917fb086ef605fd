//! UDP replies end to end: an exchange is one edge, client → server on the
//! server's port, however many client sockets and clients ask (the DNS
//! pattern), and a forged datagram cannot turn sends into "replies".

use eastwatch_tests::{Agent, Events, Peer, TestCgroup, TestNetns, VethPair, events::FlowExt};
use serde_json::Value;

const SOCKETS_PER_CLIENT: u64 = 3;

fn owned_by(flow: &Value, cgroup: &TestCgroup) -> bool {
    flow["cgroup"]["id"].as_u64() == Some(cgroup.id())
}

/// Two clients in their own cgroups, each querying the server from
/// `SOCKETS_PER_CLIENT` sockets in turn (one datagram and its reply each).
fn many_client_sockets(listen: &str, connected: bool, netns: Option<&VethPair>) {
    let agent = Agent::start(&[]);
    let server_cg = TestCgroup::new("dns");
    let clients = [TestCgroup::new("resa"), TestCgroup::new("resb")];
    let queries = SOCKETS_PER_CLIENT * clients.len() as u64;
    let mut server = Peer::spawn(
        &server_cg,
        netns.map(|n| &n.b),
        &[
            "udp-serve",
            "--listen",
            listen,
            "--count",
            &queries.to_string(),
        ],
    );
    let addr = server.ready();
    let port = u64::from(addr.port());
    let to = addr.to_string();
    let sockets = SOCKETS_PER_CLIENT.to_string();
    let mut args = vec!["udp-send", "--reply", "--to", &to, "--sockets", &sockets];
    if connected {
        args.push("--connected");
    }
    for client in &clients {
        Peer::spawn(client, netns.map(|n| &n.a), &args).finish();
    }
    server.finish();
    let events = agent.stop();

    for client in &clients {
        let flows = events.flows_of(client.id());
        assert_eq!(
            flows.len(),
            1,
            "one edge per client, replies fold: {flows:#?}"
        );
        let egress = flows[0];
        assert_eq!(
            (egress.direction(), egress.transport(), egress.outcome()),
            ("egress", "udp", "datagram"),
            "{egress}"
        );
        assert_eq!(
            (egress.remote_port(), egress.service_port()),
            (port, port),
            "{egress}"
        );
        // One send per socket (a connected socket counts its connect()).
        let count = events.final_count(|f| owned_by(f, client) && f.direction() == "egress");
        assert_eq!(count, SOCKETS_PER_CLIENT, "{egress}");
    }
    let flows = events.flows_of(server_cg.id());
    assert_eq!(
        flows.len(),
        1,
        "one edge at the server, no reply on an ephemeral port: {flows:#?}"
    );
    let ingress = flows[0];
    assert_eq!(
        (ingress.direction(), ingress.service_port()),
        ("ingress", port),
        "{ingress}"
    );
    let count = events.final_count(|f| owned_by(f, &server_cg) && f.direction() == "ingress");
    assert_eq!(count, queries, "every query received");
}

#[test]
fn udp_client_sockets_ipv4_loopback_unconnected_are_one_edge() {
    many_client_sockets("127.0.0.1:0", false, None);
}

#[test]
fn udp_client_sockets_ipv6_loopback_connected_are_one_edge() {
    many_client_sockets("[::1]:0", true, None);
}

#[test]
fn udp_client_sockets_ipv4_between_namespaces_connected_are_one_edge() {
    let net = VethPair::new();
    many_client_sockets(&format!("{}:0", VethPair::B4), true, Some(&net));
}

#[test]
fn udp_client_sockets_ipv6_between_namespaces_unconnected_are_one_edge() {
    let net = VethPair::new();
    many_client_sockets(&format!("[{}]:0", VethPair::B6), false, Some(&net));
}

/// The attacker's egress to `target` after a forged datagram "from" it.
fn spoofed_then_sent(events: &Events, attacker: &TestCgroup, target: &str, port: u64) -> u64 {
    let egress = events.only_flow("the attacker's egress to the target", |f| {
        owned_by(f, attacker) && f.direction() == "egress" && f.transport() == "udp"
    });
    assert_eq!(
        (
            egress.remote_address(),
            egress.remote_port(),
            egress.service_port()
        ),
        (target, port, port),
        "{egress}"
    );
    events.final_count(|f| {
        owned_by(f, attacker) && f.direction() == "egress" && f.transport() == "udp"
    })
}

#[test]
fn forged_datagram_from_a_local_server_does_not_hide_sends_to_it() {
    let agent = Agent::start(&[]);
    let netns = TestNetns::new();
    let target_cg = TestCgroup::new("victim");
    let attacker = TestCgroup::new("attacker");
    // The server answers the attacker's three sends.
    let mut server = Peer::spawn(
        &target_cg,
        Some(&netns),
        &["udp-serve", "--listen", "127.0.0.1:0", "--count", "3"],
    );
    let addr = server.ready();
    let (target, port) = (addr.to_string(), u64::from(addr.port()));
    Peer::spawn(
        &attacker,
        Some(&netns),
        &["udp-spoofed-reply", "--target", &target, "--sends", "3"],
    )
    .finish();
    server.finish();
    let events = agent.stop();
    assert_eq!(spoofed_then_sent(&events, &attacker, "127.0.0.1", port), 3);
}

#[test]
fn forged_datagram_from_a_service_port_does_not_hide_sends_to_it() {
    let agent = Agent::start(&[]);
    // Nothing owns port 53 in a namespace of its own: the target looks
    // remote, and 53 is no client's port.
    let netns = TestNetns::new();
    let attacker = TestCgroup::new("attacker");
    Peer::spawn(
        &attacker,
        Some(&netns),
        &[
            "udp-spoofed-reply",
            "--target",
            "127.0.0.1:53",
            "--sends",
            "3",
        ],
    )
    .finish();
    let events = agent.stop();
    assert_eq!(spoofed_then_sent(&events, &attacker, "127.0.0.1", 53), 3);
}
