//! What eastwatch tells the SOC. Produced by the judge (monitor mode) and
//! the agent itself (visibility gaps, health); consumed by every sink
//! (JSON lines, OTLP). One constructor per family: the judge builds
//! unauthorized-flow alerts; [`Alert::kernel_loss`],
//! [`Alert::spool_overflow`], [`Alert::file_applied`] and
//! [`Alert::file_rejected`] build the agent's own.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::SystemTime};

use serde::{Deserialize, Serialize};

use crate::{
    flow::{Direction, Family, Outcome, Process, Transport},
    identity::{ResolvedEnd, ResolvedFlow},
    timestamp::rfc3339,
};

/// The alert types, each with its own event name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A flow on an edge the baseline does not allow.
    UnauthorizedFlow,
    /// eastwatch could not see everything: kernel events lost, spool
    /// overflow, identity source down.
    VisibilityGap,
    /// The agent's own health (a baseline reload rejected, say).
    AgentHealth,
}

impl AlertKind {
    /// The event name alerts of this kind carry (OTLP `event_name`).
    pub fn event_name(&self) -> &'static str {
        match self {
            Self::UnauthorizedFlow => "eastwatch.alert.unauthorized_flow",
            Self::VisibilityGap => "eastwatch.alert.visibility_gap",
            Self::AgentHealth => "eastwatch.alert.agent_health",
        }
    }

    /// The kind's name in JSON and metrics, e.g. `unauthorized_flow`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::UnauthorizedFlow => "unauthorized_flow",
            Self::VisibilityGap => "visibility_gap",
            Self::AgentHealth => "agent_health",
        }
    }
}

/// Alerts the spool had to refuse since the last gap alert.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpoolOverflow {
    pub dropped: u64,
    /// Dropped alerts by kind (`AlertKind::as_str`).
    pub by_kind: BTreeMap<&'static str, u64>,
    pub first: Option<SystemTime>,
    pub last: Option<SystemTime>,
    /// The spool's bound.
    pub max_bytes: u64,
    /// Dropped alerts by reason: `spool_limit` (the spool reached its
    /// bound) or `disk` (the spool could not be written and the in-memory
    /// queue standing in for it was full).
    pub by_reason: BTreeMap<&'static str, u64>,
    /// The last disk error, when any drop was for the disk.
    pub disk_error: Option<String>,
}

/// Who raises an agent alert (health, visibility gaps) and when: the
/// node, the mode the agent is in, and the baseline in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertContext {
    pub time: SystemTime,
    pub node: Option<String>,
    pub mode: Mode,
    pub baseline_digest: Option<String>,
}

/// What the kernel lost since the last report, as an alert tells it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelLoss {
    /// Each loss counter's growth, by counter name.
    pub lost: BTreeMap<String, u64>,
    /// Every loss counter's total, and `flow_events_offered`'s.
    pub totals: BTreeMap<String, u64>,
}

/// Counters that grow without anything being lost: `flow_map_full` means
/// a flow could not be folded in the kernel's table, but its event still
/// went out (the agent keeps its own totals).
pub const NOT_LOST: [&str; 1] = ["flow_map_full"];

impl KernelLoss {
    /// Events really lost (every counter but [`NOT_LOST`]).
    pub fn events_lost(&self) -> u64 {
        self.lost
            .iter()
            .filter(|(name, _)| !NOT_LOST.contains(&name.as_str()))
            .map(|(_, grew)| grew)
            .sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// A MITRE ATT&CK technique, e.g. `T1021` Remote Services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Technique {
    pub id: String,
    pub name: String,
}

/// TA0008, the tactic every lateral-movement alert belongs to.
pub const LATERAL_MOVEMENT: &str = "TA0008";

/// The mode that raised an alert: `monitor` when flows are judged,
/// `learn` when they are only learned or observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Learn,
    Monitor,
}

impl Mode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Learn => "learn",
            Self::Monitor => "monitor",
        }
    }
}

