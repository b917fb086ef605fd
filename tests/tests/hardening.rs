//! Faults and hostile input: the agent stays alive, bounded and honest,
//! or refuses to start with an error that names what is wrong.

#![allow(clippy::expect_used)]

use std::{
    net::TcpListener,
    process::{Command, Output},
};

use eastwatch_tests::{agent::agent_binary, require_root};

/// Runs `eastwatch ARGS` to its end.
fn eastwatch(args: &[&str]) -> Output {
    Command::new(agent_binary())
        .args(args)
        .env("EASTWATCH_LOG", "info")
        .output()
        .expect("run eastwatch")
}

/// A health port another process holds: the agent must not run on
/// without health while the probe answers for the other process.
#[test]
fn a_taken_health_port_is_a_start_up_error() {
    require_root();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = eastwatch(&["observe", "--duration", "3s", "--health-listen", &addr]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without health:\n{stderr}");
    assert!(
        stderr.contains(&addr) && stderr.contains("Address already in use"),
        "the error names the address and the OS error:\n{stderr}"
    );
}
