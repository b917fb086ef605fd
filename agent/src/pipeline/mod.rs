//! The agent's one loop, which every command that watches traffic runs:
//!
//! ```text
//! sensor ─ resolve (identity) ─ stage ─ sinks
//! ```
//!
//! - `observe`: the stage is a printer ([`print::PrintStage`]); nothing is
//!   judged.
//! - `learn`, `monitor`, `run`: the stage learns or judges each flow by
//!   its local end's scope ([`policy::PolicyStage`]).
//!
//! The loop itself records the metrics, raises a visibility-gap alert for
//! every kernel loss, hands every alert to every sink, keeps the health
//! endpoints current, reloads watched files and answers signals; on stop it
//! drains the sensor, closes the stage and lets the spool drain.

pub mod outputs;
pub mod policy;
pub mod print;
pub mod reload;
pub mod status;

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use eastwatch_policy::{
    alert::{Alert, AlertContext, KernelLoss, Mode},
    baseline::matcher::Verdict,
    identity::ResolvedFlow,
};
use tracing::info;

use self::reload::FileWatch;
use crate::{
    export::{DRAIN_ON_EXIT, Export, ExportArgs, sender::QueueStats},
    identity::{IdentityResolver, resolver::IdentityStatus},
    sensor::{LossReport, Observation, Sensor, SensorConfig, Startup},
    signal::{Signal, Signals},
    sinks::{AlertSink, Sinks},
};

/// How long a burst of file events settles before a reload.
const RELOAD_SETTLE: Duration = Duration::from_millis(200);

/// An observation with its ends resolved.
pub enum Resolved {
    /// A flow seen for the first time.
    New(ResolvedFlow),
    /// More occurrences of a known flow.
    More { flow: ResolvedFlow, delta: u64 },
    /// The kernel lost events or foldings since the last report.
    Loss(LossReport),
}

impl Resolved {
    fn of(observation: Observation, resolver: &IdentityResolver) -> Self {
        match observation {
            Observation::Flow(flow) => {
                let at = flow.first_seen;
                Self::New(resolver.resolve_at(flow, at))
            }
            // As of the latest occurrence: a pod deleted since is still
            // the pod, an address reused since is not the new pod's.
            Observation::Count(update) => Self::More {
                flow: resolver.resolve_at(update.flow, update.last_seen),
                delta: update.delta,
            },
            Observation::Loss(report) => Self::Loss(report),
        }
    }

    /// The flow, and the occurrences this observation adds.
    pub fn flow(&self) -> Option<(&ResolvedFlow, u64)> {
        match self {
            Self::New(flow) => Some((flow, flow.flow.count.max(1))),
            Self::More { flow, delta } => Some((flow, *delta)),
            Self::Loss(_) => None,
        }
    }
}

/// What a stage made of one observation.
#[derive(Debug, Default)]
pub struct Taken {
    /// The judge's verdict, when the flow was judged.
    pub verdict: Option<Verdict>,
    pub alerts: Vec<Alert>,
}

/// How the agent started, for the `ready` line.
pub struct Ready<'a> {
    pub command: &'static str,
    pub startup: &'a Startup,
    pub identity: &'a IdentityStatus,
    /// The health endpoints' bound address.
    pub health: Option<SocketAddr>,
    pub otlp: bool,
}

/// How the run went, for the summary.
pub struct Summary<'a> {
    pub command: &'static str,
    pub elapsed: Duration,
    /// When the sensor stopped.
    pub stopped: SystemTime,
    pub sensor: &'a Sensor,
    /// The OTLP spool's final accounting, when alerts were exported.
    pub export: Option<QueueStats>,
    /// Deliveries a sink refused.
    pub sink_errors: u64,
}

