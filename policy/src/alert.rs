//! What eastwatch tells the SOC. Produced by the judge (monitor mode) and
//! the agent itself (visibility gaps, health); consumed by every sink
//! (JSON lines, OTLP).

use std::{collections::BTreeMap, net::SocketAddr, time::SystemTime};

use serde::{Deserialize, Serialize};

use crate::{
    flow::{Direction, Family, Outcome, Process, Transport},
    identity::ResolvedEnd,
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

/// What the kernel lost since the last report, as an alert tells it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelLoss {
    /// Each loss counter's growth, by counter name.
    pub lost: BTreeMap<String, u64>,
    /// Every loss counter's total, and `flow_events_offered`'s.
    pub totals: BTreeMap<String, u64>,
}

/// The visibility-gap alert for kernel events lost since the last report:
/// each counter's growth and its total in `details`.
pub fn kernel_loss_alert(
    loss: &KernelLoss,
    node: Option<String>,
    baseline_digest: Option<String>,
    mode: Mode,
    now: SystemTime,
) -> Alert {
    let lost: u64 = loss.lost.values().sum();
    let mut details: BTreeMap<String, String> = loss
        .lost
        .iter()
        .map(|(name, grew)| (name.clone(), grew.to_string()))
        .collect();
    for (name, total) in &loss.totals {
        details.insert(format!("total.{name}"), total.to_string());
    }
    Alert {
        kind: AlertKind::VisibilityGap,
        time: now,
        severity: Severity::Medium,
        summary: format!("the kernel lost {lost} flow event(s); some flows were not judged"),
        mode,
        node,
        flow: None,
        source: None,
        destination: None,
        verdict: Some("kernel-events-lost".into()),
        rule: None,
        baseline_digest,
        technique: None,
        details,
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

/// A MITRE ATT&CK technique, e.g. `T1021` Remote Services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Technique {
    pub id: String,
    pub name: String,
}

/// TA0008, the tactic every lateral-movement alert belongs to.
pub const LATERAL_MOVEMENT: &str = "TA0008";

/// Which mode judged the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Learn,
    Monitor,
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
    pub verdict: Option<String>,
    /// The rule that matched, or that came nearest.
    pub rule: Option<String>,
    /// Digest of the baseline that judged the flow.
    pub baseline_digest: Option<String>,
    pub technique: Option<Technique>,
    /// Anything else worth keeping, by name (loss counters, say).
    pub details: BTreeMap<String, String>,
}
