//! The baseline commands: `learn`, `monitor`, `run` and `baseline ...`.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};

use super::{
    config,
    diag::Diagnostic,
    exclude::Exclusions,
    format::{self, BaselineDoc},
    judge::JudgeConfig,
    learn::{self, Evidence},
    matcher::ObservedEdge,
    parse,
    runtime::{self, LearnFiles, RunSetup},
    tools, validate,
};
use crate::{
    alert::Mode,
    baseline::config::Scopes,
    cli::{SensorArgs, duration},
    export::{ExportArgs, site::Site},
    identity::{IdentityArgs, IdentityResolver},
};

/// What learn, monitor and run share: the kernel, identity and export
/// options, and the cgroups left out.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Leave this cgroup and everything beneath it out of learning and
    /// judging (still observed and counted). Repeatable.
    #[arg(long = "exclude-cgroup", value_name = "PATH")]
    pub exclude_cgroups: Vec<String>,
    #[command(flatten)]
    pub sensor: SensorArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub export: ExportArgs,
}

/// What a command decides for itself; [`AgentArgs::run`] adds the rest.
struct CommandSetup {
    command: &'static str,
    duration: Option<Duration>,
    scopes: Scopes,
    baseline: Option<PathBuf>,
    /// Without `node`: the site names it.
    judge: JudgeConfig,
    alerts_file: Option<PathBuf>,
    learn: Option<LearnFiles>,
    config: Option<PathBuf>,
    checkpoint_every: Duration,
}

impl AgentArgs {
    /// Starts identity (synced first), the sensor and export, and runs
    /// `command` until it ends.
    async fn run(self, command: CommandSetup) -> anyhow::Result<ExitCode> {
        let resolver = synced_resolver(&self.identity).await?;
        let site = Site::new(&self.identity, &resolver);
        let setup = RunSetup {
            command: command.command,
            sensor: self.sensor.config(),
            duration: command.duration,
            scopes: command.scopes,
            baseline: command.baseline,
            judge: JudgeConfig {
                node: site.node_or_host(),
                ..command.judge
            },
            alerts_file: command.alerts_file,
            learn: command.learn,
            config: command.config,
            checkpoint_every: command.checkpoint_every,
            export: self.export,
            site,
            exclusions: Exclusions::new(&self.exclude_cgroups),
        };
        runtime::run(setup, Box::new(resolver)).await?;
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Debug, Args)]
pub struct LearnArgs {
    /// Where the learned baseline goes (rewritten atomically at every
    /// checkpoint and at the end).
    #[arg(long)]
    pub out: PathBuf,
    /// Learn for this long (e.g. 1h, 7d); default: until Ctrl-C.
    #[arg(long, value_parser = duration)]
    pub duration: Option<Duration>,
    /// The evidence report (JSON): first/last seen, counts, samples.
    #[arg(long)]
    pub evidence: Option<PathBuf>,
    /// Learned state, resumed from when it exists.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// How often to checkpoint and print progress.
    #[arg(long, default_value = "30s", value_parser = duration)]
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
    #[arg(long, default_value = "10m", value_parser = duration)]
    pub window: Duration,
    /// New destinations/ports from one source within a window that make a
    /// scan (one T1046 alert).
    #[arg(long, default_value_t = 10)]
    pub fan_out_threshold: usize,
    /// Also append alerts (JSON lines) to this file.
    #[arg(long)]
    pub alerts_file: Option<PathBuf>,
    /// Stop after this long; default: until Ctrl-C.
    #[arg(long, value_parser = duration)]
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
    #[arg(long, value_parser = duration)]
    pub duration: Option<Duration>,
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub checkpoint_interval: Duration,
    #[command(flatten)]
    pub agent: AgentArgs,
}

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
    Export(super::policy_commands::ExportArgs),
    /// The service map: HTML with inline SVG, DOT or Mermaid.
    Graph(super::policy_commands::GraphArgs),
}

pub async fn learn(args: LearnArgs) -> anyhow::Result<ExitCode> {
    args.agent
        .run(CommandSetup {
            command: "learn",
            duration: args.duration,
            scopes: Scopes::all(Mode::Learn),
            baseline: None,
            judge: JudgeConfig::default(),
            alerts_file: None,
            learn: Some(LearnFiles {
                out: args.out,
                evidence: args.evidence,
                checkpoint: args.checkpoint,
                name: args.name,
            }),
            config: None,
            checkpoint_every: args.checkpoint_interval,
        })
        .await
}

/// The identity resolver once its sources have listed (or could not):
/// printed as an `identity` line before `ready`.
async fn synced_resolver(args: &IdentityArgs) -> anyhow::Result<IdentityResolver> {
    let resolver = IdentityResolver::start(args).await?;
    let status = resolver.wait_synced(args.identity_sync_timeout).await;
    if !status.synced() {
        tracing::warn!(
            "identity sources not synced after {:?}: ends they cannot name yet are judged as unknown",
            args.identity_sync_timeout
        );
    }
    runtime::status(serde_json::json!({"event": "identity", "identity": status}));
    Ok(resolver)
}

