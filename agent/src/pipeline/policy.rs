//! The stage of `eastwatch learn`, `monitor` and `run`: each flow goes to
//! the learner or the judge by the mode of its local end's scope. Status
//! lines (`ready`, `learned`, `learn_progress`, `summary`) are JSON lines on
//! stdout next to the alerts; the config and the baseline are reloaded
//! when they change.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
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
use serde_json::{Value, json};
use tracing::{info, warn};

use super::{
    Ready, Resolved, Stage, Summary, Taken, outputs::CheckpointLock, reload::Contents, status,
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

/// What learn, monitor and run decide.
pub struct PolicySetup {
    pub scopes: Scopes,
    pub baseline: Option<PathBuf>,
    pub judge: JudgeConfig,
    pub learn: Option<LearnFiles>,
    /// `run`: the config file, watched too.
    pub config: Option<PathBuf>,
    /// How often learned state is checkpointed and progress printed.
    pub checkpoint_every: Duration,
    /// Cgroups neither learned nor judged.
    pub exclusions: Exclusions,
}

pub struct PolicyStage {
    scopes: Scopes,
    exclusions: Exclusions,
    /// Observations of excluded cgroups' flows.
    excluded: u64,
    learner: Option<Learner>,
    learn: Option<LearnFiles>,
    /// Learned edges the checkpoint held at start.
    resumed: usize,
    judge: Option<Judge>,
    judge_config: JudgeConfig,
    baseline_file: Option<Contents>,
    config_file: Option<Contents>,
    checkpoint_every: Duration,
    /// Held while learning (see [`LearnFiles::prepare`]).
    _checkpoint_lock: Option<CheckpointLock>,
}

impl PolicyStage {
    /// Loads the baseline (whenever there is one: a config reload may turn
    /// a learning scope into a monitored one) and the learner's checkpoint.
    pub fn new(setup: PolicySetup) -> anyhow::Result<Self> {
        let now = SystemTime::now();
        // Before anything is loaded or attached.
        let checkpoint_lock = match &setup.learn {
            Some(files) => files.prepare()?,
            None => None,
        };
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
        let mut stage = Self {
            scopes: setup.scopes,
            exclusions: setup.exclusions,
            excluded: 0,
            resumed: learner.as_ref().map_or(0, Learner::len),
            learner,
            learn: setup.learn,
            judge,
            judge_config: setup.judge,
            baseline_file: setup.baseline.map(Contents::new),
            config_file: setup.config.map(Contents::new),
            checkpoint_every: setup.checkpoint_every,
            _checkpoint_lock: checkpoint_lock,
        };
        // Record what is on disk now, so only later changes count.
        for contents in [&mut stage.baseline_file, &mut stage.config_file]
            .into_iter()
            .flatten()
        {
            contents.changed();
        }
        Ok(stage)
    }

    /// Learns or judges `count` occurrences of a flow, by its scope's mode.
    fn learn_or_judge(&mut self, flow: &ResolvedFlow, count: u64, now: SystemTime) -> Taken {
        if self.exclusions.excludes(flow.flow.owner.path.as_deref()) {
            self.excluded += count;
            return Taken::default();
        }
        match self.scopes.mode_for(&flow.local.identity) {
            Mode::Learn => {
                if let Some(learner) = &mut self.learner
                    && let Some(edge) = learner.observe(flow, count, now)
                {
                    status::print(learned_line(&edge));
                }
                Taken::default()
            }
            Mode::Monitor => match &mut self.judge {
                Some(judge) => {
                    let judgement = judge.judge(flow, count, now);
                    Taken {
                        verdict: Some(judgement.verdict),
                        alerts: judgement.alerts,
                    }
                }
                None => Taken::default(),
            },
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

    /// Applies a changed config, or keeps the previous one.
    fn reload_config(&mut self, path: &Path, now: SystemTime) -> Alert {
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
        Alert::file_applied(&self.alert_context(now), WatchedFile::Config, path, 0, &[])
    }

    /// Judges with a changed baseline from now on, or keeps the last good
    /// one. The old baseline's pending repeat reports come first.
    fn reload_baseline(&mut self, path: &Path, now: SystemTime) -> Vec<Alert> {
        let (baseline, warnings) = match validate::load(path, now) {
            Ok(loaded) => loaded,
            Err(rejected) => {
                return vec![self.rejected(WatchedFile::Baseline, path, &rejected, now)];
            }
        };
        if self
            .judge
            .as_ref()
            .is_some_and(|j| j.digest() == baseline.digest)
        {
            return Vec::new();
        }
        let digest = baseline.digest.clone();
        let edges = baseline.rules.len();
        let matcher = Arc::new(Matcher::new(Arc::new(baseline)));
        let mut alerts = match &mut self.judge {
            Some(judge) => judge.replace(matcher, now),
            None => {
                self.judge = Some(Judge::new(matcher, self.judge_config.clone()));
                Vec::new()
            }
        };
        info!(file = %path.display(), %digest, edges, "baseline reloaded");
        let warnings: Vec<String> = warnings.iter().map(|w| w.to_string()).collect();
        alerts.push(Alert::file_applied(
            &self.alert_context(now),
            WatchedFile::Baseline,
            path,
            edges,
            &warnings,
        ));
        alerts
    }

    fn rejected(
        &self,
        file: WatchedFile,
        path: &Path,
        rejected: &Rejected,
        now: SystemTime,
    ) -> Alert {
        let what = file.as_str();
        warn!(file = %path.display(), errors = %rejected, "{what} change rejected");
        Alert::file_rejected(&self.alert_context(now), file, path, &rejected.to_string())
    }

    /// Who raises the stage's own alerts: this node, in the stage's mode,
    /// against the baseline in force.
    fn alert_context(&self, now: SystemTime) -> AlertContext {
        AlertContext {
            time: now,
            node: self.judge_config.node.clone(),
            mode: self.mode(),
            baseline_digest: self.baseline_digest(),
        }
    }
}

impl Stage for PolicyStage {
    /// Monitor while any scope is monitored, else learn.
    fn mode(&self) -> Mode {
        if self.scopes.any(Mode::Monitor) {
            Mode::Monitor
        } else {
            Mode::Learn
        }
    }

    fn baseline_digest(&self) -> Option<String> {
        self.judge.as_ref().map(|j| j.digest().to_owned())
    }

    fn watched(&self) -> Vec<PathBuf> {
        [&self.baseline_file, &self.config_file]
            .into_iter()
            .flatten()
            .map(|contents| contents.path.clone())
            .collect()
    }

    fn checkpoint_every(&self) -> Option<Duration> {
        Some(self.checkpoint_every)
    }

    fn ready(&mut self, ready: &Ready<'_>) -> anyhow::Result<()> {
        status::print(json!({
            "event": "ready",
            "command": ready.command,
            "health": ready.health.map(|a| a.to_string()),
            "otlp": ready.otlp,
            "programs": ready.startup.programs.len(),
            "baseline_digest": self.baseline_digest(),
            "baseline_edges": self.judge.as_ref().map(|j| j.matcher().baseline().rules.len()),
            "learned_edges_resumed": self.resumed,
        }));
        Ok(())
    }

    fn take(&mut self, item: &Resolved, now: SystemTime) -> anyhow::Result<Taken> {
        Ok(match item.flow() {
            Some((flow, count)) => self.learn_or_judge(flow, count, now),
            None => Taken::default(),
        })
    }

    fn tick(&mut self, now: SystemTime) -> anyhow::Result<Vec<Alert>> {
        Ok(match &mut self.judge {
            Some(judge) => judge.tick(now),
            None => Vec::new(),
        })
    }

    fn checkpoint(&mut self, now: SystemTime) {
        if let Err(err) = self.save_learned(now) {
            warn!("checkpoint failed: {err:#}");
        }
        if let Some(learner) = &self.learner {
            status::print(json!({
                "event": "learn_progress",
                "edges": learner.len(),
                "converged_for_secs": learner.converged_for(now).as_secs(),
            }));
        }
    }

    /// Re-reads the config and the baseline after a change on disk.
    fn reload(&mut self, now: SystemTime) -> Vec<Alert> {
        let mut alerts = Vec::new();
        if let Some(contents) = &mut self.config_file
            && contents.changed()
        {
            let path = contents.path.clone();
            alerts.push(self.reload_config(&path, now));
        }
        // After the config: it may have named another baseline.
        if let Some(contents) = &mut self.baseline_file
            && contents.changed()
        {
            let path = contents.path.clone();
            alerts.extend(self.reload_baseline(&path, now));
        }
        alerts
    }

    fn finish(&mut self, now: SystemTime) -> Vec<Alert> {
        match &mut self.judge {
            Some(judge) => judge.finish(now),
            None => Vec::new(),
        }
    }

    fn save(&mut self, now: SystemTime) -> anyhow::Result<()> {
        if let (Some(learner), Some(files)) = (&self.learner, &self.learn)
            && learner.is_empty()
        {
            // Still a valid file, but one that allows nothing: say so.
            warn!(
                out = %files.out.display(),
                "learned no edges: the baseline written allows nothing (no traffic seen, or all of it excluded)"
            );
        }
        self.save_learned(now)
    }

    fn summary(&mut self, summary: &Summary<'_>) -> anyhow::Result<()> {
        let now = summary.stopped;
        status::print(json!({
            "event": "summary",
            "command": summary.command,
            "duration_secs": summary.elapsed.as_secs_f64(),
            "judge": self.judge.as_ref().map(|j| j.stats().clone()),
            "unused_rules": self.judge.as_ref().map(Judge::unused_rules),
            "learned_edges": self.learner.as_ref().map(Learner::len),
            "converged_for_secs": self.learner.as_ref().map(|l| l.converged_for(now).as_secs()),
            "sink_errors": summary.sink_errors,
            "excluded_observations": self.excluded,
            "agent": summary.sensor.stats(),
            "export": summary.export,
        }));
        Ok(())
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
fn initial_baseline(path: &Path) -> anyhow::Result<Baseline> {
    let (baseline, warnings) = validate::load(path, SystemTime::now())
        .map_err(|rejected| anyhow::anyhow!("{rejected}"))?;
    for warning in warnings {
        warn!("{warning}");
    }
    Ok(baseline)
}
