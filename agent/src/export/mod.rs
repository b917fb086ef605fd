//! Getting alerts and metrics out of the node: OTLP log records (through an
//! on-disk spool, so nothing is lost while the collector is away), OTLP
//! metrics, and the liveness/readiness endpoints.
//!
//! alert ─ [`otlp::record`] (mapping) ─ [`spool`] (disk, bounded) ─
//! [`sender`] (OTLP log exporter, ack, delete) ─ collector

pub mod health;
pub mod metrics;
pub mod options;
pub mod otlp;
pub mod sender;
pub mod spool;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use tracing::{info, warn};

pub use self::options::{ExportArgs, HealthListen};
use self::{
    health::Health,
    metrics::{Metrics, MetricsSink},
    otlp::OtlpSettings,
    sender::{AlertQueue, OtlpSink},
};
use crate::{identity::Site, sinks::AlertSink};

/// Export while a command runs: the OTLP alert sender (when configured),
/// metrics (no-ops without a collector) and the health endpoints.
pub struct Export {
    pub metrics: Metrics,
    pub health: Arc<Health>,
    /// The health endpoints' bound address.
    pub health_addr: Option<SocketAddr>,
    queue: Option<Arc<AlertQueue>>,
    sender: Option<tokio::task::JoinHandle<()>>,
    meter_provider: Option<opentelemetry_sdk::metrics::SdkMeterProvider>,
}

/// How long shutdown waits for the spool to drain before leaving the rest
/// on disk for the next start.
pub const DRAIN_ON_EXIT: Duration = Duration::from_secs(5);

impl Export {
    /// Starts what `args` and the environment ask for.
    pub async fn start(args: &ExportArgs, command: &str, site: Site) -> anyhow::Result<Self> {
        let settings = OtlpSettings::resolve(args, &otlp::process_env)?;
        let health = Arc::new(Health::new());
        let health_addr = match args.health_listen {
            HealthListen::Off => None,
            // Fatal: a probe answering for another process (the one that
            // holds the port) would vouch for an agent without health.
            HealthListen::On(addr) => Some(health::serve(addr, health.clone()).await?),
        };
        let Some(settings) = settings else {
            return Ok(Self {
                metrics: Metrics::disabled(),
                health,
                health_addr,
                queue: None,
                sender: None,
                meter_provider: None,
            });
        };
        let resource = otlp::resource(&site, &otlp::process_env);
        let (metrics, meter_provider) = match &settings.metrics {
            Some(signal) => {
                let provider = otlp::meter_provider(signal, &settings.headers, resource.clone())
                    .context("starting the OTLP metrics exporter")?;
                (Metrics::new(&provider), Some(provider))
            }
            None => (Metrics::disabled(), None),
        };
        let (queue, sender) = match &settings.logs {
            Some(signal) => {
                let exporter = otlp::log_exporter(signal, &settings.headers, &resource)
                    .context("starting the OTLP log exporter")?;
                let spool = spool::Spool::open(&args.spool_dir, args.spool_max_bytes)
                    .with_context(|| format!("opening the spool {}", args.spool_dir.display()))?;
                let queue = Arc::new(AlertQueue::new(spool, site.clone(), metrics.clone()));
                let sender = tokio::spawn(sender::run_sender(queue.clone(), exporter));
                (Some(queue), Some(sender))
            }
            None => (None, None),
        };
        info!(
            command,
            logs = ?settings.logs.as_ref().map(|s| (&s.endpoint, s.protocol.to_string())),
            metrics = ?settings.metrics.as_ref().map(|s| (&s.endpoint, s.protocol.to_string())),
            spool = %args.spool_dir.display(),
            "exporting over OTLP"
        );
        Ok(Self {
            metrics,
            health,
            health_addr,
            queue,
            sender,
            meter_provider,
        })
    }

    pub fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// The sinks that join the command's list: the OTLP spool and the
    /// alert counters.
    pub fn sinks(&self) -> Vec<Box<dyn AlertSink>> {
        let mut sinks: Vec<Box<dyn AlertSink>> = Vec::new();
        if let Some(queue) = &self.queue {
            sinks.push(Box::new(OtlpSink::new(queue.clone())));
        }
        sinks.push(Box::new(MetricsSink::new(self.metrics.clone())));
        sinks
    }

    /// What the spool holds and has given up, for the summary line.
    pub fn stats(&self) -> Option<sender::QueueStats> {
        self.queue.as_ref().map(|q| q.stats())
    }

    /// Drains the spool (for at most `drain`), then stops the sender and
    /// flushes metrics. Alerts still spooled stay on disk for the next
    /// start. Returns the sender's final accounting.
    pub async fn shutdown(mut self, drain: Duration) -> Option<sender::QueueStats> {
        if let Some(queue) = &self.queue {
            let drained = queue.drained(drain).await;
            if !drained {
                warn!(
                    pending = queue.stats().pending,
                    "collector did not take every alert before exit; they stay spooled"
                );
            }
            queue.close();
        }
        if let Some(sender) = self.sender.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), sender).await;
        }
        if let Some(provider) = self.meter_provider.take() {
            // Blocks on the reader's worker, which runs on this runtime.
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
        self.health.set_ready(false);
        self.stats()
    }
}
