//! Flows observed elsewhere, read back for `baseline export --check` and
//! `baseline graph`: a learn evidence file (one JSON document with
//! `edges`) or an alerts file (JSON lines, as `--alerts-file` appends
//! them). Which one a file is, its content says.

use std::{collections::BTreeMap, net::SocketAddr, path::Path};

use serde::Deserialize;
use serde_json::Value;

use super::parse_identity;
use crate::{
    baseline::{diag::Diagnostic, format::Pos, matcher::ObservedEdge, validate::PortRange},
    flow::Transport,
    identity::{Identity, ServiceRef},
    learn::Evidence,
};

/// The event name of the alerts that carry a flow the baseline refused.
const UNAUTHORIZED: &str = "eastwatch.alert.unauthorized_flow";

/// One observed path: client, server, the port the client dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedFlow {
    pub from: Identity,
    pub to: Identity,
    /// The service port: what the client dialled (a Service's port when it
    /// went through one), or the server's own port seen at the server.
    pub port: u16,
    pub transport: Transport,
    /// The Service whose address was dialled, when an alert names one.
    pub service: Option<ServiceRef>,
    /// Where it was read, e.g. `alerts.jsonl:3` or `evidence.json edges[2]`.
    pub origin: String,
    /// Occurrences behind it (connections, datagrams).
    pub count: u64,
    /// From an alert: a path the baseline refused when it was seen.
    pub alerted: bool,
}

impl ObservedFlow {
    pub fn edge(&self) -> ObservedEdge {
        ObservedEdge {
            from: self.from.clone(),
            to: self.to.clone(),
            port: self.port,
            transport: self.transport,
        }
    }

    /// `workload:a -> workload:b 5432/tcp`.
    pub fn describe(&self) -> String {
        let via = self
            .service
            .as_ref()
            .map(|s| format!(" via Service {}/{}", s.namespace, s.name))
            .unwrap_or_default();
        format!(
            "{} -> {} {}/{}{via}",
            self.from, self.to, self.port, self.transport
        )
    }
}

/// What a file held.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub flows: Vec<ObservedFlow>,
    /// Alert lines that carry no flow (visibility gaps, health).
    pub other_alerts: usize,
    /// Scan alerts that list only a sample of their targets.
    pub truncated_scans: Vec<String>,
    /// True for an evidence file, false for alerts.
    pub evidence: bool,
}

/// Reads an evidence or alerts file.
pub fn read(path: &Path) -> Result<Observed, Vec<Diagnostic>> {
    let (text, file) = crate::baseline::parse::read_text(path)?;
    from_str(&text, &file)
}

/// Parses `text` (named `file` in messages).
pub fn from_str(text: &str, file: &str) -> Result<Observed, Vec<Diagnostic>> {
    // One JSON document with `edges` is evidence; anything else is read as
    // JSON lines (an alerts file of one line is one document too).
    if let Ok(Value::Object(doc)) = serde_json::from_str::<Value>(text)
        && doc.contains_key("edges")
    {
        let evidence: Evidence = serde_json::from_value(Value::Object(doc)).map_err(|err| {
            vec![Diagnostic::error(
                file,
                None,
                format!("not evidence: {err}"),
            )]
        })?;
        return Ok(from_evidence(&evidence, file));
    }
    if text.trim_start().starts_with('{') && !text.contains('\n') {
        // A single document that is no evidence and no alert line either.
        if let Err(err) = serde_json::from_str::<AlertLine>(text) {
            return Err(vec![Diagnostic::error(
                file,
                Some(Pos {
                    line: 1,
                    column: err.column() as u64,
                }),
                format!("neither learn evidence (no `edges`) nor an alert: {err}"),
            )]);
        }
    }
    from_alerts(text, file)
}

/// The evidence's edges, in its order.
pub fn from_evidence(evidence: &Evidence, file: &str) -> Observed {
    let flows = evidence
        .edges
        .iter()
        .enumerate()
        .map(|(i, e)| ObservedFlow {
            from: e.from.clone(),
            to: e.to.clone(),
            port: e.port,
            transport: e.transport,
            service: None,
            origin: format!("{file} edges[{i}]"),
            count: e.count,
            alerted: false,
        })
        .collect();
    Observed {
        flows,
        evidence: true,
        ..Observed::default()
    }
}

