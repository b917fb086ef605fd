//! The OTLP alert sender: [`OtlpSink`] maps each alert and appends it to
//! the spool (quick, local); [`run_sender`] reads the spool in order,
//! hands batches to the OTLP log exporter and acknowledges them in the
//! spool only once the collector has accepted them. When the collector is
//! away, alerts wait on disk; when the disk bound is reached, alerts are
//! counted as dropped and, once there is room again, one visibility-gap
//! alert says how many and of which kinds.

use std::{
    collections::VecDeque,
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
    otlp::record::{self, OtlpRecord},
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

/// Why an alert could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DropReason {
    /// The spool reached `--spool-max-bytes`.
    SpoolLimit,
    /// The spool's disk failed (full, read-only) and the in-memory queue
    /// that stands in for it was full too.
    Disk,
}

impl DropReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::SpoolLimit => "spool_limit",
            Self::Disk => "disk",
        }
    }
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
    /// Of those: the spool reached its bound.
    pub dropped_spool_limit: u64,
    /// Of those: the disk failed and the in-memory queue was full.
    pub dropped_disk: u64,
    /// Alerts waiting in memory because the spool's disk failed.
    pub memory_pending: u64,
    /// Failures writing the spool (appends and acknowledgements).
    pub spool_write_failures: u64,
    /// The last of them.
    pub last_spool_error: Option<String>,
    /// Visibility-gap alerts raised for drops.
    pub gap_alerts: u64,
    pub last_error: Option<String>,
}

struct Inner {
    spool: Spool,
    /// Alerts the spool could not take because its disk failed, with
    /// sequence numbers from the spool. Sent after everything spooled
    /// (while it holds any, new alerts join it, so the order holds);
    /// bounded by the spool's bound.
    memory: VecDeque<(u64, OtlpRecord)>,
    memory_bytes: u64,
    overflow: Overflow,
    stats: QueueStats,
}

impl Inner {
    /// Queues a record: in the spool, or in memory while the spool's disk
    /// fails.
    fn enqueue(&mut self, record: OtlpRecord) -> Result<(), DropReason> {
        if self.memory.is_empty() {
            match self.spool.append(&record) {
                Ok(_) => return Ok(()),
                Err(SpoolError::Full { .. }) => return Err(DropReason::SpoolLimit),
                Err(err) => self.spool_failed(&err),
            }
        }
        let len = Spool::encoded_len(&record);
        if self.memory_bytes + len > self.spool.max_bytes() {
            return Err(DropReason::Disk);
        }
        let seq = self.spool.reserve_seq();
        self.memory.push_back((seq, record));
        self.memory_bytes += len;
        Ok(())
    }

