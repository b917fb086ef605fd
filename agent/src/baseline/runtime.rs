//! The long-running side of baselines: `eastwatch learn`, `monitor` and
//! `run` share this loop. Flows are resolved, then each goes to the learner
//! or the judge by the mode of its local end's scope; alerts go to every
//! sink. Status lines (`ready`, `learned`, `learn_progress`, `summary`)
//! are JSON lines on stdout next to the alerts.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use eastwatch_policy::{
    alert::{Alert, AlertContext, Mode, WatchedFile},
    baseline::{
        diag::Rejected,
        matcher::{Matcher, ObservedEdge},
        validate::{self, Baseline},
    },
    config::{self, Scopes},
    exclude::Exclusions,
    file::write_atomic,
    identity::ResolvedFlow,
    judge::{Judge, JudgeConfig},
    learn::Learner,
};

use super::reload::{self, Contents};
use crate::{
    export::{DRAIN_ON_EXIT, Export, ExportArgs, metrics::Metrics},
    identity::{Resolve, Site},
    observe::kernel_loss,
    sensor::{Observation, Sensor, SensorConfig},
    sinks::{AlertSink, jsonl::JsonLinesSink},
};

/// Where learn mode writes.
#[derive(Debug, Clone)]
pub struct LearnFiles {
    pub out: PathBuf,
    pub evidence: Option<PathBuf>,
    pub checkpoint: Option<PathBuf>,
    /// `metadata.name` of the learned baseline.
    pub name: String,
}

pub struct RunSetup {
    pub command: &'static str,
    pub sensor: SensorConfig,
    pub duration: Option<Duration>,
    pub scopes: Scopes,
    pub baseline: Option<PathBuf>,
    pub judge: JudgeConfig,
    pub alerts_file: Option<PathBuf>,
    pub learn: Option<LearnFiles>,
    /// `run`: the config file, watched too.
    pub config: Option<PathBuf>,
    /// How often learned state is checkpointed and progress printed.
    pub checkpoint_every: Duration,
    /// OTLP export, spool and health endpoints.
    pub export: ExportArgs,
    /// Host, node and cluster names for exported records.
    pub site: Site,
    /// Cgroups neither learned nor judged.
    pub exclusions: Exclusions,
}

/// How long a burst of file events settles before a reload.
const RELOAD_SETTLE: Duration = Duration::from_millis(200);

