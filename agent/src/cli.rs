//! The command line.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::{
    identity::IdentityArgs,
    kernel::ProbeConfig,
    observe::{ObserveOptions, output::Format},
    sensor::SensorConfig,
};

#[derive(Debug, Parser)]
#[command(
    name = "eastwatch",
    version,
    about = "eBPF runtime monitor for east-west traffic"
)]
pub struct Cli {
    /// Log filter for the agent's own logs on stderr (tracing syntax).
    #[arg(long, env = "EASTWATCH_LOG", default_value = "warn", global = true)]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream every TCP and UDP flow on this node with its owning cgroup.
    Observe(ObserveArgs),
    /// Learn how services talk and write a reviewable baseline.
    Learn(crate::baseline::commands::LearnArgs),
    /// Alert on every flow outside a baseline.
    Monitor(crate::baseline::commands::MonitorArgs),
    /// The long-running agent: per-scope learn/monitor modes from a config
    /// file, with hot reload.
    Run(crate::baseline::commands::RunArgs),
    /// Baseline tools: lint, diff, merge, explain, report, schema, export,
    /// graph.
    Baseline(crate::baseline::commands::BaselineArgs),
    /// Check a running agent's health endpoint (exit 0 when it answers
    /// 200); for exec probes.
    Probe(ProbeArgs),
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The endpoint: /healthz (liveness) or /readyz (readiness).
    #[arg(long, default_value = "http://127.0.0.1:9090/readyz")]
    pub url: String,
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub timeout: Duration,
}

pub fn duration(text: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(text)
}

#[derive(Debug, Args)]
pub struct ObserveArgs {
    /// Stop after this long (e.g. 30s, 5m); default: until Ctrl-C.
    #[arg(long, value_parser = duration)]
    pub duration: Option<Duration>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    #[command(flatten)]
    pub sensor: SensorArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub export: crate::export::ExportArgs,
}

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
    #[arg(long, default_value = "2s", value_parser = duration)]
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

impl ObserveArgs {
    pub fn options(&self) -> ObserveOptions {
        ObserveOptions {
            duration: self.duration,
            format: self.format,
            sensor: self.sensor.config(),
            identity: self.identity.clone(),
            export: self.export.clone(),
        }
    }
}
