//! `cargo xtask fuzz [--seconds N]`: each parser of untrusted files
//! (baseline, agent config, inventory) fuzzed for N seconds, in process.
//! Crashing or hanging inputs are saved under `target/fuzz/`; the exit
//! status is non-zero when any was found.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use eastwatch::fuzz;

#[derive(Parser)]
struct Args {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// The mutator's seed (a run is reproducible up to timing).
    #[arg(long, default_value_t = 0x5eed)]
    seed: u64,
    /// Where crashing and hanging inputs go.
    #[arg(long, default_value = "target/fuzz")]
    out: PathBuf,
    /// Only this target (baseline, agent-config, inventory).
    #[arg(long)]
    target: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // Panics are caught and counted; their messages would drown the figures.
    std::panic::set_hook(Box::new(|_| {}));
    let mut failed = false;
    for target in fuzz::targets(&root) {
        if args.target.as_deref().is_some_and(|t| t != target.name) {
            continue;
        }
        let figures = fuzz::fuzz(
            &target,
            Duration::from_secs(args.seconds),
            args.seed,
            &args.out,
        );
        println!(
            "fuzz {}: {} executions in {:.1} s ({:.0}/s), {} accepted, corpus {}, slowest input {:?}, {} crash(es){}",
            target.name,
            figures.executions,
            figures.elapsed.as_secs_f64(),
            figures.executions as f64 / figures.elapsed.as_secs_f64().max(0.001),
            figures.accepted,
            figures.corpus,
            figures.slowest,
            figures.crashes.len(),
            figures
                .hang
                .as_ref()
                .map(|p| format!(", HANG: {}", p.display()))
                .unwrap_or_default(),
        );
        for crash in &figures.crashes {
            println!("  crash: {}", crash.display());
        }
        failed |= !figures.crashes.is_empty() || figures.hang.is_some();
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