#[derive(Deserialize)]
struct AlertLine {
    event: String,
    #[serde(default)]
    source: Option<AlertEnd>,
    #[serde(default)]
    destination: Option<AlertEnd>,
    #[serde(default)]
    flow: Option<AlertFlow>,
    #[serde(default)]
    details: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct AlertEnd {
    identity: Identity,
    #[serde(default)]
    service: Option<ServiceRef>,
}

#[derive(Deserialize)]
struct AlertFlow {
    destination: SocketAddr,
    transport: Transport,
    #[serde(default)]
    count: u64,
}

/// Every unauthorized flow of an alerts file, a scan's listed targets
/// included; repeats of one path are one flow with their counts added.
pub fn from_alerts(text: &str, file: &str) -> Result<Observed, Vec<Diagnostic>> {
    let mut observed = Observed::default();
    let mut errors = Vec::new();
    let mut seen: BTreeMap<(String, String, u16, Transport), usize> = BTreeMap::new();
    // `fold`: add its count to a flow seen before (a scan's listed
    // targets and its repeats count once: the repeats are the scan's).
    let mut add = |observed: &mut Observed, flow: ObservedFlow, fold: bool| {
        let key = (
            flow.from.canonical(),
            flow.to.canonical(),
            flow.port,
            flow.transport,
        );
        match seen.get(&key) {
            Some(&i) if fold => observed.flows[i].count += flow.count,
            Some(_) => {}
            None => {
                seen.insert(key, observed.flows.len());
                observed.flows.push(flow);
            }
        }
    };
    for (index, line) in text.lines().enumerate() {
        let number = index as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let alert: AlertLine = match serde_json::from_str(line) {
            Ok(alert) => alert,
            Err(err) => {
                errors.push(Diagnostic::error(
                    file,
                    Some(Pos {
                        line: number,
                        column: err.column() as u64,
                    }),
                    format!("not an alert: {err}"),
                ));
                continue;
            }
        };
        if alert.event != UNAUTHORIZED {
            observed.other_alerts += 1;
            continue;
        }
        let (Some(source), Some(destination), Some(flow)) =
            (alert.source, alert.destination, alert.flow)
        else {
            errors.push(Diagnostic::error(
                file,
                Some(Pos {
                    line: number,
                    column: 1,
                }),
                "an unauthorized_flow alert without source, destination and flow",
            ));
            continue;
        };
        let origin = format!("{file}:{number}");
        // A scan alert (and its repeat report) lists the targets it folded.
        let targets = alert.details.get("targets").map(String::as_str);
        let scan = targets.is_some();
        for target in targets
            .unwrap_or_default()
            .split(", ")
            .filter(|t| !t.is_empty())
        {
            match scan_target(target) {
                Ok((to, port, transport)) => add(
                    &mut observed,
                    ObservedFlow {
                        from: source.identity.clone(),
                        to,
                        port,
                        transport,
                        service: None,
                        origin: format!("{origin} (scan target)"),
                        count: 1,
                        alerted: true,
                    },
                    false,
                ),
                Err(why) => errors.push(Diagnostic::error(
                    file,
                    Some(Pos {
                        line: number,
                        column: 1,
                    }),
                    format!("scan target {target:?}: {why}"),
                )),
            }
        }
        if scan {
            let listed = targets.map_or(0, |t| t.split(", ").filter(|s| !s.is_empty()).count());
            let total: Option<usize> = alert
                .details
                .get("targets_total")
                .and_then(|t| t.parse().ok());
            if let Some(total) = total.filter(|total| *total > listed) {
                observed.truncated_scans.push(format!(
                    "{origin}: the scan alert lists {listed} of its {total} targets"
                ));
            }
        }
        add(
            &mut observed,
            ObservedFlow {
                from: source.identity,
                to: destination.identity,
                port: flow.destination.port(),
                transport: flow.transport,
                service: destination.service,
                origin,
                count: if scan { 1 } else { flow.count.max(1) },
                alerted: true,
            },
            !scan,
        );
    }
    if errors.is_empty() {
        Ok(observed)
    } else {
        Err(errors)
    }
}

/// `workload:shop/deployment/db 23/tcp`.
fn scan_target(text: &str) -> Result<(Identity, u16, Transport), String> {
    let (identity, port) = text
        .rsplit_once(' ')
        .ok_or("expected IDENTITY PORT/PROTOCOL")?;
    let range = PortRange::parse(port)?;
    if range.first != range.last {
        return Err(format!("{port} is not one port"));
    }
    Ok((parse_identity(identity)?, range.first, range.transport))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALERT: &str = r#"{"event":"eastwatch.alert.unauthorized_flow","source":{"identity":{"type":"workload","cluster":"demo","namespace":"shop","kind":"Deployment","name":"frontend","serviceAccount":"frontend","labels":{"app":"frontend"}}},"destination":{"identity":{"type":"workload","cluster":"demo","namespace":"shop","kind":"Deployment","name":"db","serviceAccount":"db","labels":{"app":"db"}}},"flow":{"source":"10.78.0.1:40000","destination":"10.78.0.3:5432","transport":"tcp","count":1},"details":{"report":"first"}}"#;

    #[test]
    fn alerts_become_flows_and_repeats_fold() {
        let repeat = ALERT
            .replace(r#""report":"first""#, r#""report":"repeat""#)
            .replace(r#""count":1"#, r#""count":4"#);
        let gap = r#"{"event":"eastwatch.alert.visibility_gap","details":{}}"#;
        let text = format!("{ALERT}\n{gap}\n\n{repeat}\n");
        let observed = from_str(&text, "alerts.jsonl").expect("parses");
        assert!(!observed.evidence);
        assert_eq!(observed.other_alerts, 1);
        assert_eq!(observed.flows.len(), 1);
        let flow = &observed.flows[0];
        assert_eq!(
            flow.describe(),
            "workload:shop/deployment/frontend -> workload:shop/deployment/db 5432/tcp"
        );
        assert_eq!(flow.count, 5);
        assert_eq!(flow.origin, "alerts.jsonl:1");
        assert!(flow.alerted);
        assert_eq!(
            flow.to.workload().map(|w| w.labels.len()),
            Some(1),
            "labels come along"
        );
    }

    #[test]
    fn scan_alerts_contribute_their_targets() {
        let scan = ALERT.replace(
            r#""report":"first""#,
            r#""report":"scan","targets":"workload:shop/deployment/db 22/tcp, workload:shop/deployment/db 23/tcp","targets_total":"40""#,
        );
        let observed = from_str(&scan, "a.jsonl").expect("parses");
        let ports: Vec<u16> = observed.flows.iter().map(|f| f.port).collect();
        assert_eq!(ports, [22, 23, 5432]);
        assert_eq!(
            observed.truncated_scans,
            ["a.jsonl:1: the scan alert lists 2 of its 40 targets"]
        );
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let text = format!("{ALERT}\nnot json\n");
        let errors = from_str(&text, "a.jsonl").expect_err("rejected");
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().starts_with("a.jsonl:2:"),
            "{}",
            errors[0]
        );
        let wrong = from_str(r#"{"kind": "Baseline"}"#, "b.json").expect_err("rejected");
        assert!(
            wrong[0].to_string().contains("neither learn evidence"),
            "{}",
            wrong[0]
        );
    }

    #[test]
    fn evidence_files_are_recognised() {
        let text = r#"{"started":"2026-01-01T00:00:00Z","last_new_edge":null,"converged_for_secs":5,"unattributed_flows":0,"edges":[
            {"from":{"type":"node","name":"n1"},"to":{"type":"external","address":"10.0.0.9"},"port":53,"transport":"udp",
             "first_seen":"2026-01-01T00:00:00Z","last_seen":"2026-01-01T00:00:01Z","count":3,"egress_observations":1,"ingress_observations":0,
             "from_pods":[],"to_pods":[],"from_processes":[],"to_processes":[]}]}"#;
        let observed = from_str(text, "evidence.json").expect("parses");
        assert!(observed.evidence);
        assert_eq!(observed.flows.len(), 1);
        assert_eq!(observed.flows[0].origin, "evidence.json edges[0]");
        assert_eq!(
            observed.flows[0].describe(),
            "node:n1 -> external:10.0.0.9 53/udp"
        );
    }
}
