//! Monitor mode: every flow is judged against the compiled baseline; an
//! edge outside it raises one alert per window, repeats go into one report
//! when the window closes, and a source that fans out to many new
//! destinations or ports becomes one scan alert (T1046) instead of many.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::{
    alert::{Alert, AlertKind, AlertVerdict, FlowFacts, Mode, Severity, Technique},
    baseline::matcher::{Matcher, ObservedEdge, RuleMatch, Verdict},
    flow::{Direction, Outcome, Transport},
    identity::{Identity, ResolvedFlow},
};

#[derive(Debug, Clone)]
pub struct JudgeConfig {
    /// An edge alerts once per window; so does a scanning source.
    pub window: Duration,
    /// New unauthorized destinations or ports from one source within a
    /// window that make it a scan.
    pub fan_out_threshold: usize,
    pub node: Option<String>,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(600),
            fan_out_threshold: 10,
            node: None,
        }
    }
}

/// Occurrences after an alert, for the report when its window closes.
#[derive(Default)]
struct Repeats {
    count: u64,
    first: Option<SystemTime>,
    last: Option<SystemTime>,
}

impl Repeats {
    fn add(&mut self, count: u64, now: SystemTime) {
        self.count += count;
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// The repeat report of `alert`, when there were repeats.
    fn report(&self, alert: &Alert, now: SystemTime) -> Option<Alert> {
        let (first, last) = (self.first?, self.last?);
        let mut report = alert.clone();
        report.time = now;
        report.summary = format!("{} repeated {} times", alert.summary, self.count);
        if let Some(flow) = &mut report.flow {
            flow.count = self.count;
            flow.first_seen = first;
            flow.last_seen = last;
        }
        report.details.insert("report".into(), "repeat".into());
        Some(report)
    }
}

struct EdgeWindow {
    opened: SystemTime,
    /// Occurrences after the alert.
    repeats: Repeats,
    /// Occurrences per observed direction (egress, ingress), the first
    /// one included. A connection between two local workloads is seen
    /// once each way: connections are the larger of the two, never the sum.
    observed: [u64; 2],
    /// The alert that opened the window; None when the edge was folded
    /// into its source's scan alert.
    alert: Option<Alert>,
}

impl EdgeWindow {
    fn connections(&self) -> u64 {
        self.observed[0].max(self.observed[1])
    }
}

fn direction_index(flow: &ResolvedFlow) -> usize {
    match flow.flow.key.direction {
        Direction::Egress => 0,
        Direction::Ingress => 1,
    }
}

struct SourceWindow {
    opened: SystemTime,
    targets: BTreeSet<(Identity, u16, Transport)>,
    scan: Option<ScanState>,
}

struct ScanState {
    alert: Alert,
    /// Occurrences on scanned edges after the scan alert.
    repeats: Repeats,
}

/// What judging one flow gave: the baseline's verdict, and the alerts it
/// raised (none for an allowed flow, a repeat, or a window already open).
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub alerts: Vec<Alert>,
}

/// What the judge has done so far.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct JudgeStats {
    pub flows_judged: u64,
    pub allowed: u64,
    pub unauthorized: u64,
    pub expired_rule: u64,
    pub alerts: u64,
    pub repeat_reports: u64,
    pub scan_alerts: u64,
    /// Unauthorized edges not alerted because the window table was full
    /// (a flood of distinct edges); each is counted here and logged.
    pub over_capacity: u64,
}

/// Windows kept at most; past this, new unauthorized edges are counted in
/// [`JudgeStats::over_capacity`] instead of alerted one by one.
pub const MAX_WINDOWS: usize = 262_144;

pub struct Judge {
    matcher: Arc<Matcher>,
    config: JudgeConfig,
    edges: HashMap<ObservedEdge, EdgeWindow>,
    sources: HashMap<Identity, SourceWindow>,
    stats: JudgeStats,
    /// Flows each rule allowed since the baseline was loaded.
    hits: Vec<u64>,
}

impl Judge {
    pub fn new(matcher: Arc<Matcher>, config: JudgeConfig) -> Self {
        Self {
            config,
            edges: HashMap::new(),
            sources: HashMap::new(),
            stats: JudgeStats::default(),
            hits: vec![0; matcher_rules(&matcher)],
            matcher,
        }
    }

    /// Rules of the current baseline that allowed nothing since it was
    /// loaded (least privilege: candidates to remove).
    pub fn unused_rules(&self) -> Vec<String> {
        let rules = &self.matcher.baseline().rules;
        self.hits
            .iter()
            .enumerate()
            .filter(|(_, hits)| **hits == 0)
            .map(|(i, _)| rules[i].label())
            .collect()
    }

    pub fn matcher(&self) -> &Arc<Matcher> {
        &self.matcher
    }

