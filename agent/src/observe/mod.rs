//! `eastwatch observe`: stream flows until Ctrl-C or a deadline.

pub mod output;

use std::time::{Duration, Instant, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use eastwatch_policy::alert::{Alert, AlertContext, KernelLoss, Mode};

use self::output::{Format, Printer, Resolved};
use crate::{
    export::{DRAIN_ON_EXIT, Export, ExportArgs},
    identity::{IdentityArgs, IdentityResolver, Resolve as _},
    sensor::{LossReport, Observation, Sensor, SensorConfig},
    sinks::AlertSink,
};

/// What the kernel lost, as alerts tell it.
pub fn kernel_loss(report: &LossReport) -> KernelLoss {
    let counters = &report.counters;
    KernelLoss {
        lost: report
            .new
            .iter()
            .map(|(name, lost)| ((*name).to_owned(), *lost))
            .collect(),
        totals: counters
            .losses()
            .into_iter()
            .map(|(name, counter)| (name.to_owned(), counter.total))
            .chain([(
                "flow_events_offered".to_owned(),
                counters.flow_events_offered.total,
            )])
            .collect(),
    }
}

pub struct ObserveOptions {
    pub duration: Option<Duration>,
    pub format: Format,
    pub sensor: SensorConfig,
    pub identity: IdentityArgs,
    pub export: ExportArgs,
}

/// What observe exports when a collector is configured: flow metrics, and
/// kernel losses as visibility-gap alerts.
struct Exported {
    export: Export,
    sinks: Vec<Box<dyn AlertSink>>,
}

impl Exported {
    fn observations(&mut self, observations: &[Resolved]) {
        for (observation, resolved) in observations {
            match (observation, resolved) {
                (Observation::Flow(flow), Some(resolved)) => {
                    self.export.metrics.observed(resolved, flow.count.max(1));
                }
                (Observation::Count(update), Some(resolved)) => {
                    self.export.metrics.observed(resolved, update.delta);
                }
                (Observation::Loss(loss), _) => {
                    for (counter, lost) in &loss.new {
                        self.export.metrics.kernel_lost(counter, *lost);
                    }
                    if !self.export.enabled() {
                        continue;
                    }
                    let context = AlertContext {
                        time: SystemTime::now(),
                        node: self.export.site.node_or_host(),
                        // Nothing is judged: observe is learn mode's sensing.
                        mode: Mode::Learn,
                        baseline_digest: None,
                    };
                    let alert = Alert::kernel_loss(&context, &kernel_loss(loss));
                    for sink in &mut self.sinks {
                        if let Err(err) = sink.deliver(&alert) {
                            warn!(%err, "alert sink failed");
                        }
                    }
                }
                _ => {}
            }
        }
        self.export.health.beat();
    }
}

/// Resolves each flow once, for the printer and the metrics alike.
fn resolve(resolver: &IdentityResolver, observations: Vec<Observation>) -> Vec<Resolved> {
    observations
        .into_iter()
        .map(|observation| {
            let resolved = match &observation {
                Observation::Flow(flow) => Some(resolver.resolve(flow)),
                Observation::Count(update) => Some(resolver.resolve(&update.flow)),
                Observation::Loss(_) => None,
            };
            (observation, resolved)
        })
        .collect()
}

pub async fn run(options: ObserveOptions) -> anyhow::Result<()> {
    crate::privileges::check("observe")?;
    let started = Instant::now();
    // Identity sources before the programs: the Kubernetes watches list
    // while the programs load.
    let resolver = IdentityResolver::start(&options.identity).await?;
    let site = resolver.site().clone();
    let export = Export::start(&options.export, "observe", site).await?;
    let sinks = export.sinks();
    let mut exported = Exported { export, sinks };
    let flow_map_capacity = u64::from(options.sensor.probe.flow_map_entries);
    let (mut sensor, startup) = Sensor::start(options.sensor).await?;
    let mut printer = Printer::stdout(options.format);
    // Streams made once, before `ready`: a signal sent as soon as the agent
    // says it is ready, or while a batch is printed, is queued, not missed.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut toggle = signal(SignalKind::user_defined1())?;
    // Connections older than the agent come first, then `ready`.
    let pending = resolve(&resolver, sensor.take_pending());
    exported.observations(&pending);
    printer.observations(&pending)?;
    let mut identity = resolver.status();
    printer.ready(&startup, Some(&identity))?;
    exported.export.health.set_ready(true);
    let mut identity_check = tokio::time::interval(Duration::from_secs(1));

    let deadline = async {
        match options.duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            observations = sensor.next() => {
                let observations = resolve(&resolver, observations?);
                exported.observations(&observations);
                printer.observations(&observations)?;
            }
            _ = beat.tick() => {
                exported.export.metrics.flow_map(sensor.stats().flow_map_entries, flow_map_capacity);
                exported.export.health.beat();
            }
            _ = identity_check.tick() => {
                let now = resolver.status();
                if now.states() != identity.states() {
                    printer.identity(&now)?;
                    identity = now;
                }
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = &mut deadline => break,
            _ = toggle.recv() => {
                let on = sensor.toggle_diagnostics()?;
                info!(on, "kernel diagnostics switched");
            }
        }
    }
    exported.export.health.set_ready(false);
    let last = resolve(&resolver, sensor.stop()?);
    exported.observations(&last);
    printer.observations(&last)?;
    exported.export.shutdown(DRAIN_ON_EXIT).await;
    printer.summary(started.elapsed(), &sensor.counters()?, sensor.stats())?;
    Ok(())
}