    fn spool_failed(&mut self, err: &SpoolError) {
        self.stats.spool_write_failures += 1;
        self.stats.last_spool_error = Some(err.to_string());
        let failures = self.stats.spool_write_failures;
        // Logged at 1, 2, 4, ...: the count is exact, the log no flood.
        if failures.is_power_of_two() {
            warn!(%err, failures, "writing the spool failed; alerts wait in memory");
        }
    }
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
                memory: VecDeque::new(),
                memory_bytes: 0,
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
        stats.memory_pending = inner.memory.len() as u64;
        stats
    }

    /// Spools an alert; a full spool counts it instead.
    pub fn push(&self, alert: &Alert) -> Result<(), SinkError> {
        let record = record::from_alert(alert, SystemTime::now());
        let mut inner = self.lock();
        self.raise_gap(&mut inner);
        let result = match inner.enqueue(record) {
            Ok(()) => Ok(()),
            // The spool's bound, as configured: counted, not an error.
            Err(reason @ DropReason::SpoolLimit) => {
                self.count_drop(&mut inner, alert, reason);
                Ok(())
            }
            Err(reason @ DropReason::Disk) => {
                self.count_drop(&mut inner, alert, reason);
                Err(SinkError::Other(format!(
                    "alert dropped: the spool cannot be written ({}) and the memory queue is full",
                    inner.stats.last_spool_error.as_deref().unwrap_or("?")
                )))
            }
        };
        self.metrics.spool_bytes(inner.spool.bytes());
        drop(inner);
        self.wake.notify_one();
        result
    }

    fn count_drop(&self, inner: &mut Inner, alert: &Alert, reason: DropReason) {
        let overflow = &mut inner.overflow;
        overflow.monitor |= alert.mode == Mode::Monitor;
        let dropped = &mut overflow.dropped;
        dropped.dropped += 1;
        *dropped.by_kind.entry(alert.kind.as_str()).or_default() += 1;
        *dropped.by_reason.entry(reason.as_str()).or_default() += 1;
        if reason == DropReason::Disk {
            dropped.disk_error.clone_from(&inner.stats.last_spool_error);
        }
        dropped.first.get_or_insert(alert.time);
        dropped.last = Some(alert.time);
        inner.stats.dropped += 1;
        match reason {
            DropReason::SpoolLimit => inner.stats.dropped_spool_limit += 1,
            DropReason::Disk => inner.stats.dropped_disk += 1,
        }
        self.metrics.spool_dropped(alert.kind);
        let dropped = inner.stats.dropped;
        // Logged at 1, 2, 4, ...: the count is exact, the log no flood.
        if dropped.is_power_of_two() {
            warn!(
                dropped,
                reason = reason.as_str(),
                max_bytes = inner.spool.max_bytes(),
                "alerts dropped and counted"
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
        if inner.memory.is_empty() && !inner.spool.fits(Spool::encoded_len(&record)) {
            return;
        }
        match inner.enqueue(record) {
            Ok(()) => {
                info!(
                    dropped = inner.overflow.dropped.dropped,
                    "spool has room again; visibility-gap alert raised"
                );
                inner.overflow = Overflow::default();
                inner.stats.gap_alerts += 1;
                self.metrics.alert(&alert);
            }
            Err(reason) => debug!(reason = reason.as_str(), "gap alert not queued yet"),
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
            // Pending counts what waits in memory too.
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
        let result = match sender.export(&batch).await {
            Ok(()) => sender.sent(&batch),
            Err(err) => Err(Failure::Export(err)),
        };
        match result {
            Ok(()) => sender.backoff = BACKOFF_FIRST,
            Err(failure) => {
                if !sender.failed(&failure).await {
                    break;
                }
            }
        }
    }
    sender.finish();
}

/// Alerts to send: the oldest spooled ones, or (once the spool has none)
/// those waiting in memory.
enum Batch {
    Spooled(Vec<Spooled>),
    Memory(Vec<(u64, OtlpRecord)>),
}

impl Batch {
    fn len(&self) -> usize {
        match self {
            Self::Spooled(batch) => batch.len(),
            Self::Memory(batch) => batch.len(),
        }
    }

    fn records(&self) -> Vec<(u64, &OtlpRecord)> {
        match self {
            Self::Spooled(batch) => batch.iter().map(|s| (s.seq, &s.record)).collect(),
            Self::Memory(batch) => batch.iter().map(|(seq, r)| (*seq, r)).collect(),
        }
    }
}

/// Why a turn of the sender failed; each one backs off before the next.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("OTLP export failed: {0}")]
    Export(OTelSdkError),
    /// Sent, but the acknowledgement could not be written (the batch is
    /// not sent again in this run).
    #[error("acknowledging in the spool failed: {0}")]
    Ack(SpoolError),
    #[error("reading the spool failed: {0}")]
    Read(SpoolError),
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
    async fn next_batch(&mut self) -> Option<Batch> {
        loop {
            match self.peek() {
                Ok(batch) if batch.len() > 0 => return Some(batch),
                Ok(_) if self.queue.is_closed() => return None,
                Ok(_) => {
                    tokio::select! {
                        _ = self.queue.wake.notified() => {}
                        _ = tokio::time::sleep(SYNC_EVERY) => {}
                    }
                }
                Err(err) => {
                    if !self.failed(&Failure::Read(err)).await {
                        return None;
                    }
                }
            }
        }
    }

    /// The oldest alerts, after syncing the spool when it is due.
    fn peek(&mut self) -> Result<Batch, SpoolError> {
        let mut inner = self.queue.lock();
        if self.last_sync.elapsed() >= SYNC_EVERY {
            if let Err(err) = inner.spool.sync() {
                warn!(%err, "spool sync failed");
            }
            self.last_sync = Instant::now();
        }
        let spooled = inner.spool.peek(BATCH)?;
        if !spooled.is_empty() || inner.memory.is_empty() {
            return Ok(Batch::Spooled(spooled));
        }
        Ok(Batch::Memory(
            inner.memory.iter().take(BATCH).cloned().collect(),
        ))
    }

    async fn export(&self, batch: &Batch) -> OTelSdkResult {
        let records: Vec<SdkLogRecord> = batch
            .records()
            .into_iter()
            .map(|(seq, record)| record.to_sdk(seq, &self.logger))
            .collect();
        let pairs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
            records.iter().map(|r| (r, &self.scope)).collect();
        self.exporter.export(LogBatch::new(&pairs)).await
    }

    /// The collector has `batch`: acknowledged in the spool (or taken
    /// out of memory).
    fn sent(&mut self, batch: &Batch) -> Result<(), Failure> {
        let queue = &self.queue;
        let mut inner = queue.lock();
        let acked = match batch {
            Batch::Spooled(batch) => batch.last().map(|last| inner.spool.ack(last)),
            Batch::Memory(batch) => {
                for _ in batch {
                    if let Some((_, record)) = inner.memory.pop_front() {
                        inner.memory_bytes = inner
                            .memory_bytes
                            .saturating_sub(Spool::encoded_len(&record));
                    }
                }
                batch.last().map(|(seq, _)| inner.spool.ack_reserved(*seq))
            }
        };
        let acked = acked.unwrap_or(Ok(()));
        if let Err(err) = &acked {
            inner.spool_failed(err);
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
        acked.map_err(Failure::Ack)
    }

    /// Counts a failure and waits (backing off, up to [`BACKOFF_MAX`])
    /// before the next try; false when the queue is closed (what is left
    /// stays spooled).
    async fn failed(&mut self, failure: &Failure) -> bool {
        if let Failure::Export(err) = failure {
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
        } else {
            debug!(%failure, backoff = ?self.backoff, "sender backs off");
        }
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
