//! `eastwatch observe`: every flow printed, nothing judged.

use std::process::ExitCode;

use crate::{
    cli::ObserveArgs,
    observe::{self, ObserveOptions},
};

pub async fn run(args: ObserveArgs) -> anyhow::Result<ExitCode> {
    observe::run(ObserveOptions {
        duration: args.duration,
        format: args.format,
        sensor: args.sensor.config(),
        identity: args.identity,
        export: args.export,
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}
