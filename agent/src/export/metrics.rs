//! eastwatch's metrics, through the OpenTelemetry SDK's meter provider.
//!
//! Cardinality is bounded by construction: attributes are a workload label
//! ([`workload_label`]: canonical ids of workloads, units and containers,
//! never pods or addresses, at most [`MAX_WORKLOADS`] of them), a verdict,
//! an alert kind and severity, or a fixed counter name.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Gauge, Meter},
};

use eastwatch_policy::{
    alert::{Alert, AlertKind, AlertVerdict},
    baseline::matcher::Verdict,
    identity::{Identity, ResolvedFlow},
};

use crate::sinks::{AlertSink, SinkError};

/// Distinct workload labels before the rest are folded into `other`.
pub const MAX_WORKLOADS: usize = 512;

/// An instrument: name, unit and description (docs/alerts.md lists them).
type Instrument = (&'static str, &'static str, &'static str);

const FLOWS_OBSERVED: Instrument = (
    "eastwatch.flows.observed",
    "{occurrence}",
    "Flow occurrences observed, by local workload",
);

const FLOWS_JUDGED: Instrument = (
    "eastwatch.flows.judged",
    "{occurrence}",
    "Flow occurrences judged against the baseline, by local workload and verdict",
);

const ALERTS: Instrument = (
    "eastwatch.alerts",
    "{alert}",
    "Alerts raised, by kind and severity",
);

const KERNEL_EVENTS_LOST: Instrument = (
    "eastwatch.kernel.events.lost",
    "{event}",
    "Kernel events lost, by loss counter",
);

const FLOW_MAP_ENTRIES: Instrument = (
    "eastwatch.kernel.flow_map.entries",
    "{entry}",
    "Edges in the kernel's flow map at the last read",
);

const FLOW_MAP_CAPACITY: Instrument = (
    "eastwatch.kernel.flow_map.capacity",
    "{entry}",
    "Edges the kernel's flow map holds before evicting",
);

const IDENTITY_FAILURES: Instrument = (
    "eastwatch.identity.resolution_failures",
    "{end}",
    "Flow ends that resolved only to a fallback identity, by end",
);

const BASELINE_RELOADS: Instrument = (
    "eastwatch.baseline.reloads",
    "{reload}",
    "Baseline and config reloads, by file and result",
);

const SPOOL_BYTES: Instrument = (
    "eastwatch.spool.size",
    "By",
    "Bytes of alerts waiting in the on-disk spool",
);

const SPOOL_DROPPED: Instrument = (
    "eastwatch.spool.dropped",
    "{alert}",
    "Alerts refused by the full spool, by kind",
);

const ALERTS_EXPORTED: Instrument = (
    "eastwatch.alerts.exported",
    "{alert}",
    "Alerts the collector accepted",
);

const EXPORT_FAILURES: Instrument = (
    "eastwatch.export.failures",
    "{call}",
    "OTLP log export calls that failed (and were retried)",
);

#[derive(Clone)]
pub struct Metrics {
    flows_observed: Counter<u64>,
    flows_judged: Counter<u64>,
    alerts: Counter<u64>,
    kernel_events_lost: Counter<u64>,
    flow_map_entries: Gauge<u64>,
    flow_map_capacity: Gauge<u64>,
    identity_failures: Counter<u64>,
    baseline_reloads: Counter<u64>,
    spool_bytes: Gauge<u64>,
    spool_dropped: Counter<u64>,
    alerts_exported: Counter<u64>,
    export_failures: Counter<u64>,
    workloads: Arc<Mutex<HashSet<String>>>,
}

/// A bounded label for a flow's local end: the canonical id of a workload,
/// systemd unit, container or node; for cgroup paths (which name pods) the
/// top-level directory only; the identity type for everything else.
pub fn workload_label(identity: &Identity) -> String {
    match identity {
        Identity::Workload(_)
        | Identity::SystemdUnit { .. }
        | Identity::Container { .. }
        | Identity::Node { .. } => identity.canonical(),
        Identity::Cgroup { path } => {
            let top = path.trim_start_matches('/').split('/').next().unwrap_or("");
            format!("cgroup:/{top}")
        }
        Identity::External { .. } => "external".into(),
        Identity::Unknown { .. } => "unknown".into(),
    }
}

impl Metrics {
    pub fn new(provider: &impl opentelemetry::metrics::MeterProvider) -> Self {
        let scope = opentelemetry::InstrumentationScope::builder("eastwatch")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        Self::from_meter(&provider.meter_with_scope(scope))
    }

    /// Instruments that record nothing (no collector configured).
    pub fn disabled() -> Self {
        Self::new(&opentelemetry::metrics::noop::NoopMeterProvider::new())
    }

    fn from_meter(meter: &Meter) -> Self {
        let counter = |(name, unit, description): Instrument| {
            meter
                .u64_counter(name)
                .with_unit(unit)
                .with_description(description)
                .build()
        };
        let gauge = |(name, unit, description): Instrument| {
            meter
                .u64_gauge(name)
                .with_unit(unit)
                .with_description(description)
                .build()
        };
        Self {
            flows_observed: counter(FLOWS_OBSERVED),
            flows_judged: counter(FLOWS_JUDGED),
            alerts: counter(ALERTS),
            kernel_events_lost: counter(KERNEL_EVENTS_LOST),
            flow_map_entries: gauge(FLOW_MAP_ENTRIES),
            flow_map_capacity: gauge(FLOW_MAP_CAPACITY),
            identity_failures: counter(IDENTITY_FAILURES),
            baseline_reloads: counter(BASELINE_RELOADS),
            spool_bytes: gauge(SPOOL_BYTES),
            spool_dropped: counter(SPOOL_DROPPED),
            alerts_exported: counter(ALERTS_EXPORTED),
            export_failures: counter(EXPORT_FAILURES),
            workloads: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// The label, or `other` once [`MAX_WORKLOADS`] distinct ones exist.
    fn bounded(&self, identity: &Identity) -> String {
        let label = workload_label(identity);
        let mut seen = self.workloads.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(&label) {
            return label;
        }
        if seen.len() >= MAX_WORKLOADS {
            return "other".into();
        }
        seen.insert(label.clone());
        label
    }

    pub fn observed(&self, flow: &ResolvedFlow, count: u64) {
        let workload = self.bounded(&flow.local.identity);
        self.flows_observed
            .add(count, &[KeyValue::new("eastwatch.workload", workload)]);
        if flow.local.unresolved.is_some() {
            self.identity_failures
                .add(1, &[KeyValue::new("eastwatch.end", "local")]);
        }
        if flow.remote.unresolved.is_some() {
            self.identity_failures
                .add(1, &[KeyValue::new("eastwatch.end", "remote")]);
        }
    }

    pub fn judged(&self, flow: &ResolvedFlow, count: u64, verdict: Verdict) {
        let workload = self.bounded(&flow.local.identity);
        self.flows_judged.add(
            count,
            &[
                KeyValue::new("eastwatch.workload", workload),
                KeyValue::new("eastwatch.verdict", verdict.as_str()),
            ],
        );
    }

    pub fn alert(&self, alert: &Alert) {
        self.alerts.add(
            1,
            &[
                KeyValue::new("eastwatch.alert.kind", alert.kind.as_str()),
                KeyValue::new("eastwatch.alert.severity", alert.severity.as_str()),
            ],
        );
        if let Some((file, result)) = alert.verdict.and_then(reload) {
            self.baseline_reloads.add(
                1,
                &[
                    KeyValue::new("eastwatch.file", file),
                    KeyValue::new("eastwatch.result", result),
                ],
            );
        }
    }

    pub fn kernel_lost(&self, counter: &'static str, lost: u64) {
        self.kernel_events_lost
            .add(lost, &[KeyValue::new("eastwatch.kernel.counter", counter)]);
    }

    pub fn flow_map(&self, entries: u64, capacity: u64) {
        self.flow_map_entries.record(entries, &[]);
        self.flow_map_capacity.record(capacity, &[]);
    }

    pub fn spool_bytes(&self, bytes: u64) {
        self.spool_bytes.record(bytes, &[]);
    }

    pub fn spool_dropped(&self, kind: AlertKind) {
        self.spool_dropped
            .add(1, &[KeyValue::new("eastwatch.alert.kind", kind.as_str())]);
    }

    pub fn exported(&self, n: u64) {
        self.alerts_exported.add(n, &[]);
    }

    pub fn export_failed(&self) {
        self.export_failures.add(1, &[]);
    }
}

/// The file and result of a reload verdict.
fn reload(verdict: AlertVerdict) -> Option<(&'static str, &'static str)> {
    match verdict {
        AlertVerdict::BaselineApplied => Some(("baseline", "applied")),
        AlertVerdict::BaselineRejected => Some(("baseline", "rejected")),
        AlertVerdict::ConfigApplied => Some(("config", "applied")),
        AlertVerdict::ConfigRejected => Some(("config", "rejected")),
        AlertVerdict::Unauthorized
        | AlertVerdict::ExpiredRule
        | AlertVerdict::KernelEventsLost
        | AlertVerdict::SpoolOverflow => None,
    }
}

/// Counts every alert the command raises (one of its sinks).
pub struct MetricsSink {
    metrics: Metrics,
}

impl MetricsSink {
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl AlertSink for MetricsSink {
    fn deliver(&mut self, alert: &Alert) -> Result<(), SinkError> {
        self.metrics.alert(alert);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_never_name_pods_or_addresses() {
        assert_eq!(
            workload_label(&Identity::Cgroup {
                path: "/kubepods.slice/kubepods-pod1234.slice/cri-containerd-abc.scope".into()
            }),
            "cgroup:/kubepods.slice"
        );
        assert_eq!(
            workload_label(&Identity::External {
                address: "10.0.0.1".parse().unwrap()
            }),
            "external"
        );
        assert_eq!(
            workload_label(&Identity::SystemdUnit {
                unit: "nginx.service".into()
            }),
            "systemd:nginx.service"
        );
    }

    #[test]
    fn distinct_labels_are_bounded() {
        let metrics = Metrics::disabled();
        for i in 0..MAX_WORKLOADS + 10 {
            metrics.bounded(&Identity::SystemdUnit {
                unit: format!("u{i}.service"),
            });
        }
        assert_eq!(
            metrics.bounded(&Identity::SystemdUnit {
                unit: "late.service".into()
            }),
            "other"
        );
        assert_eq!(
            metrics.bounded(&Identity::SystemdUnit {
                unit: "u0.service".into()
            }),
            "systemd:u0.service"
        );
    }
}
