//! An alert as an OTLP log record. [`from_alert`] is the one mapping (see
//! docs/alerts.md); its result is what the spool keeps, and
//! [`OtlpRecord::to_sdk`] turns it into the SDK's record for the exporter.

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity as OtelSeverity};
use opentelemetry_sdk::logs::{SdkLogRecord, SdkLogger};
use serde::{Deserialize, Serialize};

use eastwatch_policy::{
    alert::{Alert, AlertKind, LATERAL_MOVEMENT, Severity},
    flow::Direction,
    identity::{Identity, ResolvedEnd, WorkloadKind},
    timestamp::rfc3339,
};

/// An attribute value as the spool keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Str(String),
}

impl From<Value> for AnyValue {
    fn from(value: Value) -> Self {
        match value {
            Value::Bool(b) => AnyValue::Boolean(b),
            Value::Int(i) => AnyValue::Int(i),
            Value::Str(s) => AnyValue::String(s.into()),
        }
    }
}

/// A log record ready for any OTLP transport, and for the disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtlpRecord {
    pub kind: AlertKind,
    pub severity: Severity,
    /// When it happened (the alert's time), ns since the epoch.
    pub time_unix_nano: u64,
    /// When eastwatch recorded it for export, ns since the epoch.
    pub observed_unix_nano: u64,
    pub body: String,
    pub attributes: Vec<(String, Value)>,
}

pub fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos()
        .try_into()
        .unwrap_or(u64::MAX)
}

/// OTLP severity number of each eastwatch severity.
pub fn severity_number(severity: Severity) -> OtelSeverity {
    match severity {
        Severity::Info => OtelSeverity::Info,
        Severity::Low => OtelSeverity::Warn,
        Severity::Medium => OtelSeverity::Error,
        Severity::High => OtelSeverity::Error3,
        Severity::Critical => OtelSeverity::Fatal,
    }
}

struct Attributes(Vec<(String, Value)>);

impl Attributes {
    fn str(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.push((key.into(), Value::Str(value.into())));
    }

    fn int(&mut self, key: impl Into<String>, value: i64) {
        self.0.push((key.into(), Value::Int(value)));
    }

    fn opt(&mut self, key: impl Into<String>, value: Option<impl Into<String>>) {
        if let Some(value) = value {
            self.str(key, value);
        }
    }

    fn address(&mut self, prefix: &str, addr: SocketAddr) {
        self.str(
            format!("{prefix}.address"),
            addr.ip().to_canonical().to_string(),
        );
        self.int(format!("{prefix}.port"), i64::from(addr.port()));
    }

    /// `eastwatch.source.*` / `eastwatch.destination.*`.
    fn identity(&mut self, prefix: &str, end: &ResolvedEnd) {
        let identity = &end.identity;
        self.str(format!("{prefix}.id"), identity.canonical());
        self.str(format!("{prefix}.type"), identity_type(identity));
        match identity {
            Identity::Workload(w) => {
                self.str(format!("{prefix}.namespace"), w.namespace.clone());
                self.str(format!("{prefix}.kind"), w.kind.as_str());
                self.str(format!("{prefix}.name"), w.name.clone());
                self.str(
                    format!("{prefix}.service_account"),
                    w.service_account.clone(),
                );
                if !w.cluster.is_empty() {
                    self.str(format!("{prefix}.cluster"), w.cluster.clone());
                }
            }
            Identity::SystemdUnit { unit } => self.str(format!("{prefix}.name"), unit.clone()),
            Identity::Container { runtime, id, name } => {
                self.str(format!("{prefix}.kind"), runtime.as_str());
                self.str(format!("{prefix}.name"), name.clone().unwrap_or(id.clone()));
            }
            Identity::Cgroup { path } => self.str(format!("{prefix}.cgroup"), path.clone()),
            Identity::Node { name } => self.str(format!("{prefix}.name"), name.clone()),
            Identity::External { address } => {
                self.str(format!("{prefix}.address"), address.to_string())
            }
            Identity::Unknown { what } => self.str(format!("{prefix}.name"), what.clone()),
        }
        // The resolver names it with the configured trust domain.
        self.opt(format!("{prefix}.spiffe_id"), end.spiffe_id.clone());
        self.opt(format!("{prefix}.unresolved"), end.unresolved.clone());
        if let Some(service) = &end.service {
            self.str(
                format!("{prefix}.service"),
                format!("{}/{}", service.namespace, service.name),
            );
        }
        if let Some(pod) = &end.pod {
            self.str(
                format!("{prefix}.pod"),
                format!("{}/{}", pod.namespace, pod.name),
            );
        }
        self.opt(format!("{prefix}.container_id"), end.container_id.clone());
    }

