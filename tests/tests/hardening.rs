//! Faults and hostile input: the agent stays alive, bounded and honest,
//! or refuses to start with an error that names what is wrong.

#![allow(clippy::expect_used)]

use std::{
    net::TcpListener,
    process::{Command, Output, Stdio},
    time::Duration,
};

use eastwatch_tests::{Agent, TempDir, agent::agent_binary, require_root, spawn::wait_or_kill};

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

/// Learn's outputs are checked before the programs attach: a path that
/// cannot be written stops it at once (no `ready`), naming the path and
/// the OS error, instead of failing at the end with everything lost.
#[test]
fn an_unwritable_learn_output_is_a_start_up_error() {
    require_root();
    let dir = TempDir::new("learn-outputs");
    let missing = dir.join("missing");
    let good = dir.join("learned.yaml");
    let bad = missing.join("x");
    let (good, bad) = (good.to_str().expect("path"), bad.to_str().expect("path"));
    for args in [
        vec!["--out", bad],
        vec!["--out", good, "--evidence", bad],
        vec!["--out", good, "--checkpoint", bad],
    ] {
        let mut all = vec!["learn", "--duration", "20s"];
        all.extend(args);
        let out = eastwatch(&all);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{all:?} ran:\n{stderr}");
        assert!(
            !stdout.contains("\"ready\""),
            "{all:?} got as far as attaching:\n{stdout}"
        );
        assert!(
            stderr.contains(bad) && stderr.contains("No such file or directory"),
            "{all:?}: the error names the path and the OS error:\n{stderr}"
        );
    }
}

