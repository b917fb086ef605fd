//! `eastwatch run`: the long-running agent, its modes per scope and its
//! files from the config file (watched, with the baseline).

use std::process::ExitCode;

use eastwatch_policy::{config, judge::JudgeConfig};

use super::{CommandSetup, start_agent};
use crate::{cli::RunArgs, pipeline::policy::LearnFiles};

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
    start_agent(
        args.agent,
        CommandSetup {
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
        },
    )
    .await
}
