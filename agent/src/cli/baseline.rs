//! `eastwatch baseline ...`: the tools on baseline files.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

#[derive(Debug, Args)]
pub struct BaselineArgs {
    #[command(subcommand)]
    pub command: Tool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Tool {
    /// Check baselines: errors with file:line:col (exit 1), warnings for
    /// over-broad, expired and duplicate edges.
    Lint {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Exit non-zero on warnings too.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Edge-level differences between two baselines.
    Diff {
        old: PathBuf,
        new: PathBuf,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Combine baselines (e.g. learned on many nodes) into one, sorted.
    Merge {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        /// `metadata.name` of the result (default: the first file's).
        #[arg(long)]
        name: Option<String>,
    },
    /// Which rule allows a path, or the nearest rules and why they don't.
    Explain {
        file: PathBuf,
        /// The client: workload:NS/KIND/NAME, cgroup:PATH, systemd:UNIT,
        /// container:RUNTIME/NAME, node:NAME, external:ADDRESS.
        #[arg(long)]
        from: String,
        /// The server, in the same forms.
        #[arg(long)]
        to: String,
        /// PORT/tcp or PORT/udp.
        #[arg(long)]
        port: String,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Least privilege: edges the evidence never used, and each identity's
    /// blast radius under the baseline.
    Report {
        file: PathBuf,
        /// Evidence from `eastwatch learn --evidence` over the window.
        #[arg(long)]
        evidence: PathBuf,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Print the JSON Schema of baseline files.
    Schema,
}
