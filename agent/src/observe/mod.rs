//! `eastwatch observe`: stream flows until Ctrl-C or a deadline.

pub mod output;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

use self::output::{Format, Printer};
use crate::{
    identity::{IdentityArgs, IdentityResolver},
    sensor::{Sensor, SensorConfig},
};

pub struct ObserveOptions {
    pub duration: Option<Duration>,
    pub format: Format,
    pub sensor: SensorConfig,
    pub identity: IdentityArgs,
}

pub async fn run(options: ObserveOptions) -> anyhow::Result<()> {
    crate::privileges::check("observe")?;
    let started = Instant::now();
    // Identity sources first: the Kubernetes watches list while the
    // programs load.
    let resolver = IdentityResolver::start(&options.identity).await?;
    let (mut sensor, startup) = Sensor::start(options.sensor).await?;
    let mut printer = Printer::stdout(options.format).with_resolver(Arc::new(resolver.clone()));
    // Connections older than the agent come first, then `ready`.
    printer.observations(&sensor.take_pending())?;
    let mut identity = resolver.status();
    printer.ready(&startup, Some(&identity))?;
    let mut identity_check = tokio::time::interval(Duration::from_secs(1));

    let deadline = async {
        match options.duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    // Streams made once, up front: a signal that arrives while a batch is
    // being printed is queued, not missed.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut toggle = signal(SignalKind::user_defined1())?;
    loop {
        tokio::select! {
            observations = sensor.next() => printer.observations(&observations?)?,
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = &mut deadline => break,
            _ = identity_check.tick() => {
                let now = resolver.status();
                if now.states() != identity.states() {
                    printer.identity(&now)?;
                    identity = now;
                }
            }
            _ = toggle.recv() => {
                let on = sensor.toggle_diagnostics()?;
                info!(on, "kernel diagnostics switched");
            }
        }
    }
    printer.observations(&sensor.stop()?)?;
    printer.summary(started.elapsed(), &sensor.counters()?, sensor.stats())?;
    Ok(())
}
