//! `eastwatch monitor`: every scope is judged against one baseline.

use std::{process::ExitCode, time::Duration};

use eastwatch_policy::{alert::Mode, config::Scopes, judge::JudgeConfig};

use super::{CommandSetup, start_agent};
use crate::cli::MonitorArgs;

pub async fn run(args: MonitorArgs) -> anyhow::Result<ExitCode> {
    start_agent(
        args.agent,
        CommandSetup {
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
        },
    )
    .await
}