/// What an alert says happened: the verdict on a flow, the kind of gap, or
/// what became of a watched file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertVerdict {
    /// No rule allows the flow.
    Unauthorized,
    /// Only expired rules would allow it.
    ExpiredRule,
    KernelEventsLost,
    SpoolOverflow,
    BaselineApplied,
    BaselineRejected,
    ConfigApplied,
    ConfigRejected,
}

impl AlertVerdict {
    /// The name in JSON and OTLP, e.g. `expired-rule`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::ExpiredRule => "expired-rule",
            Self::KernelEventsLost => "kernel-events-lost",
            Self::SpoolOverflow => "spool-overflow",
            Self::BaselineApplied => "baseline-applied",
            Self::BaselineRejected => "baseline-rejected",
            Self::ConfigApplied => "config-applied",
            Self::ConfigRejected => "config-rejected",
        }
    }
}

/// The files the agent watches and reloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchedFile {
    Baseline,
    Config,
}

impl WatchedFile {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Config => "config",
        }
    }
}

/// The network facts of the flow behind an alert. `source` is the client
/// (who connected or sent first), `destination` the server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowFacts {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub transport: Transport,
    pub family: Family,
    pub outcome: Outcome,
    /// Which end this node observed: egress = the source is local.
    pub observed: Direction,
    /// The local process, when known.
    pub process: Option<Process>,
    /// Occurrences folded into this alert (repeats within the window).
    pub count: u64,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
}