pub async fn monitor(args: MonitorArgs) -> anyhow::Result<ExitCode> {
    args.agent
        .run(CommandSetup {
            command: "monitor",
            duration: args.duration,
            scopes: Scopes::all(Mode::Monitor),
            baseline: Some(args.baseline),
            judge: JudgeConfig {
                window: args.window,
                fan_out_threshold: args.fan_out_threshold,
                node: None,
            },
            alerts_file: args.alerts_file,
            learn: None,
            config: None,
            checkpoint_every: Duration::from_secs(30),
        })
        .await
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let agent = config::load(&args.config).map_err(|rejected| anyhow::anyhow!("{rejected}"))?;
    let defaults = JudgeConfig::default();
    // Whenever outputs are configured: a config reload may add a learning
    // scope.
    let learn = agent.learn_out.as_ref().map(|out| LearnFiles {
        out: out.clone(),
        evidence: agent.evidence.clone(),
        checkpoint: agent.checkpoint.clone(),
        name: "learned".into(),
    });
    args.agent
        .run(CommandSetup {
            command: "run",
            duration: args.duration,
            scopes: agent.scopes.clone(),
            baseline: agent.baseline.clone(),
            judge: JudgeConfig {
                window: agent.window.unwrap_or(defaults.window),
                fan_out_threshold: agent
                    .fan_out_threshold
                    .unwrap_or(defaults.fan_out_threshold),
                node: None,
            },
            alerts_file: agent.alerts_file.clone(),
            learn,
            config: Some(args.config),
            checkpoint_every: args.checkpoint_interval,
        })
        .await
}

fn load_doc(path: &Path) -> anyhow::Result<BaselineDoc> {
    let (doc, _) = parse::read::<BaselineDoc>(path).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(Diagnostic::to_string).collect();
        anyhow::anyhow!("{}", lines.join("\n"))
    })?;
    Ok(doc)
}

fn load_valid(path: &Path) -> anyhow::Result<validate::Baseline> {
    let (baseline, _) = validate::load(path, SystemTime::now())
        .map_err(|rejected| anyhow::anyhow!("{rejected}"))?;
    Ok(baseline)
}

pub async fn tool(args: BaselineArgs) -> anyhow::Result<ExitCode> {
    let now = SystemTime::now();
    match args.command {
        Tool::Lint {
            files,
            deny_warnings,
        } => {
            let (mut errors, mut warnings) = (0, 0);
            for file in &files {
                let diagnostics = match validate::load(file, now) {
                    Ok((_, warnings)) => warnings,
                    Err(rejected) => rejected.0,
                };
                for d in &diagnostics {
                    println!("{d}");
                    if d.is_error() {
                        errors += 1;
                    } else {
                        warnings += 1;
                    }
                }
            }
            eprintln!(
                "{} file(s): {errors} error(s), {warnings} warning(s)",
                files.len()
            );
            Ok(if errors > 0 || (deny_warnings && warnings > 0) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Tool::Diff { old, new, format } => {
            let diff = tools::diff(&load_doc(&old)?, &load_doc(&new)?);
            match format {
                OutputFormat::Text => print!("{}", tools::diff_text(&diff)),
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&diff)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Tool::Merge { files, out, name } => {
            let mut docs = Vec::new();
            for file in &files {
                // Only valid inputs: a merge must not launder a broken file.
                load_valid(file)?;
                docs.push(load_doc(file)?);
            }
            let name = name.unwrap_or_else(|| docs[0].metadata.name.value.clone());
            let merged = tools::merge(&docs, &name);
            let yaml = learn::to_yaml(&merged)?;
            learn::write_atomic(&out, yaml.as_bytes())?;
            eprintln!(
                "merged {} file(s) into {} ({} edges)",
                files.len(),
                out.display(),
                merged.spec.edges.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Tool::Explain {
            file,
            from,
            to,
            port,
            format,
        } => {
            let baseline = load_valid(&file)?;
            let range =
                validate::PortRange::parse(&port).map_err(|e| anyhow::anyhow!("--port: {e}"))?;
            anyhow::ensure!(
                range.first == range.last,
                "--port names one port, e.g. 5432/tcp"
            );
            let edge = ObservedEdge {
                from: tools::parse_identity(&from).map_err(|e| anyhow::anyhow!("--from: {e}"))?,
                to: tools::parse_identity(&to).map_err(|e| anyhow::anyhow!("--to: {e}"))?,
                port: range.first,
                transport: range.transport,
            };
            let explanation = tools::explain(&baseline, &edge, now);
            match format {
                OutputFormat::Text => print!("{}", tools::explanation_text(&explanation)),
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&explanation)?),
            }
            Ok(if explanation.verdict == "allowed" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Tool::Report {
            file,
            evidence,
            format,
        } => {
            let baseline = load_valid(&file)?;
            let evidence: Evidence = serde_json::from_slice(
                &std::fs::read(&evidence)
                    .with_context(|| format!("reading {}", evidence.display()))?,
            )
            .with_context(|| format!("parsing {}", evidence.display()))?;
            let report = tools::privilege_report(&baseline, &evidence, now);
            match format {
                OutputFormat::Text => print!("{}", tools::privilege_text(&report)),
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Tool::Schema => {
            print!("{}", format::json_schema());
            Ok(ExitCode::SUCCESS)
        }
        Tool::Export(args) => super::policy_commands::export(args).await,
        Tool::Graph(args) => super::policy_commands::graph(args),
    }
}