/// Two learns with one checkpoint would overwrite each other's state: the
/// second is refused while the first runs.
#[test]
fn a_second_learn_with_the_same_checkpoint_is_refused() {
    let dir = TempDir::new("learn-lock");
    let checkpoint = dir.join("checkpoint.json");
    let checkpoint = checkpoint.to_str().expect("path");
    let first_out = dir.join("first.yaml");
    let first = Agent::spawn(&[
        "learn",
        "--out",
        first_out.to_str().expect("path"),
        "--checkpoint",
        checkpoint,
    ]);
    let second_out = dir.join("second.yaml");
    let out = eastwatch(&[
        "learn",
        "--duration",
        "20s",
        "--out",
        second_out.to_str().expect("path"),
        "--checkpoint",
        checkpoint,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second learn ran:\n{stderr}");
    assert!(
        stderr.contains(checkpoint) && stderr.contains("in use"),
        "the error names the checkpoint:\n{stderr}"
    );
    let events = first.stop();
    assert_eq!(events.summary()["command"], "learn", "{}", events.dump());
}

/// Runs `eastwatch ARGS`, which must end by itself within `timeout`;
/// whether it succeeded, and its stdout and stderr.
fn eastwatch_within(args: &[&str], timeout: Duration) -> (bool, String) {
    let mut child = Command::new(agent_binary())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run eastwatch");
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read(Box::new(child.stderr.take().expect("stderr")));
    let ended = wait_or_kill(&mut child, timeout);
    let success = child.wait().is_ok_and(|s| s.success());
    let text = stdout.join().expect("stdout reader") + &stderr.join().expect("stderr reader");
    assert!(ended, "{args:?} did not end within {timeout:?}:\n{text}");
    (success, text)
}

/// Endless input (`/dev/zero`) and a FIFO without a writer: refused at
/// once with a clear error for every file the agent reads (before, lint
/// grew to gigabytes and a FIFO blocked for ever).
#[test]
fn endless_and_blocking_inputs_are_refused_at_once() {
    require_root();
    let dir = TempDir::new("hostile-input");
    let fifo = dir.join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let fifo = fifo.to_str().expect("path");
    let out = dir.join("out.yaml");
    let out = out.to_str().expect("path");
    for input in ["/dev/zero", fifo] {
        for args in [
            vec!["baseline", "lint", input],
            vec!["baseline", "merge", input, "--out", out],
            vec!["monitor", "--baseline", input, "--duration", "1s"],
            vec!["run", "--config", input, "--duration", "1s"],
            vec!["observe", "--inventory", input, "--duration", "1s"],
            vec![
                "learn",
                "--out",
                out,
                "--checkpoint",
                input,
                "--duration",
                "1s",
            ],
        ] {
            let (success, stderr) = eastwatch_within(&args, Duration::from_secs(10));
            assert!(!success, "{args:?} accepted {input}:\n{stderr}");
            assert!(
                stderr.contains(input) && stderr.contains("not a regular file"),
                "{args:?}: a clear error naming {input}:\n{stderr}"
            );
        }
    }
}

/// Non-UTF-8 input is named with its position, not just the file.
#[test]
fn non_utf8_input_is_named_with_its_position() {
    let dir = TempDir::new("not-utf8");
    let path = dir.join("baseline.yaml");
    std::fs::write(
        &path,
        b"apiVersion: eastwatch.io/v1\nkind: Baseline\nmetadata:\n  name: caf\xe9\n",
    )
    .expect("write");
    let path = path.to_str().expect("path");
    let (success, stderr) = eastwatch_within(&["baseline", "lint", path], Duration::from_secs(10));
    assert!(!success, "{stderr}");
    assert!(
        stderr.contains(&format!("{path}:4:12")) && stderr.contains("UTF-8"),
        "file:line:col of the bad byte:\n{stderr}"
    );
}

/// A baseline of `edges` distinct edges.
fn big_baseline(path: &std::path::Path, edges: usize) {
    use std::fmt::Write as _;
    let mut text = String::from(
        "apiVersion: eastwatch.io/v1\nkind: Baseline\nmetadata:\n  name: big\nspec:\n  edges:\n",
    );
    for i in 0..edges {
        let _ = write!(
            text,
            "    - from: {{namespace: ns{i}, workload: {{kind: Deployment, name: web}}}}\n      \
             to: {{namespace: ns{i}, workload: {{kind: Deployment, name: api}}}}\n      \
             ports: [\"{}/tcp\"]\n",
            1024 + i % 60000
        );
    }
    std::fs::write(path, text).expect("write baseline");
}

/// 200,000 edges: accepted by lint, merge (whose output lints too) and
/// monitor. The YAML parser's default node budget stopped them at about
/// 20,800 edges.
#[test]
fn a_baseline_of_200k_edges_is_accepted() {
    require_root();
    let dir = TempDir::new("big-baseline");
    let path = dir.join("big.yaml");
    big_baseline(&path, 200_000);
    let path = path.to_str().expect("path");
    let merged = dir.join("merged.yaml");
    let merged = merged.to_str().expect("path");
    for args in [
        vec!["baseline", "lint", path],
        vec!["baseline", "merge", path, "--out", merged],
        vec!["baseline", "lint", merged],
    ] {
        let (success, output) = eastwatch_within(&args, Duration::from_secs(120));
        assert!(success, "{args:?}:\n{output}");
    }
    let agent = Agent::spawn(&["monitor", "--baseline", path]);
    let events = agent.stop();
    let ready = events.of_kind("ready").next().expect("ready");
    assert_eq!(ready["baseline_edges"], 200_000, "{ready}");
}

/// SIGUSR1 during start-up (identity sync, program load), before the
/// loop's handlers exist, must not kill the agent: its default action
/// would. Sent as soon as the agent logs its first line.
#[test]
fn sigusr1_during_start_up_does_not_kill_the_agent() {
    use std::io::BufRead as _;
    require_root();
    let dir = TempDir::new("usr1-start");
    let stderr_path = dir.join("stderr");
    let out = dir.join("learned.yaml");
    let mut child = Command::new(agent_binary())
        .args(["learn", "--out", out.to_str().expect("path")])
        .env("EASTWATCH_LOG", "info")
        .env("EASTWATCH_HEALTH_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("spawn learn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // The first log line (the host's cgroup namespace), written in main
    // before the runtime starts.
    while std::fs::read_to_string(&stderr_path)
        .map(|t| t.trim().is_empty())
        .unwrap_or(true)
    {
        assert!(std::time::Instant::now() < deadline, "no log line");
        assert!(child.try_wait().expect("wait").is_none(), "exited early");
        std::thread::yield_now();
    }
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGUSR1) };
    assert_eq!(sent, 0);
    let mut ready = false;
    while let Ok(line) =
        lines.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        if line.contains("\"event\":\"ready\"") {
            ready = true;
            break;
        }
    }
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        ready,
        "killed before ready ({:?}):\n{stderr}",
        child.try_wait()
    );
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}:\n{stderr}");
}