    pub fn stats(&self) -> &JudgeStats {
        &self.stats
    }

    pub fn digest(&self) -> &str {
        &self.matcher.baseline().digest
    }

    /// Swaps in a new baseline. Windows start afresh: an edge the new
    /// baseline still refuses alerts again, against the new digest.
    /// Pending repeat reports are returned first.
    pub fn replace(&mut self, matcher: Arc<Matcher>, now: SystemTime) -> Vec<Alert> {
        let pending = self.finish(now);
        self.hits = vec![0; matcher_rules(&matcher)];
        self.matcher = matcher;
        pending
    }

    pub fn set_config(&mut self, config: JudgeConfig) {
        self.config = config;
    }

    /// Judges `count` occurrences of a flow.
    pub fn judge(&mut self, flow: &ResolvedFlow, count: u64, now: SystemTime) -> Judgement {
        self.stats.flows_judged += 1;
        let edge = ObservedEdge::of(flow);
        let found = self.matcher.judge(&edge, now);
        let alerts = match found {
            RuleMatch::Allowed(index) => {
                self.stats.allowed += 1;
                if let Some(hits) = self.hits.get_mut(index) {
                    *hits += count;
                }
                Vec::new()
            }
            RuleMatch::Expired(_) => {
                self.stats.expired_rule += 1;
                self.refused(flow, edge, found, count, now)
            }
            RuleMatch::Unauthorized => {
                self.stats.unauthorized += 1;
                self.refused(flow, edge, found, count, now)
            }
        };
        Judgement {
            verdict: found.verdict(),
            alerts,
        }
    }

    /// An edge the baseline refuses: the first time in its window it
    /// alerts (or joins its source's scan), later it is a repeat.
    fn refused(
        &mut self,
        flow: &ResolvedFlow,
        edge: ObservedEdge,
        found: RuleMatch,
        count: u64,
        now: SystemTime,
    ) -> Vec<Alert> {
        let mut alerts = self.close_overdue(&edge, now);
        if self.edges.contains_key(&edge) {
            self.repeat(flow, &edge, count, now);
        } else if self.edges.len() >= MAX_WINDOWS {
            self.stats.over_capacity += 1;
            // Logged at 1, 2, 4, 8, ...: the count is exact, the log is not a flood.
            if self.stats.over_capacity.is_power_of_two() {
                let over_capacity = self.stats.over_capacity;
                tracing::warn!(%edge, over_capacity, "alert window table full; edges counted, not alerted");
            }
        } else {
            alerts.extend(self.open_window(flow, edge, found, count, now));
        }
        alerts
    }

    /// Windows close on the tick; one that ran out before it is closed
    /// here, so a late repeat starts the next window.
    fn close_overdue(&mut self, edge: &ObservedEdge, now: SystemTime) -> Vec<Alert> {
        let window = self.config.window;
        let over = |opened: SystemTime| now.duration_since(opened).unwrap_or_default() >= window;
        let mut alerts = Vec::new();
        if self.edges.get(edge).is_some_and(|w| over(w.opened)) {
            alerts.extend(self.close_one(edge, now));
        }
        if self.sources.get(&edge.from).is_some_and(|s| over(s.opened)) {
            alerts.extend(self.close_source(&edge.from, now));
        }
        alerts
    }

    /// Seen this window: a repeat, reported when the window closes (in the
    /// scan's report when the edge was folded into one).
    fn repeat(&mut self, flow: &ResolvedFlow, edge: &ObservedEdge, count: u64, now: SystemTime) {
        let Some(window) = self.edges.get_mut(edge) else {
            return;
        };
        let before = window.connections();
        window.observed[direction_index(flow)] += count;
        let repeats = window.connections() - before;
        if repeats == 0 {
            // The other end of a connection already counted.
            return;
        }
        if window.alert.is_some() {
            window.repeats.add(repeats, now);
        } else if let Some(scan) = self
            .sources
            .get_mut(&edge.from)
            .and_then(|s| s.scan.as_mut())
        {
            scan.repeats.add(repeats, now);
        }
    }

    /// A new window for `edge`: its alert, unless the edge is folded into
    /// its source's scan (whose alert is raised when the fan-out reaches
    /// the threshold).
    fn open_window(
        &mut self,
        flow: &ResolvedFlow,
        edge: ObservedEdge,
        found: RuleMatch,
        count: u64,
        now: SystemTime,
    ) -> Vec<Alert> {
        let alert = self.alert(flow, &edge, found, count, now);
        let (scan, folded) = self.fan_out(&edge, &alert, count, now);
        let mut alerts: Vec<Alert> = scan.into_iter().collect();
        let mut observed = [0; 2];
        observed[direction_index(flow)] = count;
        let window = EdgeWindow {
            opened: now,
            repeats: Repeats::default(),
            observed,
            alert: (!folded).then(|| alert.clone()),
        };
        if !folded {
            self.stats.alerts += 1;
            alerts.push(alert);
        }
        self.edges.insert(edge, window);
        alerts
    }

