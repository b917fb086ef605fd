//! `eastwatch observe`: every flow printed, nothing judged.

use std::process::ExitCode;

use crate::{
    cli::ObserveArgs,
    identity::IdentityResolver,
    pipeline::{self, Setup, print::PrintStage},
};

pub async fn run(args: ObserveArgs) -> anyhow::Result<ExitCode> {
    crate::privileges::check("observe")?;
    // Identity sources before the programs: the Kubernetes watches list
    // while the programs load.
    let watch = args.watch;
    let resolver = IdentityResolver::start(&watch.identity).await?;
    pipeline::run(Setup {
        command: "observe",
        sensor: watch.sensor.config(),
        duration: args.duration,
        stage: PrintStage::new(args.format, resolver.clone()),
        resolver,
        export: watch.export,
        // Flows go to stdout; alerts (kernel losses) only to export.
        sinks: Vec::new(),
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}
