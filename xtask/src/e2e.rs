//! Running the end-to-end suite: each run's results, failed tests by name,
//! and the unrelated traffic that runs beside it.

use std::{
    io::{BufRead, BufReader, Write as _},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// What one run of the suite did.
pub struct Run {
    passed: usize,
    failed: Vec<String>,
    /// cargo's own verdict: a crashed or unbuildable test binary fails the
    /// run even with no failed test line.
    succeeded: bool,
    took: Duration,
}

/// Runs the suite once, its output passed through as it comes, and reads
/// libtest's `test NAME ... ok|FAILED` lines. A run beside noise that
/// stopped early proved less than it claims: it fails.
pub fn run_suite(command: &mut Command, noise: Option<&mut Noise>) -> anyhow::Result<Run> {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let stdout = child.stdout.take().context("test output")?;
    let (mut passed, mut failed) = (0, Vec::new());
    let mut out = std::io::stdout();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading test output")?;
        let _ = writeln!(out, "{line}");
        if let Some(result) = line.strip_prefix("test ") {
            if result.ends_with(" ... ok") {
                passed += 1;
            } else if let Some(name) = result.strip_suffix(" ... FAILED") {
                failed.push(name.to_owned());
            }
        }
    }
    let status = child.wait().context("waiting for the tests")?;
    let mut succeeded = status.success();
    if let Some(stopped) = noise.and_then(Noise::stopped) {
        failed.push(format!(
            "(eastwatch-noise stopped during the run: {stopped})"
        ));
        succeeded = false;
    }
    Ok(Run {
        passed,
        failed,
        succeeded,
        took: started.elapsed(),
    })
}

/// One line per run, then failures by test; an error if any run failed.
pub fn report(runs: &[Run]) -> anyhow::Result<()> {
    let mut failing: std::collections::BTreeMap<&str, usize> = Default::default();
    eprintln!("xtask: end-to-end results");
    for (i, run) in runs.iter().enumerate() {
        let secs = run.took.as_secs();
        let mut line = format!(
            "  run {}/{}: {} passed, {} failed in {}m{:02}s",
            i + 1,
            runs.len(),
            run.passed,
            run.failed.len(),
            secs / 60,
            secs % 60
        );
        if !run.failed.is_empty() {
            line.push_str(&format!(": {}", run.failed.join(", ")));
        } else if !run.succeeded {
            line.push_str(": the suite failed without a failed test (see above)");
        }
        eprintln!("{line}");
        for name in &run.failed {
            *failing.entry(name).or_default() += 1;
        }
    }
    let bad = runs.iter().filter(|r| !r.succeeded).count();
    if bad == 0 {
        return Ok(());
    }
    for (name, times) in &failing {
        eprintln!("  {name}: failed in {times} of {} runs", runs.len());
    }
    bail!("{bad} of {} end-to-end runs failed", runs.len())
}

/// `eastwatch-noise`, running for as long as this lives.
pub struct Noise {
    child: Child,
}

impl Noise {
    /// Starts it and waits until all of its traffic flows.
    pub fn start(program: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new(program)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let stdout = child.stdout.take().context("noise output")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if line.trim() != "ready" {
            let _ = child.kill();
            bail!("{} did not start: {line:?}", program.display());
        }
        eprintln!(
            "xtask: unrelated traffic running (eastwatch-noise, pid {})",
            child.id()
        );
        Ok(Self { child })
    }
}

impl Noise {
    /// How it ended, if it did.
    fn stopped(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Noise {
    /// Stops it (stdin closed) and waits while it removes what it made.
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
