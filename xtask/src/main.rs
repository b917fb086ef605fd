//! `cargo xtask`: set-up, build, test and run eastwatch on a fresh machine.
//!
//! Every command first makes sure the machine has what the build needs
//! (see [`setup`]); that check is quick when nothing is missing.

mod e2e;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "eastwatch's development tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install toolchains, bpf-linker and Debian packages that are missing.
    Setup,
    /// Build the eastwatch binary (release), eBPF object included.
    Build,
    /// Formatting, clippy (workspace and eBPF crate), unit and end-to-end tests.
    Test {
        /// Only run tests whose name contains this.
        filter: Option<String>,
        /// Skip formatting and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Run the end-to-end suite N times in a row (every run to the end)
        /// and report each run's result and failed tests.
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        repeat: u32,
        /// Without unrelated background traffic (eastwatch-noise) during
        /// the end-to-end suite.
        #[arg(long)]
        no_noise: bool,
    },
    /// cargo fmt --check and clippy -D warnings, eBPF crate included.
    Lint,
    /// Flows judged per second (compiled matcher against a linear scan, 10k-
    /// and 100k-edge baselines), then the kernel programs' cost to traffic
    /// and the agent's event intake (root).
    Bench,
    /// A simulated node with a 3-tier app: learn, review the baseline,
    /// monitor, an attack, alerts printed and received over OTLP (root).
    Demo,
    /// Fuzz the parsers of untrusted files (baseline, agent config,
    /// inventory) in process, each for a bounded time; crashing inputs go
    /// to target/fuzz/.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Build and run `eastwatch observe` on this machine (needs root).
    Observe {
        /// Arguments for `eastwatch observe`, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    setup::ensure(&root)?;
    // Builds look bpf-linker up on PATH; make sure its directory is there.
    setup::put_cargo_bin_on_path()?;
    match cli.command {
        Task::Setup => Ok(()),
        Task::Build => build_release(&root).map(|_| ()),
        Task::Lint => lint(&root),
        Task::Test {
            filter,
            no_lint,
            repeat,
            no_noise,
        } => {
            if !no_lint {
                lint(&root)?;
            }
            test(&root, filter.as_deref(), repeat, !no_noise)
        }
        Task::Bench => bench(&root),
        Task::Demo => demo(&root),
        Task::Fuzz { seconds } => fuzz(&root, seconds),
        Task::Observe { args } => {
            let binary = build_release(&root)?;
            run(Command::new(binary).arg("observe").args(args))
        }
    }
}

/// Builds the agent and the demo (release) and runs the demo; what it
/// makes to look at (baseline, alerts, policies, the map) stays in
/// `target/demo`. Ctrl-C reaches the demo too (same process group): it
/// removes its simulated node and exits, and this waits for that instead
/// of dying first.
fn demo(root: &Path) -> anyhow::Result<()> {
    if !setup::is_root() {
        bail!(
            "the demo loads eBPF programs and makes cgroups and network namespaces: \
             run `cargo xtask demo` as root"
        );
    }
    let agent = build_release(root)?;
    let demo = build_harness_bins(root, &["eastwatch-demo", "eastwatch-peer"])?;
    ignore_interrupts();
    run(Command::new(demo)
        .env("EASTWATCH_BIN", agent)
        .env("EASTWATCH_DEMO_OUT", root.join("target/demo")))
}

fn ignore_interrupts() {
    // SAFETY: setting SIG_IGN has no preconditions. An ignored signal stays
    // ignored across exec; the demo installs its own handler, and its
    // children start from the default again.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
}

/// The in-process fuzzer (`agent/examples/fuzz.rs`), `seconds` per
/// target; fails when an input crashed or hung a parser.
fn fuzz(root: &Path, seconds: u64) -> anyhow::Result<()> {
    run(cargo(root)
        .args([
            "run",
            "--release",
            "--package",
            "eastwatch",
            "--example",
            "fuzz",
            "--",
            "--seconds",
            &seconds.to_string(),
            "--out",
        ])
        .arg(root.join("target/fuzz")))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs a command to completion; a failure names the command.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("starting {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

fn cargo(root: &Path) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root);
    command
}

fn build_release(root: &Path) -> anyhow::Result<PathBuf> {
    run(cargo(root).args(["build", "--release", "--package", "eastwatch"]))?;
    Ok(root.join("target/release/eastwatch"))
}

