//! `eastwatch learn`, `monitor` and `run`, and the kernel options every
//! command that watches traffic shares.

use std::{path::PathBuf, time::Duration};

use clap::Args;

use crate::{
    export::ExportArgs, identity::IdentityArgs, kernel::ProbeConfig, sensor::SensorConfig,
};

/// Kernel and sensor tuning shared by every command that watches traffic.
#[derive(Debug, Args)]
pub struct SensorArgs {
    /// Bytes in the kernel's flow ring buffer (power of two, >= 4096).
    #[arg(long, default_value_t = 4 << 20, value_parser = ring_buffer_bytes)]
    pub ring_buffer_bytes: u32,
    /// Edges the kernel folds before evicting the least recently used.
    #[arg(long, default_value_t = 65536)]
    pub flow_map_entries: u32,
    /// How often folded counts are read from the kernel.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub count_interval: Duration,
    /// Start with kernel diagnostics (aya-log) on; SIGUSR1 toggles them.
    #[arg(long)]
    pub kernel_diagnostics: bool,
    /// Do not report connections that existed before the agent started.
    #[arg(long)]
    pub no_existing: bool,
}

fn ring_buffer_bytes(text: &str) -> Result<u32, String> {
    let bytes: u32 = text.parse().map_err(|e| format!("{e}"))?;
    if bytes < 4096 || !bytes.is_power_of_two() {
        return Err("must be a power of two of at least 4096".into());
    }
    Ok(bytes)
}

impl SensorArgs {
    pub fn config(&self) -> SensorConfig {
        SensorConfig {
            probe: ProbeConfig {
                ring_buffer_bytes: self.ring_buffer_bytes,
                flow_map_entries: self.flow_map_entries,
                diagnostics: self.kernel_diagnostics,
            },
            count_interval: self.count_interval,
            scan_existing: !self.no_existing,
            ..SensorConfig::default()
        }
    }
}

/// What every command that watches traffic takes: the kernel, identity
/// and export options.
#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub sensor: SensorArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub export: ExportArgs,
}

/// What learn, monitor and run share: what watching takes, and the
/// cgroups left out.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Leave this cgroup and everything beneath it out of learning and
    /// judging (still observed and counted). Repeatable.
    #[arg(long = "exclude-cgroup", value_name = "PATH")]
    pub exclude_cgroups: Vec<String>,
    #[command(flatten)]
    pub watch: WatchArgs,
}

#[derive(Debug, Args)]
pub struct LearnArgs {
    /// Where the learned baseline goes (rewritten atomically at every
    /// checkpoint and at the end).
    #[arg(long)]
    pub out: PathBuf,
    /// Learn for this long (e.g. 1h, 7d); default: until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// The evidence report (JSON): first/last seen, counts, samples.
    #[arg(long)]
    pub evidence: Option<PathBuf>,
    /// Learned state, resumed from when it exists.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// How often to checkpoint and print progress.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub checkpoint_interval: Duration,
    /// `metadata.name` of the learned baseline.
    #[arg(long, default_value = "learned")]
    pub name: String,
    #[command(flatten)]
    pub agent: AgentArgs,
}

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// The baseline (watched: valid changes apply without a restart).
    #[arg(long)]
    pub baseline: PathBuf,
    /// An edge alerts once per window; repeats are reported when it closes.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub window: Duration,
    /// New destinations/ports from one source within a window that make a
    /// scan (one T1046 alert).
    #[arg(long, default_value_t = 10)]
    pub fan_out_threshold: usize,
    /// Also append alerts (JSON lines) to this file.
    #[arg(long)]
    pub alerts_file: Option<PathBuf>,
    /// Stop after this long; default: until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub agent: AgentArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The agent config (kind AgentConfig; watched).
    #[arg(long)]
    pub config: PathBuf,
    /// Stop after this long; default: until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub checkpoint_interval: Duration,
    #[command(flatten)]
    pub agent: AgentArgs,
}
