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
    /// NetworkPolicies or CiliumNetworkPolicies that admit exactly the
    /// baseline's edges (--check: what enforcing them would block).
    Export(ExportArgs),
    /// The service map: HTML with inline SVG, DOT or Mermaid.
    Graph(GraphArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PolicyFormat {
    /// Kubernetes NetworkPolicy (networking.k8s.io/v1).
    Networkpolicy,
    /// CiliumNetworkPolicy (cilium.io/v2).
    Ciliumnetworkpolicy,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The reviewed baseline.
    pub file: PathBuf,
    #[arg(long, value_enum)]
    pub format: PolicyFormat,
    /// Also an egress policy per client workload.
    #[arg(long)]
    pub egress: bool,
    /// Check the flows of this file (learn evidence or alerts JSON lines)
    /// against the policies instead of printing them: which would be
    /// blocked, and which rule set would have to change. Repeatable; exit
    /// 1 when any flow would be blocked.
    #[arg(long, value_name = "EVIDENCE|ALERTS")]
    pub check: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub check_format: OutputFormat,
    /// Learn evidence: its workload identities' labels (as the cluster
    /// reported them while learning) stand in for workloads the cluster
    /// does not report, or when there is no cluster.
    #[arg(long, value_name = "FILE")]
    pub evidence: Option<PathBuf>,
    /// kubeconfig of the cluster whose pod labels and Services to read;
    /// by default found as kubectl finds one.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Read no cluster (labels from --evidence only).
    #[arg(long)]
    pub no_kubernetes: bool,
    /// Write the policies to this file (stdout otherwise).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    /// One self-contained HTML page with inline SVG.
    Html,
    /// Graphviz DOT.
    Dot,
    /// A Mermaid flowchart.
    Mermaid,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// The baseline.
    pub file: PathBuf,
    /// Learn evidence: edges nothing used are drawn dashed.
    #[arg(long, value_name = "FILE")]
    pub evidence: Option<PathBuf>,
    /// Alerts (JSON lines, as --alerts-file writes them): the unauthorized
    /// paths, in red. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub alerts: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = GraphFormat::Html)]
    pub format: GraphFormat,
    /// Write the map to this file (stdout otherwise).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}
