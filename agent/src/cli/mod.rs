//! The command line: clap types only. Each command's flags are here; the
//! option groups several commands share are owned by what they configure
//! (`identity::IdentityArgs`, `export::ExportArgs`) and flattened in.
//! [`crate::commands`] turns them into a running pipeline.

mod agent;
mod baseline;
mod observe;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub use self::{
    agent::{AgentArgs, LearnArgs, MonitorArgs, RunArgs, WatchArgs},
    baseline::{
        BaselineArgs, ExportArgs, GraphArgs, GraphFormat, OutputFormat, PolicyFormat, Tool,
    },
    observe::ObserveArgs,
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
    Learn(LearnArgs),
    /// Alert on every flow outside a baseline.
    Monitor(MonitorArgs),
    /// The long-running agent: per-scope learn/monitor modes from a config
    /// file, with hot reload.
    Run(RunArgs),
    /// Baseline tools: lint, diff, merge, explain, report, schema, export,
    /// graph.
    Baseline(BaselineArgs),
    /// Check a running agent's health endpoint (exit 0 when it answers
    /// 200); for exec probes.
    Probe(ProbeArgs),
}

impl Command {
    /// Commands that watch this node's traffic (and so need the host's
    /// cgroup namespace).
    pub fn watches_traffic(&self) -> bool {
        !matches!(self, Self::Baseline(_) | Self::Probe(_))
    }
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The endpoint: /healthz (liveness) or /readyz (readiness).
    #[arg(long, default_value = "http://127.0.0.1:9090/readyz")]
    pub url: String,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}