/// Prints one status line on stdout.
pub fn status(value: Value) {
    let mut line = value.to_string();
    line.push('\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

struct Engine {
    resolver: Box<dyn Resolve + Send>,
    scopes: Scopes,
    exclusions: Exclusions,
    /// Observations of excluded cgroups' flows.
    excluded: u64,
    learner: Option<Learner>,
    learn: Option<LearnFiles>,
    judge: Option<Judge>,
    judge_config: JudgeConfig,
    sinks: Vec<Box<dyn AlertSink>>,
    sink_errors: u64,
    metrics: Metrics,
    baseline_file: Option<Contents>,
    config_file: Option<Contents>,
}

impl Engine {
    fn deliver(&mut self, alerts: Vec<Alert>) {
        for alert in alerts {
            for sink in &mut self.sinks {
                if let Err(err) = sink.deliver(&alert) {
                    self.sink_errors += 1;
                    warn!(%err, "alert sink failed");
                }
            }
        }
    }

    fn observe(&mut self, observation: Observation, now: SystemTime) {
        match observation {
            Observation::Flow(flow) => {
                let count = flow.count.max(1);
                let resolved = self.resolver.resolve(&flow);
                self.metrics.observed(&resolved, count);
                self.take(&resolved, count, now);
            }
            Observation::Count(update) => {
                let resolved = self.resolver.resolve(&update.flow);
                self.metrics.observed(&resolved, update.delta);
                self.take(&resolved, update.delta, now);
            }
            Observation::Loss(loss) => {
                for (counter, lost) in &loss.new {
                    self.metrics.kernel_lost(counter, *lost);
                }
                let alert = Alert::kernel_loss(&self.alert_context(now), &kernel_loss(&loss));
                self.deliver(vec![alert]);
            }
        }
    }

    fn take(&mut self, flow: &ResolvedFlow, count: u64, now: SystemTime) {
        if self.exclusions.excludes(flow.flow.owner.path.as_deref()) {
            self.excluded += count;
            return;
        }
        match self.scopes.mode_for(&flow.local.identity) {
            Mode::Learn => {
                if let Some(learner) = &mut self.learner
                    && let Some(edge) = learner.observe(flow, count, now)
                {
                    status(learned_line(&edge));
                }
            }
            Mode::Monitor => {
                if let Some(judge) = &mut self.judge {
                    let judgement = judge.judge(flow, count, now);
                    self.metrics.judged(flow, count, judgement.verdict);
                    self.deliver(judgement.alerts);
                }
            }
        }
    }

    fn tick(&mut self, now: SystemTime) {
        if let Some(judge) = &mut self.judge {
            let reports = judge.tick(now);
            self.deliver(reports);
        }
    }

    /// Writes the learned baseline, the evidence and the checkpoint.
    fn save_learned(&self, now: SystemTime) -> anyhow::Result<()> {
        let (Some(learner), Some(files)) = (&self.learner, &self.learn) else {
            return Ok(());
        };
        if let Some(checkpoint) = &files.checkpoint {
            let bytes = serde_json::to_vec_pretty(&learner.checkpoint())?;
            write_atomic(checkpoint, &bytes)?;
        }
        let yaml = learner
            .baseline(&files.name)
            .to_yaml()
            .context("serializing the baseline")?;
        write_atomic(&files.out, yaml.as_bytes())?;
        if let Some(evidence) = &files.evidence {
            let bytes = serde_json::to_vec_pretty(&learner.evidence(now))?;
            write_atomic(evidence, &bytes)?;
        }
        Ok(())
    }

    fn progress(&self, now: SystemTime) {
        if let Some(learner) = &self.learner {
            status(json!({
                "event": "learn_progress",
                "edges": learner.len(),
                "converged_for_secs": learner.converged_for(now).as_secs(),
            }));
        }
    }

    /// Re-reads the config and the baseline after a change on disk.
    fn reload(&mut self, now: SystemTime) {
        if let Some(contents) = &mut self.config_file
            && contents.changed()
        {
            let path = contents.path.clone();
            self.reload_config(&path, now);
        }
        if let Some(contents) = &mut self.baseline_file
            && contents.changed()
        {
            let path = contents.path.clone();
            self.reload_baseline(&path, now);
        }
    }

    /// Applies a changed config, or keeps the previous one.
    fn reload_config(&mut self, path: &Path, now: SystemTime) {
        let config = match config::load(path) {
            Ok(config) => config,
            Err(rejected) => return self.rejected(WatchedFile::Config, path, &rejected, now),
        };
        info!(file = %path.display(), "config reloaded");
        self.scopes = config.scopes;
        if let Some(window) = config.window {
            self.judge_config.window = window;
        }
        if let Some(threshold) = config.fan_out_threshold {
            self.judge_config.fan_out_threshold = threshold;
        }
        if let Some(judge) = &mut self.judge {
            judge.set_config(self.judge_config.clone());
        }
        if let Some(baseline) = config.baseline
            && self
                .baseline_file
                .as_ref()
                .is_none_or(|b| b.path != baseline)
        {
            self.baseline_file = Some(Contents::new(baseline));
        }
        let alert =
            Alert::file_applied(&self.alert_context(now), WatchedFile::Config, path, 0, &[]);
        self.deliver(vec![alert]);
    }

    /// Judges with a changed baseline from now on, or keeps the last good
    /// one.
    fn reload_baseline(&mut self, path: &Path, now: SystemTime) {
        let (baseline, warnings) = match validate::load(path, now) {
            Ok(loaded) => loaded,
            Err(rejected) => return self.rejected(WatchedFile::Baseline, path, &rejected, now),
        };
        if self
            .judge
            .as_ref()
            .is_some_and(|j| j.digest() == baseline.digest)
        {
            return;
        }
        let digest = baseline.digest.clone();
        let edges = baseline.rules.len();
        let matcher = Arc::new(Matcher::new(Arc::new(baseline)));
        let pending = match &mut self.judge {
            Some(judge) => judge.replace(matcher, now),
            None => {
                self.judge = Some(Judge::new(matcher, self.judge_config.clone()));
                Vec::new()
            }
        };
        self.deliver(pending);
        info!(file = %path.display(), %digest, edges, "baseline reloaded");
        let warnings: Vec<String> = warnings.iter().map(|w| w.to_string()).collect();
        let alert = Alert::file_applied(
            &self.alert_context(now),
            WatchedFile::Baseline,
            path,
            edges,
            &warnings,
        );
        self.deliver(vec![alert]);
    }

    fn rejected(&mut self, file: WatchedFile, path: &Path, rejected: &Rejected, now: SystemTime) {
        let what = file.as_str();
        warn!(file = %path.display(), errors = %rejected, "{what} change rejected");
        let alert =
            Alert::file_rejected(&self.alert_context(now), file, path, &rejected.to_string());
        self.deliver(vec![alert]);
    }

    /// Who raises the agent's own alerts: this node, in monitor mode when
    /// any scope is monitored, against the baseline in force.
    fn alert_context(&self, now: SystemTime) -> AlertContext {
        AlertContext {
            time: now,
            node: self.judge_config.node.clone(),
            mode: if self.scopes.any(Mode::Monitor) {
                Mode::Monitor
            } else {
                Mode::Learn
            },
            baseline_digest: self.judge.as_ref().map(|j| j.digest().to_owned()),
        }
    }
}

fn learned_line(edge: &ObservedEdge) -> Value {
    json!({
        "event": "learned",
        "from": edge.from.canonical(),
        "to": edge.to.canonical(),
        "port": edge.port,
        "transport": edge.transport,
    })
}

/// Loads the first baseline; errors name every problem with its position.
pub fn initial_baseline(path: &std::path::Path) -> anyhow::Result<Baseline> {
    let (baseline, warnings) = validate::load(path, SystemTime::now())
        .map_err(|rejected| anyhow::anyhow!("{rejected}"))?;
    for warning in warnings {
        warn!("{warning}");
    }
    Ok(baseline)
}

pub async fn run(setup: RunSetup, resolver: Box<dyn Resolve + Send>) -> anyhow::Result<()> {
    crate::privileges::check(setup.command)?;
    let export = Export::start(&setup.export, setup.command, setup.site.clone()).await?;
    let started = Instant::now();
    let now = SystemTime::now();
    // Loaded whenever there is a baseline: a config reload may turn a
    // learning scope into a monitored one.
    let judge = match (&setup.baseline, setup.scopes.any(Mode::Monitor)) {
        (Some(path), _) => {
            let baseline = initial_baseline(path)?;
            Some(Judge::new(
                Arc::new(Matcher::new(Arc::new(baseline))),
                setup.judge.clone(),
            ))
        }
        (None, true) => anyhow::bail!("monitoring needs a baseline"),
        _ => None,
    };
    let learner = match &setup.learn {
        Some(files) => Some(Learner::load_or_new(files.checkpoint.as_deref(), now)?),
        None => None,
    };
    let resumed = learner.as_ref().map_or(0, Learner::len);
    let mut sinks: Vec<Box<dyn AlertSink>> = vec![Box::new(JsonLinesSink::stdout())];
    if let Some(path) = &setup.alerts_file {
        sinks.push(Box::new(JsonLinesSink::file(path).with_context(|| {
            format!("opening the alerts file {}", path.display())
        })?));
    }
    sinks.extend(export.sinks());
    let mut watched: Vec<&std::path::Path> = Vec::new();
    if let Some(path) = &setup.baseline {
        watched.push(path);
    }
    if let Some(path) = &setup.config {
        watched.push(path);
    }
    let mut watch = if watched.is_empty() {
        None
    } else {
        Some(reload::watch(&watched)?)
    };
    let mut engine = Engine {
        resolver,
        scopes: setup.scopes.clone(),
        exclusions: setup.exclusions.clone(),
        excluded: 0,
        learner,
        learn: setup.learn.clone(),
        judge,
        judge_config: setup.judge.clone(),
        sinks,
        sink_errors: 0,
        metrics: export.metrics.clone(),
        baseline_file: setup.baseline.clone().map(Contents::new),
        config_file: setup.config.clone().map(Contents::new),
    };
    // Record what is on disk now, so only later changes count.
    if let Some(contents) = &mut engine.baseline_file {
        contents.changed();
    }
    if let Some(contents) = &mut engine.config_file {
        contents.changed();
    }

    let (mut sensor, startup) = Sensor::start(setup.sensor.clone()).await?;
    for observation in sensor.take_pending() {
        engine.observe(observation, SystemTime::now());
    }
    // Before `ready`: a signal sent as soon as the agent says it is ready
    // must find the handlers installed (else it kills the process).
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let flow_map_capacity = u64::from(setup.sensor.probe.flow_map_entries);
    export.health.set_ready(true);
    status(json!({
        "event": "ready",
        "command": setup.command,
        "health": export.health_addr.map(|a| a.to_string()),
        "otlp": export.enabled(),
        "programs": startup.programs.len(),
        "baseline_digest": engine.judge.as_ref().map(|j| j.digest().to_owned()),
        "baseline_edges": engine.judge.as_ref().map(|j| j.matcher().baseline().rules.len()),
        "learned_edges_resumed": resumed,
    }));

    let deadline = async {
        match setup.duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut checkpoint = tokio::time::interval(setup.checkpoint_every);
    checkpoint.tick().await;
    let mut reload_at = None;
    loop {
        tokio::select! {
            observations = sensor.next() => {
                let now = SystemTime::now();
                for observation in observations? {
                    engine.observe(observation, now);
                }
                export.health.beat();
            }
            _ = tick.tick() => {
                engine.tick(SystemTime::now());
                engine.metrics.flow_map(sensor.stats().flow_map_entries, flow_map_capacity);
                export.health.beat();
            }
            _ = checkpoint.tick() => {
                let now = SystemTime::now();
                if let Err(err) = engine.save_learned(now) {
                    warn!(%err, "checkpoint failed");
                }
                engine.progress(now);
            }
            Some(()) = async {
                match &mut watch {
                    Some(watch) => watch.events.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                // Let a burst of events (a ConfigMap swap is several) settle
                // while flows keep being judged.
                reload_at.get_or_insert_with(|| tokio::time::Instant::now() + RELOAD_SETTLE);
            }
            () = async {
                match reload_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                reload_at = None;
                if let Some(watch) = &mut watch {
                    while watch.events.try_recv().is_ok() {}
                }
                engine.reload(SystemTime::now());
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = &mut deadline => break,
        }
    }
    export.health.set_ready(false);
    let now = SystemTime::now();
    for observation in sensor.stop()? {
        engine.observe(observation, now);
    }
    if let Some(judge) = &mut engine.judge {
        let reports = judge.finish(now);
        engine.deliver(reports);
    }
    engine.save_learned(now)?;
    // Alerts raised so far are spooled; the collector gets a moment for them.
    let exported = export.shutdown(DRAIN_ON_EXIT).await;
    status(json!({
        "event": "summary",
        "command": setup.command,
        "duration_secs": started.elapsed().as_secs_f64(),
        "judge": engine.judge.as_ref().map(|j| j.stats().clone()),
        "unused_rules": engine.judge.as_ref().map(Judge::unused_rules),
        "learned_edges": engine.learner.as_ref().map(Learner::len),
        "converged_for_secs": engine.learner.as_ref().map(|l| l.converged_for(now).as_secs()),
        "sink_errors": engine.sink_errors,
        "excluded_observations": engine.excluded,
        "agent": sensor.stats(),
        "export": exported,
    }));
    Ok(())
}
