//! `eastwatch learn`: every scope learns; the baseline, evidence and
//! checkpoint are written as it goes.

use std::process::ExitCode;

use eastwatch_policy::{alert::Mode, config::Scopes, judge::JudgeConfig};

use super::{CommandSetup, start_agent};
use crate::{cli::LearnArgs, pipeline::policy::LearnFiles};

pub async fn run(args: LearnArgs) -> anyhow::Result<ExitCode> {
    start_agent(
        args.agent,
        CommandSetup {
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
        },
    )
    .await
}