    /// Semantic-convention attributes of the end this node observed.
    fn observed_end(&mut self, end: &ResolvedEnd) {
        if let Some(w) = end.identity.workload() {
            self.str("k8s.namespace.name", w.namespace.clone());
            if let Some(key) = k8s_kind_key(&w.kind) {
                self.str(key, w.name.clone());
            }
        }
        if let Some(pod) = &end.pod {
            self.str("k8s.namespace.name", pod.namespace.clone());
            self.str("k8s.pod.name", pod.name.clone());
            self.str("k8s.pod.uid", pod.uid.clone());
        }
        let container = end.container_id.clone().or(match &end.identity {
            Identity::Container { id, .. } => Some(id.clone()),
            _ => None,
        });
        self.opt("container.id", container);
    }
}

fn identity_type(identity: &Identity) -> &'static str {
    match identity {
        Identity::Workload(_) => "workload",
        Identity::SystemdUnit { .. } => "systemd_unit",
        Identity::Container { .. } => "container",
        Identity::Cgroup { .. } => "cgroup",
        Identity::Node { .. } => "node",
        Identity::External { .. } => "external",
        Identity::Unknown { .. } => "unknown",
    }
}

/// `k8s.<kind>.name` for the kinds the semantic conventions name.
fn k8s_kind_key(kind: &WorkloadKind) -> Option<&'static str> {
    Some(match kind {
        WorkloadKind::Deployment => "k8s.deployment.name",
        WorkloadKind::StatefulSet => "k8s.statefulset.name",
        WorkloadKind::DaemonSet => "k8s.daemonset.name",
        WorkloadKind::Job => "k8s.job.name",
        WorkloadKind::CronJob => "k8s.cronjob.name",
        WorkloadKind::ReplicaSet => "k8s.replicaset.name",
        WorkloadKind::ReplicationController => "k8s.replicationcontroller.name",
        WorkloadKind::Pod => "k8s.pod.name",
        WorkloadKind::Other(_) => return None,
    })
}

/// The mapping (docs/alerts.md lists every field).
pub fn from_alert(alert: &Alert, observed: SystemTime) -> OtlpRecord {
    let mut a = Attributes(Vec::new());
    a.str("eastwatch.alert.kind", alert.kind.as_str());
    a.str("eastwatch.alert.severity", alert.severity.as_str());
    a.str("eastwatch.mode", alert.mode.as_str());
    if let Some(flow) = &alert.flow {
        a.address("source", flow.source);
        a.address("destination", flow.destination);
        a.str("network.transport", flow.transport.to_string());
        a.str("network.type", flow.family.as_str());
        a.str("eastwatch.flow.outcome", flow.outcome.to_string());
        a.str("eastwatch.flow.observed", flow.observed.to_string());
        a.int(
            "eastwatch.flow.count",
            i64::try_from(flow.count).unwrap_or(i64::MAX),
        );
        a.str("eastwatch.flow.first_seen", rfc3339(flow.first_seen));
        a.str("eastwatch.flow.last_seen", rfc3339(flow.last_seen));
        if let Some(process) = &flow.process {
            a.int("process.pid", i64::from(process.pid));
            a.str("process.executable.name", process.name.clone());
        }
        let observed_end = match flow.observed {
            Direction::Egress => alert.source.as_ref(),
            Direction::Ingress => alert.destination.as_ref(),
        };
        if let Some(end) = observed_end {
            a.observed_end(end);
        }
    }
    if let Some(source) = &alert.source {
        a.identity("eastwatch.source", source);
    }
    if let Some(destination) = &alert.destination {
        a.identity("eastwatch.destination", destination);
    }
    a.opt("eastwatch.verdict", alert.verdict.map(|v| v.as_str()));
    a.opt("eastwatch.rule", alert.rule.clone());
    a.opt("eastwatch.baseline.digest", alert.baseline_digest.clone());
    if let Some(technique) = &alert.technique {
        a.str("threat.framework", "MITRE ATT&CK");
        a.str("threat.tactic.id", LATERAL_MOVEMENT);
        a.str("threat.tactic.name", "Lateral Movement");
        // ECS: the technique is the parent; a sub-technique has its own field.
        let (parent_name, sub_name) = match technique.name.split_once(": ") {
            Some((parent, sub)) => (parent, Some(sub)),
            None => (technique.name.as_str(), None),
        };
        match technique.id.split_once('.') {
            Some((parent, _)) => {
                a.str("threat.technique.id", parent);
                a.str("threat.technique.subtechnique.id", technique.id.clone());
                a.opt("threat.technique.subtechnique.name", sub_name);
            }
            None => a.str("threat.technique.id", technique.id.clone()),
        }
        a.str("threat.technique.name", parent_name);
    }
    for (key, value) in &alert.details {
        a.str(format!("eastwatch.details.{key}"), value.clone());
    }
    OtlpRecord {
        kind: alert.kind,
        severity: alert.severity,
        time_unix_nano: unix_nanos(alert.time),
        observed_unix_nano: unix_nanos(observed),
        body: alert.summary.clone(),
        attributes: a.0,
    }
}

