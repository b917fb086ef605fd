//! `eastwatch observe`: stream flows until Ctrl-C or a deadline.

pub mod output;

use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

use self::output::{Format, Printer};
use crate::sensor::{Sensor, SensorConfig};

pub struct ObserveOptions {
    pub duration: Option<Duration>,
    pub format: Format,
    pub sensor: SensorConfig,
}

pub async fn run(options: ObserveOptions) -> anyhow::Result<()> {
    crate::privileges::check("observe")?;
    let started = Instant::now();
    let (mut sensor, startup) = Sensor::start(options.sensor).await?;
    let mut printer = Printer::stdout(options.format);
    // Connections older than the agent come first, then `ready`.
    printer.observations(&sensor.take_pending())?;
    printer.ready(&startup)?;

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
