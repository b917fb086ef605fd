//! Where the agent's output goes: alerts as JSON lines on stdout or
//! appended to a file ([`jsonl`]), to the OTLP spool and the alert
//! counters (`export`); `observe`'s flows through the [`printer`].

pub mod jsonl;
pub mod printer;

use eastwatch_policy::alert::Alert;
use tracing::warn;

/// Why a sink could not take an alert.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("writing alert: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// Where alerts go: stdout or a file as JSON lines, the OTLP spool.
///
/// `deliver` is quick and local (a write, an append to a spool); a sink
/// that ships alerts elsewhere does so in the background and must never
/// drop one silently: it queues (bounded) and counts and reports what it
/// had to give up.
pub trait AlertSink: Send {
    fn deliver(&mut self, alert: &Alert) -> Result<(), SinkError>;
}

/// Every sink of a command: each alert goes to all of them.
pub struct Sinks {
    sinks: Vec<Box<dyn AlertSink>>,
    errors: u64,
}

impl Sinks {
    pub fn new(sinks: Vec<Box<dyn AlertSink>>) -> Self {
        Self { sinks, errors: 0 }
    }

    /// Hands each alert to every sink; a sink's failure is counted and
    /// logged, and the others still get the alert.
    pub fn deliver(&mut self, alerts: impl IntoIterator<Item = Alert>) {
        for alert in alerts {
            for sink in &mut self.sinks {
                if let Err(err) = sink.deliver(&alert) {
                    self.errors += 1;
                    warn!(%err, "alert sink failed");
                }
            }
        }
    }

    /// Deliveries a sink refused so far.
    pub fn errors(&self) -> u64 {
        self.errors
    }
}