impl OtlpRecord {
    /// The SDK's record, with the spool's sequence number.
    pub fn to_sdk(&self, sequence: u64, logger: &SdkLogger) -> SdkLogRecord {
        let mut record = logger.create_log_record();
        record.set_event_name(self.kind.event_name());
        record.set_timestamp(UNIX_EPOCH + Duration::from_nanos(self.time_unix_nano));
        record.set_observed_timestamp(UNIX_EPOCH + Duration::from_nanos(self.observed_unix_nano));
        record.set_severity_number(severity_number(self.severity));
        record.set_severity_text(self.severity.as_str());
        record.set_body(AnyValue::String(self.body.clone().into()));
        record.add_attribute(
            "eastwatch.alert.sequence",
            i64::try_from(sequence).unwrap_or(i64::MAX),
        );
        for (key, value) in &self.attributes {
            record.add_attribute(key.clone(), AnyValue::from(value.clone()));
        }
        record
    }

    #[cfg(test)]
    pub fn attribute(&self, key: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use eastwatch_policy::{
        alert::{AlertVerdict, FlowFacts, Mode, Technique},
        flow::{Family, Outcome, Process, ProcessSource, Transport},
        identity::{PodRef, Workload},
    };

    fn workload(name: &str, kind: WorkloadKind) -> ResolvedEnd {
        let workload = Workload {
            cluster: "prod".into(),
            namespace: "shop".into(),
            kind,
            name: name.into(),
            service_account: format!("{name}-sa"),
            labels: BTreeMap::new(),
        };
        let spiffe_id = Some(workload.spiffe_id("cluster.local"));
        ResolvedEnd {
            spiffe_id,
            ..ResolvedEnd::plain(Identity::Workload(workload))
        }
    }

    fn alert(observed: Direction) -> Alert {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut source = workload("web", WorkloadKind::Deployment);
        source.pod = Some(PodRef {
            namespace: "shop".into(),
            name: "web-7d9f-abcde".into(),
            uid: "uid-1".into(),
        });
        source.container_id = Some("c0ffee".into());
        Alert {
            kind: AlertKind::UnauthorizedFlow,
            time: t0 + Duration::from_millis(5),
            severity: Severity::High,
            summary: "unauthorized tcp flow a -> b port 22".into(),
            mode: Mode::Monitor,
            node: Some("n1".into()),
            flow: Some(FlowFacts {
                source: "[::ffff:10.0.0.1]:40000".parse().unwrap(),
                destination: "10.0.0.2:22".parse().unwrap(),
                transport: Transport::Tcp,
                family: Family::Ipv4,
                outcome: Outcome::Established,
                observed,
                process: Some(Process {
                    pid: 42,
                    name: "curl".into(),
                    source: ProcessSource::Hook,
                }),
                count: 1,
                first_seen: t0,
                last_seen: t0,
            }),
            source: Some(source),
            destination: Some(workload("db", WorkloadKind::StatefulSet)),
            verdict: Some(AlertVerdict::Unauthorized),
            rule: None,
            baseline_digest: Some("sha256:abc".into()),
            technique: Some(Technique {
                id: "T1021.004".into(),
                name: "Remote Services: SSH".into(),
            }),
            details: BTreeMap::from([("report".into(), "first".into())]),
        }
    }

    fn str_of<'a>(record: &'a OtlpRecord, key: &str) -> Option<&'a str> {
        match record.attribute(key) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn an_unauthorized_flow_maps_to_semantic_conventions() {
        let r = from_alert(&alert(Direction::Egress), UNIX_EPOCH);
        assert_eq!(r.time_unix_nano, 1_800_000_000_005_000_000);
        assert_eq!(str_of(&r, "source.address"), Some("10.0.0.1"));
        assert_eq!(r.attribute("destination.port"), Some(&Value::Int(22)));
        assert_eq!(str_of(&r, "network.transport"), Some("tcp"));
        assert_eq!(str_of(&r, "network.type"), Some("ipv4"));
        assert_eq!(str_of(&r, "threat.tactic.id"), Some("TA0008"));
        assert_eq!(str_of(&r, "threat.technique.id"), Some("T1021"));
        assert_eq!(
            str_of(&r, "threat.technique.subtechnique.id"),
            Some("T1021.004")
        );
        assert_eq!(str_of(&r, "threat.technique.name"), Some("Remote Services"));
        assert_eq!(
            str_of(&r, "eastwatch.destination.spiffe_id"),
            Some("spiffe://cluster.local/ns/shop/sa/db-sa")
        );
        assert_eq!(
            str_of(&r, "eastwatch.source.id"),
            Some("workload:shop/deployment/web")
        );
        // The observed side is the source (egress): its pod and container.
        assert_eq!(str_of(&r, "k8s.pod.name"), Some("web-7d9f-abcde"));
        assert_eq!(str_of(&r, "k8s.deployment.name"), Some("web"));
        assert_eq!(str_of(&r, "container.id"), Some("c0ffee"));
        assert_eq!(r.attribute("process.pid"), Some(&Value::Int(42)));
        assert_eq!(str_of(&r, "eastwatch.details.report"), Some("first"));

        // Seen from the server's node: k8s.* describe the destination.
        let r = from_alert(&alert(Direction::Ingress), UNIX_EPOCH);
        assert_eq!(str_of(&r, "k8s.statefulset.name"), Some("db"));
        assert_eq!(str_of(&r, "k8s.pod.name"), None);
    }

