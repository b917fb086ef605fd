//! Fuzz targets for the parsers of untrusted files (baseline, agent config,
//! inventory), and the bounded in-process mutation fuzzer that drives them
//! (`cargo xtask fuzz`, `agent/examples/fuzz.rs`).
//!
//! Each target takes bytes, as a libFuzzer target does, and must return
//! (accepting or rejecting the input) without panicking or hanging. The
//! driver starts from the examples in docs/ and mutates them (byte flips,
//! YAML tokens, deletions, duplications, splices); inputs that parse, or
//! that are rejected for a reason not seen before, join the corpus. It is
//! not coverage-guided: it runs on the stable toolchain in seconds, with no
//! instrumented build of the agent's dependencies.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant, SystemTime},
};

use eastwatch_policy::{baseline::validate, config};

use crate::identity::inventory::Inventory;

/// A parser under test: `Ok` when it accepted the input, else the reason.
pub type TargetFn = fn(&[u8]) -> Result<(), String>;

pub struct Target {
    pub name: &'static str,
    pub run: TargetFn,
    pub seeds: Vec<Vec<u8>>,
}

fn text(data: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(data).map_err(|e| e.to_string())
}

/// `baseline lint`, `monitor --baseline`: parse and check.
pub fn baseline(data: &[u8]) -> Result<(), String> {
    validate::from_str(text(data)?, "fuzz.yaml", SystemTime::UNIX_EPOCH)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `run --config`.
pub fn agent_config(data: &[u8]) -> Result<(), String> {
    config::from_str(text(data)?, Path::new("/fuzz/config.yaml"))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `--inventory`.
pub fn inventory(data: &[u8]) -> Result<(), String> {
    Inventory::parse(Path::new("fuzz.yaml"), text(data)?, "fuzz")
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Each ```yaml block of a Markdown text.
fn yaml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_start() == "```yaml" => current = Some(String::new()),
            Some(_) if line.trim_start() == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// The three targets, seeded with the examples of the docs in `root`.
pub fn targets(root: &Path) -> Vec<Target> {
    let mut examples = Vec::new();
    for doc in ["README.md", "docs/baseline.md", "docs/identity.md"] {
        if let Ok(markdown) = std::fs::read_to_string(root.join(doc)) {
            examples.extend(yaml_blocks(&markdown));
        }
    }
    let seeds = |needle: &str| -> Vec<Vec<u8>> {
        examples
            .iter()
            .filter(|b| b.contains(needle))
            .map(|b| b.as_bytes().to_vec())
            .collect()
    };
    vec![
        Target {
            name: "baseline",
            run: baseline,
            seeds: seeds("kind: Baseline"),
        },
        Target {
            name: "agent-config",
            run: agent_config,
            seeds: seeds("kind: AgentConfig"),
        },
        Target {
            name: "inventory",
            run: inventory,
            seeds: seeds("workloads:"),
        },
    ]
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Figures {
    pub executions: u64,
    pub accepted: u64,
    pub corpus: usize,
    /// Inputs that panicked, saved under the crash directory.
    pub crashes: Vec<PathBuf>,
    /// An input that ran past the hang limit (the run stops there).
    pub hang: Option<PathBuf>,
    pub slowest: Duration,
    pub elapsed: Duration,
}

/// One input taking longer than this is a hang.
pub const HANG: Duration = Duration::from_secs(10);
/// Inputs are kept below this size.
const MAX_LEN: usize = 64 * 1024;

const TOKENS: &[&str] = &[
    ": ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\n",
    "\n  ",
    "\n    - ",
    "&a ",
    "*a",
    "!!str ",
    "!!int ",
    "<<: ",
    "'",
    "\"",
    "---\n",
    "...\n",
    "# c\n",
    "? ",
    "|\n",
    ">-\n",
    "~",
    "null",
    "true",
    "0x10",
    "-1",
    "99999999999999999999",
    "1e400",
    "\\u0000",
    "\t",
    "\r",
    "é",
    "\u{feff}",
    "namespace",
    "workload",
    "kind",
    "name",
    "ports",
    "from",
    "to",
    "cidr",
    "10.0.0.0/8",
    "::/0",
    "65535/tcp",
    "0-65535/udp",
    "*/tcp",
    "expires",
    "2027-03-31",
    "spec",
    "edges",
    "scopes",
    "mode",
    "match",
    "learn",
    "monitor",
    "defaultMode",
    "baseline",
    "cluster",
    "workloads",
    "services",
    "nodes",
    "backends",
    "ips",
    "cgroups",
    "pids",
    "labels",
    "matchExpressions",
    "operator",
    "In",
    "values",
    "any: true",
    "\"*\"",
    "/",
    "spiffeId",
];

/// xorshift64*: quick, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        usize::try_from(self.next() % (n as u64)).unwrap_or(0)
    }
}

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>], input: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        let at = rng.below(len + 1);
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 => input.insert(at, u8::try_from(rng.below(256)).unwrap_or(0)),
            2 | 3 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                input.splice(at..at, token.iter().copied());
            }
            4 if len > 0 => {
                let end = (at + 1 + rng.below(64)).min(len);
                input.drain(at.min(end)..end);
            }
            5 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(256)).min(len);
                let chunk: Vec<u8> = input[start..end].to_vec();
                input.splice(at..at, chunk);
            }
            6 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                let start = rng.below(other.len());
                let end = (start + rng.below(512)).min(other.len());
                input.splice(at..at, other[start..end].iter().copied());
            }
            _ if len > 0 => {
                // A line repeated: deep nesting and long lists.
                let start = input[..at.min(len)]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |i| i + 1);
                let end = input[at.min(len)..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(len, |i| at.min(len) + i + 1);
                let line: Vec<u8> = input[start..end].to_vec();
                for _ in 0..=rng.below(8) {
                    input.splice(end..end, line.iter().copied());
                }
            }
            _ => {}
        }
    }
    input.truncate(MAX_LEN);
}

