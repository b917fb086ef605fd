//! The real `eastwatch observe`, started as a child process; its JSON lines
//! are what the tests assert on.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError, channel},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::Events;

/// The eastwatch binary under test: `EASTWATCH_BIN` (set by `cargo xtask
/// test`), else the workspace's release build.
pub fn agent_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("EASTWATCH_BIN") {
        return PathBuf::from(path);
    }
    let release = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/eastwatch");
    assert!(
        release.exists(),
        "no eastwatch binary: set EASTWATCH_BIN or run `cargo xtask test`"
    );
    release
}

pub struct Agent {
    child: Child,
    lines: Receiver<Value>,
    seen: Vec<Value>,
    stderr: tempfile_path::TempPath,
}

mod tempfile_path {
    use std::path::PathBuf;

    /// A file under /tmp removed on drop.
    pub struct TempPath(pub PathBuf);

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl Agent {
    /// Starts `eastwatch observe --format json` with `args` and waits until
    /// it reports `ready`.
    pub fn start(args: &[&str]) -> Self {
        let mut all = vec!["observe", "--format", "json", "--count-interval", "200ms"];
        all.extend_from_slice(args);
        Self::spawn(&all)
    }

    /// Starts `eastwatch ARGS` (any command that prints JSON lines and a
    /// `ready` event) and waits until it is ready.
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_with_env(args, &[])
    }

    /// [`Agent::spawn`] with extra environment variables.
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        crate::require_root();
        let stderr_path =
            std::env::temp_dir().join(format!("{}.stderr", crate::unique("eastwatch-agent")));
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut child = Command::new(agent_binary())
            .args(args)
            .env("EASTWATCH_LOG", "info")
            // A port of its own: a taken one stops the agent (a flag or
            // `env` beats this).
            .env("EASTWATCH_HEALTH_LISTEN", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn eastwatch");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("agent printed invalid JSON ({e}): {line}"));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let mut agent = Self {
            child,
            lines,
            seen: Vec::new(),
            stderr: tempfile_path::TempPath(stderr_path),
        };
        if agent
            .wait_for(Duration::from_secs(60), |e| e["event"] == "ready")
            .is_none()
        {
            let _ = agent.child.kill();
            panic!("agent never became ready:\n{}", agent.stderr_text());
        }
        agent
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every event printed so far and any arriving within `settle` (a
    /// deadline: other traffic may keep the agent printing).
    pub fn events_so_far(&mut self, settle: Duration) -> Vec<Value> {
        let deadline = Instant::now() + settle;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(event) => self.seen.push(event),
                Err(_) => return self.seen.clone(),
            }
        }
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr.0).unwrap_or_default()
    }

    /// Waits until the agent's log (stderr) contains `needle`.
    pub fn wait_for_log(&self, timeout: Duration, needle: &str) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stderr_text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The first event (already seen or arriving within `timeout`) that
    /// matches.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        if let Some(found) = self.seen.iter().find(|e| matches(e)) {
            return Some(found.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(event) => {
                    let hit = matches(&event);
                    self.seen.push(event.clone());
                    if hit {
                        return Some(event);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Waits until `done` holds for everything printed so far.
    pub fn wait_until(&mut self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.seen) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(event) => self.seen.push(event),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Sends SIGSTOP or SIGCONT (to make the consumer fall behind).
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: signalling our own child.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({signal})");
    }

    /// Interrupts the agent (as Ctrl-C does) and returns everything it
    /// printed, the final summary included.
    pub fn stop(mut self) -> Events {
        self.signal(libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.child.try_wait().expect("wait agent") {
                Some(status) => {
                    assert!(
                        status.success(),
                        "agent failed: {status}\n{}",
                        self.stderr_text()
                    );
                    break;
                }
                None if Instant::now() > deadline => {
                    let threads = thread_states(self.child.id());
                    let _ = self.child.kill();
                    panic!("agent did not stop:\n{threads}\n{}", self.stderr_text());
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        while let Ok(event) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(event);
        }
        Events::new(std::mem::take(&mut self.seen), self.stderr_text())
    }
}

/// Each thread's name, state and kernel stack, for a hung agent.
fn thread_states(pid: u32) -> String {
    let mut out = String::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let read = |name: &str| std::fs::read_to_string(task.path().join(name)).unwrap_or_default();
        out.push_str(&format!(
            "thread {} {} wchan={}\n{}\n",
            task.file_name().to_string_lossy(),
            read("comm").trim(),
            read("wchan"),
            read("stack")
        ));
    }
    out
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
