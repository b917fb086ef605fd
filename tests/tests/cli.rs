//! The command line as a person uses it.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc::channel,
    time::{Duration, Instant},
};

use eastwatch_tests::{
    Agent, Peer, TestCgroup, agent::agent_binary, events::FlowExt, spawn::command_in,
};

#[test]
fn curl_from_one_cgroup_to_a_server_in_another() {
    let agent = Agent::start(&[]);
    let web = TestCgroup::new("web");
    let shell = TestCgroup::new("shell");
    let mut server = Peer::spawn(&web, None, &["http-serve", "--listen", "127.0.0.1:0"]);
    let addr = server.ready();
    let out = command_in(&shell, None, "curl")
        .args(["-sS", "--max-time", "10", &format!("http://{addr}/")])
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    let events = agent.stop();
    drop(server);

    let egress = events.flows_of(shell.id());
    assert_eq!(
        egress.len(),
        1,
        "one flow from the client's cgroup: {egress:#?}"
    );
    assert_eq!(
        (egress[0].direction(), egress[0].outcome()),
        ("egress", "established")
    );
    assert_eq!(egress[0]["process"]["name"], "curl");
    assert_eq!(egress[0]["cgroup"]["path"], shell.path());
    let ingress = events.flows_of(web.id());
    assert_eq!(
        ingress.len(),
        1,
        "one flow into the server's cgroup: {ingress:#?}"
    );
    assert_eq!(ingress[0].direction(), "ingress");
    assert_eq!(ingress[0]["cgroup"]["path"], web.path());
    assert_eq!(ingress[0].service_port(), u64::from(addr.port()));
}

#[test]
fn without_privileges_observe_names_what_is_missing() {
    eastwatch_tests::require_root();
    // setpriv (util-linux) drops to an unprivileged user with no capabilities.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(agent_binary())
        .args(["observe", "--duration", "1s"])
        .output()
        .expect("run setpriv");
    assert!(
        !out.status.success(),
        "observe must refuse to run unprivileged"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    for capability in ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"] {
        assert!(stderr.contains(capability), "names {capability}: {stderr}");
    }
    assert!(stderr.contains("needs root"), "{stderr}");
}

#[test]
fn text_output_is_one_line_per_flow() {
    eastwatch_tests::require_root();
    let cgroup = TestCgroup::new("text");
    let mut server = Peer::spawn(
        &cgroup,
        None,
        &["tcp-serve", "--listen", "127.0.0.1:0", "--count", "1"],
    );
    let addr = server.ready();
    let mut agent = Command::new(agent_binary())
        .args(["observe", "--format", "text"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn agent");
    let stdout = agent.stdout.take().expect("stdout");
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut text = String::new();
    let mut read_until = |what: &str, done: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {what} line in:\n{text}"));
            text.push_str(&line);
            text.push('\n');
            if done(&line) {
                return line;
            }
        }
    };
    // Attached once it says what it watches.
    read_until("start-up", &|l| l.starts_with("# watching:"));
    let client = Peer::spawn(&cgroup, None, &["tcp-connect", "--to", &addr.to_string()]);
    client.finish();
    server.finish();
    let egress = |l: &str| l.contains(cgroup.path()) && l.contains(" egress ");
    let line = read_until("egress", &egress);
    // SAFETY: signalling our own child.
    let rc = unsafe { libc::kill(agent.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0);
    assert!(agent.wait().expect("agent").success());
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
        text.push_str(&line);
        text.push('\n');
    }
    assert!(line.contains("tcp established"), "{line}");
    assert!(line.contains(&format!("-> {addr}")), "{line}");
    assert_eq!(
        text.lines().filter(|l| egress(l)).count(),
        1,
        "one line for the one flow:\n{text}"
    );
    assert!(
        text.lines().last().is_some_and(|l| l.starts_with("# ")),
        "summary last:\n{text}"
    );
}
