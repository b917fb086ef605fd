//! Processes started inside a test cgroup (and optionally a network
//! namespace) before they exec, so every socket they make is theirs.

use std::{
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Lines},
    net::SocketAddr,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::PathBuf,
    process::{Child, ChildStdout, Command, Stdio},
    time::Duration,
};

use crate::{TestCgroup, TestNetns};

/// The peer binary built next to the test executables.
pub fn peer_binary() -> PathBuf {
    harness_binary("eastwatch-peer")
}

/// A program of this package, built next to the test executables.
pub fn harness_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // Next to a binary of this package (target/<profile>/eastwatch-demo),
    // or one level up from a test (target/<profile>/deps/<test>).
    let beside = exe.with_file_name(name);
    if beside.exists() {
        return beside;
    }
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let program = profile_dir.join(name);
    assert!(
        program.exists(),
        "{} is missing: build the eastwatch-tests package",
        program.display()
    );
    program
}

/// A command that joins `cgroup` (and `netns`) between fork and exec.
pub fn command_in(
    cgroup: &TestCgroup,
    netns: Option<&TestNetns>,
    program: impl Into<PathBuf>,
) -> Command {
    let procs = OpenOptions::new()
        .write(true)
        .open(cgroup.procs_file())
        .expect("open cgroup.procs");
    let ns = netns.map(|ns| File::open(ns.handle()).expect("open netns"));
    let mut command = Command::new(program.into());
    // SAFETY: only async-signal-safe calls (write, setns) on descriptors
    // opened before the fork; both stay open in the parent's closure.
    unsafe {
        command.pre_exec(move || {
            if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(ns) = &ns
                && libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// A running eastwatch-peer.
pub struct Peer {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Peer {
    pub fn spawn(cgroup: &TestCgroup, netns: Option<&TestNetns>, args: &[&str]) -> Self {
        let mut child = command_in(cgroup, netns, peer_binary())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn eastwatch-peer");
        let stdout = child.stdout.take().expect("stdout");
        Self {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn next_line(&mut self) -> String {
        match self.lines.next() {
            Some(Ok(line)) => line,
            other => {
                let status = self.child.wait();
                panic!("peer ended without output ({other:?}, {status:?})")
            }
        }
    }

    /// The address a server printed once bound.
    pub fn ready(&mut self) -> SocketAddr {
        let line = self.next_line();
        line.strip_prefix("ready ")
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("expected `ready ADDR`, got {line:?}"))
    }

    /// Waits for the client's `done` (it may keep running, e.g. --hold).
    pub fn done(&mut self) {
        let line = self.next_line();
        assert_eq!(line, "done", "peer did not finish");
    }

    /// Waits for the peer to exit and asserts it succeeded.
    pub fn finish(mut self) -> String {
        let mut rest = String::new();
        for line in self.lines.by_ref().map_while(Result::ok) {
            rest.push_str(&line);
            rest.push('\n');
        }
        let status = self.child.wait().expect("wait peer");
        assert!(status.success(), "peer failed: {status} {rest}");
        rest
    }

    /// Closes stdin (ends a --hold client).
    pub fn release(&mut self) {
        drop(self.child.stdin.take());
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `timeout` for `child` to exit, then kills it; true if it
/// exited by itself.
pub fn wait_or_kill(child: &mut Child, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}