/// Builds programs of the test harness (release); returns the first's path.
fn build_harness_bins(root: &Path, bins: &[&str]) -> anyhow::Result<PathBuf> {
    let mut command = cargo(root);
    command.args(["build", "--release", "--package", "eastwatch-tests"]);
    for bin in bins {
        command.args(["--bin", bin]);
    }
    run(&mut command)?;
    Ok(root
        .join("target/release")
        .join(bins.first().copied().unwrap_or_default()))
}

fn lint(root: &Path) -> anyhow::Result<()> {
    run(cargo(root).args(["fmt", "--all", "--check"]))?;
    run(cargo(root).args([
        "clippy",
        "--workspace",
        "--exclude",
        "eastwatch-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The eBPF crate only builds for the BPF target, with its own toolchain.
    let ebpf = root.join("ebpf");
    run(own_toolchain(&mut Command::new("cargo"))
        .current_dir(&ebpf)
        .args([
            "clippy",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--target-dir",
        ])
        .arg(root.join("target/ebpf-clippy"))
        .args(["--", "-D", "warnings"]))
}

/// The baseline matcher, then what the kernel programs cost and how fast
/// the agent takes events in (needs root).
fn bench(root: &Path) -> anyhow::Result<()> {
    run(cargo(root).args([
        "bench",
        "--package",
        "eastwatch-policy",
        "--bench",
        "matcher",
    ]))?;
    if !setup::is_root() {
        bail!("the kernel benchmark attaches eBPF programs: run `cargo xtask bench` as root");
    }
    let binary = build_release(root)?;
    let kbench = build_harness_bins(root, &["eastwatch-kbench"])?;
    run(Command::new(kbench).env("EASTWATCH_BIN", binary))
}

/// `command` free to pick its toolchain (a directory's
/// rust-toolchain.toml, or `rustup run`), not the one this xtask runs on.
fn own_toolchain(command: &mut Command) -> &mut Command {
    command
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
}

/// The policy crate's tests on the stock stable toolchain: it must build
/// without the nightly, bpf-linker or LLVM. A missing stable toolchain
/// fails here (`rustup toolchain install stable`), it is never skipped.
fn test_policy_on_stable(root: &Path, filter: &[&str]) -> anyhow::Result<()> {
    run(own_toolchain(&mut Command::new("rustup"))
        .current_dir(root)
        .env("RUSTUP_AUTO_INSTALL", "0")
        .args([
            "run",
            "stable",
            "cargo",
            "test",
            "--package",
            "eastwatch-policy",
            "--",
        ])
        .args(filter))
    .context(
        "the policy crate on the stable toolchain (`rustup toolchain install stable` if missing)",
    )
}

fn test(root: &Path, filter: Option<&str>, repeat: u32, noise: bool) -> anyhow::Result<()> {
    if !setup::is_root() {
        bail!(
            "the end-to-end tests load eBPF programs and make cgroups and network \
             namespaces: run `cargo xtask test` as root"
        );
    }
    let binary = build_release(root)?;
    let filter: Vec<&str> = filter.into_iter().collect();
    // Unit tests of every crate but the end-to-end suite.
    run(cargo(root)
        .args([
            "test",
            "--workspace",
            "--exclude",
            "eastwatch-ebpf",
            "--exclude",
            "eastwatch-tests",
            "--",
        ])
        .args(&filter))?;
    test_policy_on_stable(root, &filter)?;
    // A short bounded fuzz pass, so CI runs the targets too.
    if filter.is_empty() {
        fuzz(root, 3)?;
    }
    // End-to-end: one agent at a time, each test with its own cgroups and
    // namespaces, against the release binary, while unrelated traffic runs.
    run(cargo(root).args(["test", "--package", "eastwatch-tests", "--no-run"]))?;
    let mut noise = if noise {
        Some(e2e::Noise::start(
            &root.join("target/debug/eastwatch-noise"),
        )?)
    } else {
        None
    };
    let mut runs = Vec::new();
    for number in 1..=repeat {
        if repeat > 1 {
            eprintln!("xtask: end-to-end run {number}/{repeat}");
        }
        let mut command = cargo(root);
        command
            .env("EASTWATCH_BIN", &binary)
            .args([
                "test",
                "--package",
                "eastwatch-tests",
                "--no-fail-fast",
                "--",
                "--test-threads=1",
            ])
            .args(&filter);
        runs.push(e2e::run_suite(&mut command, noise.as_mut())?);
    }
    drop(noise);
    e2e::report(&runs)
}