/// Fuzzes `target` for `duration`; crashing inputs are saved in
/// `out/<target>/`. Deterministic for a given `seed` (up to timing).
pub fn fuzz(target: &Target, duration: Duration, seed: u64, out: &Path) -> Figures {
    let current = Arc::new(Mutex::new(Vec::new()));
    let (done, finished) = mpsc::channel();
    let worker = {
        let current = current.clone();
        let run = target.run;
        // Inputs accepted (the seeds first), and inputs rejected for a
        // reason not seen before.
        let mut valid = target.seeds.clone();
        let mut corpus: Vec<Vec<u8>> = Vec::new();
        let name = target.name;
        let out = out.join(name);
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut rng = Rng(seed | 1);
            let mut figures = Figures::default();
            let mut reasons = HashSet::new();
            let mut input = Vec::new();
            while started.elapsed() < duration {
                input.clear();
                // Mostly from valid files: deep checks need near-valid input.
                let pool = if corpus.is_empty() || rng.below(10) < 7 {
                    &valid
                } else {
                    &corpus
                };
                if let Some(base) = pool.get(rng.below(pool.len())) {
                    input.extend_from_slice(base);
                }
                mutate(&mut rng, &valid, &mut input);
                if let Ok(mut slot) = current.lock() {
                    slot.clone_from(&input);
                }
                let began = Instant::now();
                let result = std::panic::catch_unwind(|| run(&input));
                figures.slowest = figures.slowest.max(began.elapsed());
                figures.executions += 1;
                match result {
                    Ok(Ok(())) => {
                        figures.accepted += 1;
                        if valid.len() < 4096 && rng.below(4) == 0 {
                            valid.push(input.clone());
                        }
                    }
                    Ok(Err(reason)) => {
                        // A reason not seen before: a new path through the
                        // checks, worth mutating further.
                        let class: String = reason
                            .chars()
                            .filter(|c| !c.is_ascii_digit())
                            .take(80)
                            .collect();
                        if reasons.insert(class) && corpus.len() < 4096 {
                            corpus.push(input.clone());
                        }
                    }
                    Err(_) => {
                        let path = out.join(format!("crash-{}.yaml", figures.executions));
                        let _ = std::fs::create_dir_all(&out);
                        let _ = std::fs::write(&path, &input);
                        figures.crashes.push(path);
                    }
                }
            }
            figures.corpus = valid.len() + corpus.len();
            figures.elapsed = started.elapsed();
            let _ = done.send(());
            figures
        })
    };
    // The worker cannot be interrupted: a hang is noticed from here.
    let limit = duration + HANG;
    match finished.recv_timeout(limit) {
        Ok(()) => worker.join().unwrap_or_default(),
        Err(_) => {
            let path = out.join(target.name).join("hang.yaml");
            let _ = std::fs::create_dir_all(out.join(target.name));
            if let Ok(input) = current.lock() {
                let _ = std::fs::write(&path, &*input);
            }
            Figures {
                hang: Some(path),
                elapsed: limit,
                ..Figures::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Every target has seeds from the docs, and its seeds are accepted:
    /// mutations start from valid files.
    #[test]
    fn every_target_starts_from_valid_examples() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for target in targets(&root) {
            assert!(!target.seeds.is_empty(), "{} has no seeds", target.name);
            for seed in &target.seeds {
                (target.run)(seed).unwrap();
            }
        }
    }

    /// A short run of each target: many inputs, no crash.
    #[test]
    fn a_short_fuzz_run_finds_no_crash() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = tempfile::tempdir().unwrap();
        for target in targets(&root) {
            let figures = fuzz(&target, Duration::from_millis(300), 7, out.path());
            assert!(figures.executions > 10, "{}: {figures:?}", target.name);
            assert!(figures.crashes.is_empty(), "{}: {figures:?}", target.name);
            assert!(figures.hang.is_none(), "{}: {figures:?}", target.name);
        }
    }
}
