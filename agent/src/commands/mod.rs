//! From parsed arguments to a running command: each file turns one
//! command's flags into what it runs (a pipeline setup, a tool).

mod baseline;
mod learn;
mod monitor;
mod observe;
mod policies;
mod run;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use eastwatch_policy::{config::Scopes, exclude::Exclusions, judge::JudgeConfig};

use crate::{
    cli::{AgentArgs, Command},
    export::health,
    identity::{IdentityArgs, IdentityResolver},
    pipeline::{
        self, Setup,
        policy::{LearnFiles, PolicySetup, PolicyStage},
        status,
    },
    sinks::{AlertSink, jsonl::JsonLinesSink},
};

/// Runs `command` to its end.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Observe(args) => observe::run(args).await,
        Command::Learn(args) => learn::run(args).await,
        Command::Monitor(args) => monitor::run(args).await,
        Command::Run(args) => run::run(args).await,
        Command::Baseline(args) => baseline::run(args).await,
        Command::Probe(args) => health::probe(&args.url, args.timeout)
            .await
            .map(|()| ExitCode::SUCCESS),
    }
}

/// What learn, monitor and run each decide; [`start_agent`] adds the rest.
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

/// Starts identity (synced first), the sensor and export, and runs
/// `command` until it ends.
async fn start_agent(args: AgentArgs, command: CommandSetup) -> anyhow::Result<ExitCode> {
    crate::privileges::check(command.command)?;
    let watch = args.watch;
    let resolver = synced_resolver(&watch.identity).await?;
    let stage = PolicyStage::new(PolicySetup {
        scopes: command.scopes,
        baseline: command.baseline,
        judge: JudgeConfig {
            node: resolver.site().node_or_host(),
            ..command.judge
        },
        learn: command.learn,
        config: command.config,
        checkpoint_every: command.checkpoint_every,
        exclusions: Exclusions::new(&args.exclude_cgroups),
    })?;
    let mut sinks: Vec<Box<dyn AlertSink>> = vec![Box::new(JsonLinesSink::stdout())];
    if let Some(path) = &command.alerts_file {
        sinks.push(Box::new(
            JsonLinesSink::file(path).context("opening the alerts file")?,
        ));
    }
    pipeline::run(Setup {
        command: command.command,
        sensor: watch.sensor.config(),
        duration: command.duration,
        resolver,
        export: watch.export,
        sinks,
        stage,
    })
    .await?;
    Ok(ExitCode::SUCCESS)
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
    status::print(serde_json::json!({"event": "identity", "identity": status}));
    Ok(resolver)
}
