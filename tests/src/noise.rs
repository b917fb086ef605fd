//! Unrelated traffic while a test runs: the `eastwatch-noise` program
//! (see its documentation for what it makes), stopped and cleaned up on
//! drop.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::spawn::{harness_binary, wait_or_kill};

/// The cgroup subtree every noise process lives in.
pub const CGROUP_TOP: &str = "/eastwatch-noise";

/// Whether a cgroup path (as eastwatch reports it) is the noise's.
pub fn owns(cgroup_path: &str) -> bool {
    cgroup_path
        .strip_prefix(CGROUP_TOP)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The two ends of the noise's network between namespaces (IPv4, IPv6),
/// apart from every test's addresses.
pub const LAN: [(&str, &str); 2] = [("10.79.0.1", "fd79::1"), ("10.79.0.2", "fd79::2")];
/// The noise's network between namespaces: `10.79.0.0/24`, `fd79::/64`.
pub const LAN_V4_PREFIX: &str = "10.79.0.";
pub const LAN_V6_PREFIX: &str = "fd79::";

pub struct Noise {
    child: Child,
}

impl Noise {
    /// Starts the generator and waits until every kind of traffic flows.
    pub fn start() -> Self {
        crate::require_root();
        let mut child = Command::new(harness_binary("eastwatch-noise"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn eastwatch-noise");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        assert!(
            read.is_ok() && line.trim() == "ready",
            "eastwatch-noise did not start: {line:?} {:?}",
            child.try_wait()
        );
        Self { child }
    }
}

impl Drop for Noise {
    /// Stops it (stdin closed) and waits while it removes what it made.
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        wait_or_kill(&mut self.child, Duration::from_secs(60));
    }
}