    /// Files a new edge under its source. Returns the scan alert when this
    /// edge makes the fan-out a scan, and whether the edge is folded into
    /// the source's scan.
    fn fan_out(
        &mut self,
        edge: &ObservedEdge,
        alert: &Alert,
        count: u64,
        now: SystemTime,
    ) -> (Option<Alert>, bool) {
        let source = self
            .sources
            .entry(edge.from.clone())
            .or_insert_with(|| SourceWindow {
                opened: now,
                targets: BTreeSet::new(),
                scan: None,
            });
        source
            .targets
            .insert((edge.to.clone(), edge.port, edge.transport));
        let threshold = self.config.fan_out_threshold.max(2);
        match &mut source.scan {
            Some(scan) => {
                scan.repeats.add(count, now);
                scan.alert
                    .details
                    .insert("targets_total".into(), source.targets.len().to_string());
                (None, true)
            }
            None if source.targets.len() >= threshold => {
                let scan = scan_alert(alert, &edge.from, &source.targets, &self.config);
                self.stats.scan_alerts += 1;
                self.stats.alerts += 1;
                source.scan = Some(ScanState {
                    alert: scan.clone(),
                    repeats: Repeats::default(),
                });
                (Some(scan), true)
            }
            None => (None, false),
        }
    }

    /// Closes windows that have run their course; returns the repeat
    /// reports.
    pub fn tick(&mut self, now: SystemTime) -> Vec<Alert> {
        self.close_expired(now)
    }

    /// Closes every window (at shutdown or before a baseline swap).
    pub fn finish(&mut self, now: SystemTime) -> Vec<Alert> {
        self.close(now, true)
    }

    fn close_expired(&mut self, now: SystemTime) -> Vec<Alert> {
        self.close(now, false)
    }

    fn close_one(&mut self, edge: &ObservedEdge, now: SystemTime) -> Vec<Alert> {
        let Some(w) = self.edges.remove(edge) else {
            return Vec::new();
        };
        let report = edge_report(&w, now);
        self.count_reports(report.into_iter().collect())
    }

    fn close_source(&mut self, source: &Identity, now: SystemTime) -> Vec<Alert> {
        let Some(s) = self.sources.remove(source) else {
            return Vec::new();
        };
        let report = source_report(&s, now);
        self.drop_folded(|from| from == source);
        self.count_reports(report.into_iter().collect())
    }

    /// Edges folded into a closed scan belong to it: they go with it, so
    /// their next occurrence starts afresh instead of counting nowhere.
    fn drop_folded(&mut self, closed: impl Fn(&Identity) -> bool) {
        self.edges
            .retain(|edge, w| w.alert.is_some() || !closed(&edge.from));
    }

    fn count_reports(&mut self, reports: Vec<Alert>) -> Vec<Alert> {
        self.stats.repeat_reports += reports.len() as u64;
        self.stats.alerts += reports.len() as u64;
        reports
    }

    fn close(&mut self, now: SystemTime, all: bool) -> Vec<Alert> {
        let window = self.config.window;
        let over =
            |opened: SystemTime| all || now.duration_since(opened).unwrap_or_default() >= window;
        let mut reports = Vec::new();
        self.edges.retain(|_, w| {
            if !over(w.opened) {
                return true;
            }
            reports.extend(edge_report(w, now));
            false
        });
        let mut closed = std::collections::HashSet::new();
        self.sources.retain(|source, s| {
            if !over(s.opened) {
                return true;
            }
            reports.extend(source_report(s, now));
            closed.insert(source.clone());
            false
        });
        self.drop_folded(|from| closed.contains(from));
        reports.sort_by_key(|a| a.flow.as_ref().map(|f| f.first_seen));
        self.count_reports(reports)
    }

