//! The OTLP alert sender: [`OtlpSink`] maps each alert and appends it to
//! the spool (quick, local); [`run_sender`] reads the spool in order,
//! hands batches to the OTLP log exporter and acknowledges them in the
//! spool only once the collector has accepted them. When the collector is
//! away, alerts wait on disk; when the disk bound is reached, alerts are
//! counted as dropped and, once there is room again, one visibility-gap
//! alert says how many and of which kinds.

use std::{
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use opentelemetry::{InstrumentationScope, logs::LoggerProvider as _};
use opentelemetry_otlp::LogExporter;
use opentelemetry_sdk::{
    error::{OTelSdkError, OTelSdkResult},
    logs::{LogBatch, LogExporter as _, SdkLogRecord, SdkLogger, SdkLoggerProvider},
};
use serde::Serialize;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use eastwatch_policy::alert::{Alert, AlertContext, Mode, SpoolOverflow};

use super::{
    metrics::Metrics,
    otlp::record,
    spool::{SYNC_EVERY, Spool, SpoolError, Spooled},
};
use crate::{
    identity::Site,
    sinks::{AlertSink, SinkError},
};

/// Records per export call.
pub const BATCH: usize = 256;
/// Retry delays while the collector fails: doubling from the first to the
/// last.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Alerts the spool had to refuse since the last gap alert.
#[derive(Debug, Default)]
struct Overflow {
    dropped: SpoolOverflow,
    /// Some dropped alert was raised in monitor mode (else all in learn).
    monitor: bool,
}

/// What the sender has done, for the summary and readiness.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueStats {
    /// Alerts spooled, not yet accepted by the collector.
    pub pending: u64,
    pub spool_bytes: u64,
    pub spool_max_bytes: u64,
    /// Alerts the collector accepted.
    pub exported: u64,
    /// Export calls that failed (each retried).
    pub export_failures: u64,
    /// Alerts refused because the spool was full (each counted in a
    /// visibility-gap alert).
    pub dropped: u64,
    /// Visibility-gap alerts raised for drops.
    pub gap_alerts: u64,
    pub last_error: Option<String>,
}

struct Inner {
    spool: Spool,
    overflow: Overflow,
    stats: QueueStats,
}

pub struct AlertQueue {
    inner: Mutex<Inner>,
    wake: Notify,
    closed: AtomicBool,
    site: Site,
    metrics: Metrics,
}

