//! Where alerts go: JSON lines on stdout or appended to a file
//! ([`jsonl`]), the OTLP spool and the alert counters (`export`).

pub mod jsonl;

use eastwatch_policy::alert::Alert;

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