impl FlowFacts {
    /// The facts of `count` occurrences of `flow`, the last at `now`.
    pub fn of(flow: &ResolvedFlow, count: u64, now: SystemTime) -> Self {
        let (client, server) = (flow.client(), flow.server());
        Self {
            source: client.address,
            destination: server.address,
            transport: flow.flow.key.transport,
            family: Family::of(server.address.ip()),
            outcome: flow.flow.key.outcome,
            observed: flow.flow.key.direction,
            process: flow.flow.process.clone(),
            count,
            first_seen: flow.flow.first_seen.min(now),
            last_seen: now,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub kind: AlertKind,
    pub time: SystemTime,
    pub severity: Severity,
    /// One line a person can read.
    pub summary: String,
    pub mode: Mode,
    /// The node the agent runs on.
    pub node: Option<String>,
    pub flow: Option<FlowFacts>,
    pub source: Option<ResolvedEnd>,
    pub destination: Option<ResolvedEnd>,
    /// The verdict, e.g. `unauthorized`, `expired-rule`.
    pub verdict: Option<AlertVerdict>,
    /// The rule that matched, or that came nearest.
    pub rule: Option<String>,
    /// Digest of the baseline that judged the flow.
    pub baseline_digest: Option<String>,
    pub technique: Option<Technique>,
    /// Anything else worth keeping, by name (loss counters, say).
    pub details: BTreeMap<String, String>,
}

impl Alert {
    /// A visibility gap: kernel events lost since the last report, each
    /// counter's growth and its total in `details`.
    pub fn kernel_loss(context: &AlertContext, loss: &KernelLoss) -> Self {
        let lost = loss.events_lost();
        let consequence = match context.mode {
            Mode::Monitor => "some flows were not judged",
            Mode::Learn => "some flows were not learned or reported",
        };
        let mut details: BTreeMap<String, String> = loss
            .lost
            .iter()
            .map(|(name, grew)| (name.clone(), grew.to_string()))
            .collect();
        for (name, total) in &loss.totals {
            details.insert(format!("total.{name}"), total.to_string());
        }
        Self::agent(
            context,
            (AlertKind::VisibilityGap, Severity::Medium),
            AlertVerdict::KernelEventsLost,
            format!("the kernel lost {lost} event(s); {consequence}"),
            details,
        )
    }

    /// A visibility gap: alerts the full spool refused, how many and of
    /// which kinds.
    pub fn spool_overflow(context: &AlertContext, overflow: &SpoolOverflow) -> Self {
        let kinds: Vec<String> = overflow
            .by_kind
            .iter()
            .map(|(kind, n)| format!("{n} {kind}"))
            .collect();
        let mut details = BTreeMap::from([
            ("dropped".to_owned(), overflow.dropped.to_string()),
            ("spool_max_bytes".to_owned(), overflow.max_bytes.to_string()),
        ]);
        for (kind, n) in &overflow.by_kind {
            details.insert(format!("dropped.{kind}"), n.to_string());
        }
        for (reason, n) in &overflow.by_reason {
            details.insert(format!("dropped_for.{reason}"), n.to_string());
        }
        if let Some(error) = &overflow.disk_error {
            details.insert("disk_error".into(), error.clone());
        }
        let limit = overflow.by_reason.get("spool_limit").copied().unwrap_or(0);
        let disk = overflow.by_reason.get("disk").copied().unwrap_or(0);
        let mut reasons = Vec::new();
        if limit > 0 {
            reasons.push(format!(
                "{limit} because the OTLP spool was full ({} bytes) while the collector was unreachable or slow",
                overflow.max_bytes
            ));
        }
        if disk > 0 {
            reasons.push(format!(
                "{disk} because the spool's disk could not be written ({}) and the in-memory queue was full",
                overflow.disk_error.as_deref().unwrap_or("unknown error")
            ));
        }
        if let Some(first) = overflow.first {
            details.insert("first_dropped".into(), rfc3339(first));
        }
        if let Some(last) = overflow.last {
            details.insert("last_dropped".into(), rfc3339(last));
        }
        Self::agent(
            context,
            (AlertKind::VisibilityGap, Severity::High),
            AlertVerdict::SpoolOverflow,
            format!(
                "{} alert(s) dropped: {} ({})",
                overflow.dropped,
                reasons.join("; "),
                kinds.join(", ")
            ),
            details,
        )
    }

    /// Agent health: a changed config or baseline `path` is in force. A
    /// baseline names its `edges` and any lint `warnings`.
    pub fn file_applied(
        context: &AlertContext,
        file: WatchedFile,
        path: &Path,
        edges: usize,
        warnings: &[String],
    ) -> Self {
        let mut details = BTreeMap::from([("file".into(), path.display().to_string())]);
        let (verdict, summary) = match file {
            WatchedFile::Config => (
                AlertVerdict::ConfigApplied,
                format!("config {} reloaded", path.display()),
            ),
            WatchedFile::Baseline => {
                details.insert("edges".into(), edges.to_string());
                if !warnings.is_empty() {
                    details.insert("warnings".into(), warnings.join("\n"));
                }
                (
                    AlertVerdict::BaselineApplied,
                    format!("baseline {} applied ({edges} edges)", path.display()),
                )
            }
        };
        Self::agent(
            context,
            (AlertKind::AgentHealth, Severity::Info),
            verdict,
            summary,
            details,
        )
    }

    /// Agent health: a changed config or baseline `path` was rejected for
    /// `errors`; the last good one stays in force.
    pub fn file_rejected(
        context: &AlertContext,
        file: WatchedFile,
        path: &Path,
        errors: &str,
    ) -> Self {
        let (verdict, kept) = match file {
            WatchedFile::Config => (AlertVerdict::ConfigRejected, "the previous config"),
            WatchedFile::Baseline => (AlertVerdict::BaselineRejected, "the last good baseline"),
        };
        Self::agent(
            context,
            (AlertKind::AgentHealth, Severity::High),
            verdict,
            format!(
                "{} {} rejected; {kept} stays in force",
                file.as_str(),
                path.display()
            ),
            BTreeMap::from([
                ("file".into(), path.display().to_string()),
                ("errors".into(), errors.to_owned()),
            ]),
        )
    }

    /// An alert about the agent itself: no flow, no ends, no rule.
    fn agent(
        context: &AlertContext,
        (kind, severity): (AlertKind, Severity),
        verdict: AlertVerdict,
        summary: String,
        details: BTreeMap<String, String>,
    ) -> Self {
        Self {
            kind,
            time: context.time,
            severity,
            summary,
            mode: context.mode,
            node: context.node.clone(),
            flow: None,
            source: None,
            destination: None,
            verdict: Some(verdict),
            rule: None,
            baseline_digest: context.baseline_digest.clone(),
            technique: None,
            details,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names in JSON (serde) and in OTLP and metrics (`as_str`) agree.
    #[test]
    fn verdicts_and_modes_have_one_name_each() {
        use AlertVerdict::*;
        for verdict in [
            Unauthorized,
            ExpiredRule,
            KernelEventsLost,
            SpoolOverflow,
            BaselineApplied,
            BaselineRejected,
            ConfigApplied,
            ConfigRejected,
        ] {
            assert_eq!(
                serde_json::to_value(verdict).ok(),
                Some(serde_json::Value::from(verdict.as_str()))
            );
        }
        for mode in [Mode::Learn, Mode::Monitor] {
            assert_eq!(
                serde_json::to_value(mode).ok(),
                Some(serde_json::Value::from(mode.as_str()))
            );
        }
    }

    #[test]
    fn a_rejected_file_names_what_stays_in_force() {
        let context = AlertContext {
            time: SystemTime::UNIX_EPOCH,
            node: Some("n1".into()),
            mode: Mode::Monitor,
            baseline_digest: Some("sha256:ab".into()),
        };
        let path = Path::new("/etc/eastwatch/baseline.yaml");
        let baseline = Alert::file_rejected(&context, WatchedFile::Baseline, path, "x:1:1: bad");
        assert_eq!(
            baseline.summary,
            "baseline /etc/eastwatch/baseline.yaml rejected; the last good baseline stays in force"
        );
        assert_eq!(baseline.verdict, Some(AlertVerdict::BaselineRejected));
        assert_eq!(baseline.severity, Severity::High);
        assert_eq!(baseline.details["errors"], "x:1:1: bad");
        let config = Alert::file_rejected(&context, WatchedFile::Config, path, "e");
        assert_eq!(
            config.summary,
            "config /etc/eastwatch/baseline.yaml rejected; the previous config stays in force"
        );
        assert_eq!(config.verdict, Some(AlertVerdict::ConfigRejected));
        assert_eq!(config.baseline_digest.as_deref(), Some("sha256:ab"));
    }

    /// `flow_map_full` grows while the event still goes out: it is not a
    /// loss. The consequence named depends on the mode.
    #[test]
    fn a_kernel_loss_counts_only_real_losses_and_speaks_for_its_mode() {
        let loss = KernelLoss {
            lost: [
                ("flow_map_full".to_owned(), 3),
                ("flow_ring_buffer_full".to_owned(), 2),
            ]
            .into(),
            totals: BTreeMap::new(),
        };
        let context = |mode| AlertContext {
            time: SystemTime::UNIX_EPOCH,
            node: None,
            mode,
            baseline_digest: None,
        };
        let learn = Alert::kernel_loss(&context(Mode::Learn), &loss);
        assert_eq!(
            learn.summary,
            "the kernel lost 2 event(s); some flows were not learned or reported"
        );
        assert_eq!(learn.mode, Mode::Learn);
        assert_eq!(learn.details["flow_map_full"], "3", "still shown");
        let monitor = Alert::kernel_loss(&context(Mode::Monitor), &loss);
        assert!(monitor.summary.ends_with("some flows were not judged"));
        let folding_only = KernelLoss {
            lost: [("flow_map_full".to_owned(), 3)].into(),
            totals: BTreeMap::new(),
        };
        assert_eq!(folding_only.events_lost(), 0, "no alert for it");
    }
}