    /// The first alert of an edge's window.
    fn alert(
        &self,
        flow: &ResolvedFlow,
        edge: &ObservedEdge,
        found: RuleMatch,
        count: u64,
        now: SystemTime,
    ) -> Alert {
        let (client, server) = (flow.client(), flow.server());
        let outcome = flow.flow.key.outcome;
        let (technique, mut severity) = technique_for(edge, server.address.ip());
        let verdict = match found {
            RuleMatch::Unauthorized => AlertVerdict::Unauthorized,
            _ => AlertVerdict::ExpiredRule,
        };
        if verdict != AlertVerdict::Unauthorized
            || (outcome == Outcome::Attempted && severity == Severity::Medium)
        {
            severity = Severity::Low;
        }
        let baseline = self.matcher.baseline();
        let rule = match found {
            RuleMatch::Expired(index) | RuleMatch::Allowed(index) => {
                Some(baseline.rules[index].label())
            }
            RuleMatch::Unauthorized => self.matcher.nearest_rule(edge, now),
        };
        let attempted = if outcome == Outcome::Attempted {
            " (attempted)"
        } else {
            ""
        };
        Alert {
            kind: AlertKind::UnauthorizedFlow,
            time: now,
            severity,
            summary: format!(
                "{} {} flow {} -> {} port {}{attempted}",
                verdict.as_str(),
                edge.transport,
                edge.from,
                edge.to,
                edge.port,
            ),
            mode: Mode::Monitor,
            node: self.config.node.clone(),
            flow: Some(FlowFacts::of(flow, count, now)),
            source: Some(client.end.clone()),
            destination: Some(server.end.clone()),
            verdict: Some(verdict),
            rule,
            baseline_digest: Some(baseline.digest.clone()),
            technique: Some(technique),
            details: BTreeMap::from([
                ("edge".to_owned(), edge.to_string()),
                ("report".to_owned(), "first".to_owned()),
                (
                    "window_secs".to_owned(),
                    self.config.window.as_secs().to_string(),
                ),
            ]),
        }
    }
}

fn matcher_rules(matcher: &Matcher) -> usize {
    matcher.baseline().rules.len()
}

/// The repeat report of an edge's window, when it had repeats.
fn edge_report(w: &EdgeWindow, now: SystemTime) -> Option<Alert> {
    w.repeats.report(w.alert.as_ref()?, now)
}

/// The repeat report of a scan, when more was folded into it.
fn source_report(s: &SourceWindow, now: SystemTime) -> Option<Alert> {
    let scan = s.scan.as_ref()?;
    scan.repeats.report(&scan.alert, now)
}

fn scan_alert(
    trigger: &Alert,
    from: &Identity,
    targets: &BTreeSet<(Identity, u16, Transport)>,
    config: &JudgeConfig,
) -> Alert {
    let mut alert = trigger.clone();
    alert.severity = Severity::High;
    alert.technique = Some(technique("T1046", "Network Service Discovery"));
    let destinations: BTreeSet<&Identity> = targets.iter().map(|(to, _, _)| to).collect();
    let ports: BTreeSet<String> = targets
        .iter()
        .map(|(_, port, transport)| format!("{port}/{transport}"))
        .collect();
    alert.summary = format!(
        "{from} fanned out to {} new destinations/ports within {}s ({} destinations, {} ports)",
        targets.len(),
        config.window.as_secs(),
        destinations.len(),
        ports.len()
    );
    let sample: Vec<String> = targets
        .iter()
        .take(32)
        .map(|(to, port, transport)| format!("{to} {port}/{transport}"))
        .collect();
    alert.details.insert("report".into(), "scan".into());
    alert.details.insert("targets".into(), sample.join(", "));
    alert
        .details
        .insert("targets_total".into(), targets.len().to_string());
    alert
}

fn technique(id: &str, name: &str) -> Technique {
    Technique {
        id: id.to_owned(),
        name: name.to_owned(),
    }
}

const METADATA_V4: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 169, 254));
const METADATA_V6: IpAddr =
    IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254));

/// The ATT&CK technique (and severity) an unauthorized edge suggests, by
/// where it goes. docs/baseline.md lists the rules.
pub fn technique_for(edge: &ObservedEdge, destination: IpAddr) -> (Technique, Severity) {
    let destination = destination.to_canonical();
    let tcp = edge.transport == Transport::Tcp;
    if destination == METADATA_V4 || destination == METADATA_V6 {
        return (
            technique(
                "T1552.005",
                "Unsecured Credentials: Cloud Instance Metadata API",
            ),
            Severity::High,
        );
    }
    let remote_service = |id: &str, name: &str| (technique(id, name), Severity::High);
    match (tcp, edge.port) {
        (true, 10250 | 10255 | 6443) => {
            remote_service("T1552.007", "Unsecured Credentials: Container API")
        }
        (true, 22) => remote_service("T1021.004", "Remote Services: SSH"),
        (true, 3389) | (false, 3389) => {
            remote_service("T1021.001", "Remote Services: Remote Desktop Protocol")
        }
        (true, 5985 | 5986) => {
            remote_service("T1021.006", "Remote Services: Windows Remote Management")
        }
        (true, 5900..=5903) => remote_service("T1021.005", "Remote Services: VNC"),
        (true, 445) => remote_service("T1021.002", "Remote Services: SMB/Windows Admin Shares"),
        _ => (
            technique("T1210", "Exploitation of Remote Services"),
            Severity::Medium,
        ),
    }
}