    #[test]
    fn records_survive_the_disk() {
        let r = from_alert(&alert(Direction::Egress), UNIX_EPOCH);
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<OtlpRecord>(&text).unwrap(), r);
    }

    #[test]
    fn sdk_records_carry_event_name_severity_and_body() {
        use opentelemetry::logs::LoggerProvider as _;
        let provider = opentelemetry_sdk::logs::SdkLoggerProvider::builder().build();
        let logger = provider.logger("eastwatch");
        let r = from_alert(&alert(Direction::Egress), UNIX_EPOCH);
        let sdk = r.to_sdk(7, &logger);
        assert_eq!(sdk.event_name(), Some("eastwatch.alert.unauthorized_flow"));
        assert_eq!(sdk.severity_number(), Some(OtelSeverity::Error3));
        assert_eq!(sdk.severity_text(), Some("high"));
        assert_eq!(
            sdk.body(),
            Some(&AnyValue::String(
                "unauthorized tcp flow a -> b port 22".into()
            ))
        );
        assert_eq!(
            sdk.timestamp(),
            Some(UNIX_EPOCH + Duration::from_nanos(r.time_unix_nano))
        );
        let seq = sdk
            .attributes_iter()
            .find(|(k, _)| k.as_str() == "eastwatch.alert.sequence")
            .map(|(_, v)| v.clone());
        assert_eq!(seq, Some(AnyValue::Int(7)));
    }
}