/// What turns resolved observations into output and alerts.
pub trait Stage {
    /// The mode the agent's own alerts (kernel loss) are raised in.
    fn mode(&self) -> Mode;
    /// The baseline in force, if any.
    fn baseline_digest(&self) -> Option<String> {
        None
    }
    /// Files to watch; [`Stage::reload`] runs once changes settle.
    fn watched(&self) -> Vec<PathBuf> {
        Vec::new()
    }
    /// How often [`Stage::checkpoint`] runs.
    fn checkpoint_every(&self) -> Option<Duration> {
        None
    }
    fn ready(&mut self, ready: &Ready<'_>) -> anyhow::Result<()>;
    fn take(&mut self, item: &Resolved, now: SystemTime) -> anyhow::Result<Taken>;
    /// After each batch of observations.
    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    /// Once a second.
    fn tick(&mut self, now: SystemTime) -> anyhow::Result<Vec<Alert>>;
    fn checkpoint(&mut self, _now: SystemTime) {}
    fn reload(&mut self, _now: SystemTime) -> Vec<Alert> {
        Vec::new()
    }
    /// Once the sensor has stopped: what is still open.
    fn finish(&mut self, _now: SystemTime) -> Vec<Alert> {
        Vec::new()
    }
    /// After [`Stage::finish`]'s alerts are delivered: what must be kept.
    fn save(&mut self, _now: SystemTime) -> anyhow::Result<()> {
        Ok(())
    }
    fn summary(&mut self, summary: &Summary<'_>) -> anyhow::Result<()>;
}

/// What a command sets up; [`run`] does the rest.
pub struct Setup<S> {
    pub command: &'static str,
    pub sensor: SensorConfig,
    /// Stop after this long; default: until a signal.
    pub duration: Option<Duration>,
    pub resolver: IdentityResolver,
    pub export: ExportArgs,
    /// Sinks besides export's (stdout, the alerts file).
    pub sinks: Vec<Box<dyn AlertSink>>,
    pub stage: S,
}

/// Runs `setup` until a signal or its duration ends it.
pub async fn run<S: Stage>(setup: Setup<S>) -> anyhow::Result<()> {
    let started = Instant::now();
    let export = Export::start(&setup.export, setup.command, setup.resolver.site().clone()).await?;
    let mut sinks = setup.sinks;
    sinks.extend(export.sinks());
    let watched = setup.stage.watched();
    let watch = if watched.is_empty() {
        None
    } else {
        Some(reload::watch(&watched)?)
    };
    let flow_map_capacity = u64::from(setup.sensor.probe.flow_map_entries);
    let (sensor, startup) = Sensor::start(setup.sensor).await?;
    let mut pipeline = Pipeline {
        command: setup.command,
        resolver: setup.resolver,
        sensor,
        stage: setup.stage,
        sinks: Sinks::new(sinks),
        export,
        flow_map_capacity,
    };
    // Before `ready`: a signal sent as soon as the agent says it is ready
    // must find the handlers installed (else it kills the process).
    let signals = Signals::install()?;
    // Connections older than the agent come first, then `ready`.
    let pending = pipeline.sensor.take_pending();
    pipeline.take(pending, SystemTime::now())?;
    pipeline.ready(&startup)?;
    pipeline.turn(signals, watch, setup.duration).await?;
    pipeline.stop(started).await
}

struct Pipeline<S> {
    command: &'static str,
    resolver: IdentityResolver,
    sensor: Sensor,
    stage: S,
    sinks: Sinks,
    export: Export,
    flow_map_capacity: u64,
}

impl<S: Stage> Pipeline<S> {
    fn ready(&mut self, startup: &Startup) -> anyhow::Result<()> {
        self.export.health.set_ready(true);
        let identity = self.resolver.status();
        self.stage.ready(&Ready {
            command: self.command,
            startup,
            identity: &identity,
            health: self.export.health_addr,
            otlp: self.export.enabled(),
        })
    }

    /// The loop: observations, the second's tick, checkpoints, reloads and
    /// signals, until a stop signal or the deadline.
    async fn turn(
        &mut self,
        mut signals: Signals,
        mut watch: Option<FileWatch>,
        duration: Option<Duration>,
    ) -> anyhow::Result<()> {
        let deadline = async {
            match duration {
                Some(duration) => tokio::time::sleep(duration).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let checkpoint_every = self.stage.checkpoint_every();
        // Never polled without a period (the branch below is disabled).
        let mut checkpoint =
            tokio::time::interval(checkpoint_every.unwrap_or(Duration::from_secs(3600)));
        checkpoint.tick().await;
        let mut reload_at = None;
        loop {
            tokio::select! {
                observations = self.sensor.next() => self.take(observations?, SystemTime::now())?,
                _ = tick.tick() => self.tick(SystemTime::now())?,
                _ = checkpoint.tick(), if checkpoint_every.is_some() => {
                    self.stage.checkpoint(SystemTime::now());
                }
                Some(()) = changed(&mut watch) => {
                    // Let a burst of events (a ConfigMap swap is several)
                    // settle while flows keep being judged.
                    reload_at.get_or_insert_with(|| tokio::time::Instant::now() + RELOAD_SETTLE);
                }
                () = settled(reload_at) => {
                    reload_at = None;
                    if let Some(watch) = &mut watch {
                        watch.drain();
                    }
                    let alerts = self.stage.reload(SystemTime::now());
                    self.sinks.deliver(alerts);
                }
                signal = signals.recv() => match signal {
                    Signal::Stop => return Ok(()),
                    Signal::ToggleDiagnostics => {
                        let on = self.sensor.toggle_diagnostics()?;
                        info!(on, "kernel diagnostics switched");
                    }
                },
                _ = &mut deadline => return Ok(()),
            }
        }
    }

    /// Resolves a batch of observations and hands each to the stage.
    fn take(&mut self, observations: Vec<Observation>, now: SystemTime) -> anyhow::Result<()> {
        for observation in observations {
            let item = Resolved::of(observation, &self.resolver);
            let metrics = &self.export.metrics;
            if let Some((flow, count)) = item.flow() {
                metrics.observed(flow, count);
            }
            if let Resolved::Loss(report) = &item {
                for (counter, lost) in &report.new {
                    metrics.kernel_lost(counter, *lost);
                }
                // Only real losses are a visibility gap (see `NOT_LOST`).
                let loss = kernel_loss(report);
                if loss.events_lost() > 0 {
                    let alert = Alert::kernel_loss(&self.alert_context(now), &loss);
                    self.sinks.deliver([alert]);
                }
            }
            let taken = self.stage.take(&item, now)?;
            if let (Some(verdict), Some((flow, count))) = (taken.verdict, item.flow()) {
                self.export.metrics.judged(flow, count, verdict);
            }
            self.sinks.deliver(taken.alerts);
        }
        self.stage.flush()?;
        self.export.health.beat();
        Ok(())
    }

    fn tick(&mut self, now: SystemTime) -> anyhow::Result<()> {
        let alerts = self.stage.tick(now)?;
        self.sinks.deliver(alerts);
        self.export
            .metrics
            .flow_map(self.sensor.stats().flow_map_entries, self.flow_map_capacity);
        self.export.health.beat();
        Ok(())
    }

    /// Stops the sensor and takes what it still had, closes the stage, and
    /// gives the collector a moment for the alerts raised so far.
    async fn stop(mut self, started: Instant) -> anyhow::Result<()> {
        self.export.health.set_ready(false);
        let now = SystemTime::now();
        let last = self.sensor.stop()?;
        self.take(last, now)?;
        let alerts = self.stage.finish(now);
        self.sinks.deliver(alerts);
        self.stage.save(now)?;
        let exported = self.export.shutdown(DRAIN_ON_EXIT).await;
        self.stage.summary(&Summary {
            command: self.command,
            elapsed: started.elapsed(),
            stopped: now,
            sensor: &self.sensor,
            export: exported,
            sink_errors: self.sinks.errors(),
        })
    }

    /// Who raises the loop's own alerts.
    fn alert_context(&self, now: SystemTime) -> AlertContext {
        AlertContext {
            time: now,
            node: self.resolver.site().node_or_host(),
            mode: self.stage.mode(),
            baseline_digest: self.stage.baseline_digest(),
        }
    }
}

/// The next change to a watched file (never, without a watch).
async fn changed(watch: &mut Option<FileWatch>) -> Option<()> {
    match watch {
        Some(watch) => watch.events.recv().await,
        None => std::future::pending().await,
    }
}

/// When a burst of changes has settled (never, without one).
async fn settled(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What the kernel lost, as alerts tell it.
fn kernel_loss(report: &LossReport) -> KernelLoss {
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