impl AlertQueue {
    pub fn new(spool: Spool, site: Site, metrics: Metrics) -> Self {
        let stats = QueueStats {
            pending: spool.pending(),
            spool_bytes: spool.bytes(),
            spool_max_bytes: spool.max_bytes(),
            ..QueueStats::default()
        };
        if stats.pending > 0 {
            info!(
                pending = stats.pending,
                "alerts from a previous run are waiting in the spool"
            );
        }
        Self {
            inner: Mutex::new(Inner {
                spool,
                overflow: Overflow::default(),
                stats,
            }),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            site,
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not stop alerts: the data is still whole.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> QueueStats {
        let inner = self.lock();
        let mut stats = inner.stats.clone();
        stats.pending = inner.spool.pending();
        stats.spool_bytes = inner.spool.bytes();
        stats
    }

    /// Spools an alert; a full spool counts it instead.
    pub fn push(&self, alert: &Alert) -> Result<(), SinkError> {
        let record = record::from_alert(alert, SystemTime::now());
        let mut inner = self.lock();
        self.raise_gap(&mut inner);
        let result = match inner.spool.append(&record) {
            Ok(_) => Ok(()),
            Err(SpoolError::Full { .. }) => {
                self.count_drop(&mut inner, alert);
                Ok(())
            }
            Err(err) => {
                self.count_drop(&mut inner, alert);
                Err(SinkError::Other(format!("spooling alert: {err}")))
            }
        };
        self.metrics.spool_bytes(inner.spool.bytes());
        drop(inner);
        self.wake.notify_one();
        result
    }

    fn count_drop(&self, inner: &mut Inner, alert: &Alert) {
        let overflow = &mut inner.overflow;
        overflow.monitor |= alert.mode == Mode::Monitor;
        let dropped = &mut overflow.dropped;
        dropped.dropped += 1;
        *dropped.by_kind.entry(alert.kind.as_str()).or_default() += 1;
        dropped.first.get_or_insert(alert.time);
        dropped.last = Some(alert.time);
        inner.stats.dropped += 1;
        self.metrics.spool_dropped(alert.kind);
        let dropped = inner.stats.dropped;
        // Logged at 1, 2, 4, ...: the count is exact, the log no flood.
        if dropped.is_power_of_two() {
            warn!(
                dropped,
                max_bytes = inner.spool.max_bytes(),
                "alert spool full; alerts dropped and counted"
            );
        }
    }

    /// Once there is room: one visibility-gap alert for what was dropped.
    fn raise_gap(&self, inner: &mut Inner) {
        if inner.overflow.dropped.dropped == 0 {
            return;
        }
        let alert = self.overflow_alert(&inner.overflow, inner.spool.max_bytes());
        let record = record::from_alert(&alert, SystemTime::now());
        if !inner.spool.fits(Spool::encoded_len(&record)) {
            return;
        }
        match inner.spool.append(&record) {
            Ok(_) => {
                info!(
                    dropped = inner.overflow.dropped.dropped,
                    "spool has room again; visibility-gap alert raised"
                );
                inner.overflow = Overflow::default();
                inner.stats.gap_alerts += 1;
                self.metrics.alert(&alert);
            }
            Err(err) => debug!(%err, "gap alert not spooled yet"),
        }
    }

    /// The visibility-gap alert for what the spool dropped, in the mode
    /// of the alerts it dropped.
    fn overflow_alert(&self, overflow: &Overflow, max_bytes: u64) -> Alert {
        let context = AlertContext {
            time: SystemTime::now(),
            node: self.site.node_or_host(),
            mode: if overflow.monitor {
                Mode::Monitor
            } else {
                Mode::Learn
            },
            baseline_digest: None,
        };
        Alert::spool_overflow(
            &context,
            &SpoolOverflow {
                max_bytes,
                ..overflow.dropped.clone()
            },
        )
    }

    /// Waits until the collector has everything, or `timeout`.
    pub async fn drained(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.lock().spool.pending() == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the sender (after its current call).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// The sink in the command's list.
pub struct OtlpSink {
    queue: Arc<AlertQueue>,
}

impl OtlpSink {
    pub fn new(queue: Arc<AlertQueue>) -> Self {
        Self { queue }
    }
}

impl AlertSink for OtlpSink {
    fn deliver(&mut self, alert: &Alert) -> Result<(), SinkError> {
        self.queue.push(alert)
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("eastwatch")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// Sends the spool to the collector, in order, until the queue is closed.
pub async fn run_sender(queue: Arc<AlertQueue>, exporter: LogExporter) {
    let mut sender = Sender::new(queue, exporter);
    while let Some(batch) = sender.next_batch().await {
        match sender.export(&batch).await {
            Ok(()) => sender.sent(&batch),
            Err(err) => {
                if !sender.failed(&err).await {
                    break;
                }
            }
        }
    }
    sender.finish();
}

/// The sending side of the queue: one batch at a time, acknowledged once
/// the collector has it, retried with backoff while it fails.
struct Sender {
    queue: Arc<AlertQueue>,
    exporter: LogExporter,
    /// A provider without processors: only its logger's record factory is
    /// used; the records go to the exporter here.
    _provider: SdkLoggerProvider,
    logger: SdkLogger,
    scope: InstrumentationScope,
    backoff: Duration,
    failing_since: Option<Instant>,
    last_sync: Instant,
}

impl Sender {
    fn new(queue: Arc<AlertQueue>, exporter: LogExporter) -> Self {
        let provider = SdkLoggerProvider::builder().build();
        let logger = provider.logger_with_scope(scope());
        Self {
            queue,
            exporter,
            _provider: provider,
            logger,
            scope: scope(),
            backoff: BACKOFF_FIRST,
            failing_since: None,
            last_sync: Instant::now(),
        }
    }

    /// The next alerts to send, waiting while the spool is empty; None
    /// once the queue is closed with nothing left to try.
    async fn next_batch(&mut self) -> Option<Vec<Spooled>> {
        loop {
            match self.peek() {
                Ok(batch) if !batch.is_empty() => return Some(batch),
                Ok(_) if self.queue.is_closed() => return None,
                Ok(_) => {
                    tokio::select! {
                        _ = self.queue.wake.notified() => {}
                        _ = tokio::time::sleep(SYNC_EVERY) => {}
                    }
                }
                Err(err) => {
                    warn!(%err, "reading the spool failed");
                    if self.queue.is_closed() {
                        return None;
                    }
                    tokio::time::sleep(BACKOFF_MAX).await;
                }
            }
        }
    }

    /// The oldest spooled alerts, after syncing the spool when it is due.
    fn peek(&mut self) -> Result<Vec<Spooled>, SpoolError> {
        let mut inner = self.queue.lock();
        if self.last_sync.elapsed() >= SYNC_EVERY {
            if let Err(err) = inner.spool.sync() {
                warn!(%err, "spool sync failed");
            }
            self.last_sync = Instant::now();
        }
        inner.spool.peek(BATCH)
    }

    async fn export(&self, batch: &[Spooled]) -> OTelSdkResult {
        let records: Vec<SdkLogRecord> = batch
            .iter()
            .map(|s| s.record.to_sdk(s.seq, &self.logger))
            .collect();
        let pairs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
            records.iter().map(|r| (r, &self.scope)).collect();
        self.exporter.export(LogBatch::new(&pairs)).await
    }

    /// The collector has `batch`: acknowledged in the spool.
    fn sent(&mut self, batch: &[Spooled]) {
        let queue = &self.queue;
        let mut inner = queue.lock();
        if let Some(last) = batch.last()
            && let Err(err) = inner.spool.ack(last)
        {
            // Sent but not recorded: it may be sent again (at least
            // once), never lost.
            warn!(%err, "acknowledging in the spool failed");
        }
        inner.stats.exported += batch.len() as u64;
        queue.metrics.exported(batch.len() as u64);
        queue.raise_gap(&mut inner);
        queue.metrics.spool_bytes(inner.spool.bytes());
        if let Some(since) = self.failing_since.take() {
            info!(
                after = ?since.elapsed(),
                pending = inner.spool.pending(),
                "collector reachable again; sending spooled alerts"
            );
        }
        self.backoff = BACKOFF_FIRST;
    }

    /// Counts a failed export and waits before the retry; false when the
    /// queue is closed (what is left stays spooled).
    async fn failed(&mut self, err: &OTelSdkError) -> bool {
        let failures = {
            let mut inner = self.queue.lock();
            inner.stats.export_failures += 1;
            inner.stats.last_error = Some(err.to_string());
            inner.stats.export_failures
        };
        self.queue.metrics.export_failed();
        if self.failing_since.is_none() || failures.is_power_of_two() {
            warn!(%err, failures, "OTLP export failed; alerts stay spooled and are retried");
        }
        self.failing_since.get_or_insert_with(Instant::now);
        if self.queue.is_closed() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(self.backoff) => {}
            _ = wait_closed(&self.queue) => {}
        }
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        true
    }

    fn finish(self) {
        let mut inner = self.queue.lock();
        if let Err(err) = inner.spool.sync() {
            warn!(%err, "spool sync failed");
        }
        drop(inner);
        let _ = self.exporter.shutdown();
    }
}

async fn wait_closed(queue: &AlertQueue) {
    while !queue.is_closed() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
