//! The process signals the agent answers, the same in every mode:
//! SIGINT and SIGTERM stop it (cleanly: the last flows are judged, the
//! spool drains, the summary is printed); SIGUSR1 toggles the kernel
//! programs' diagnostics.

use tokio::signal::unix::{SignalKind, signal};

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Stop,
    ToggleDiagnostics,
}

/// The installed handlers. Install them before the agent says it is
/// ready: from then on a signal is queued for [`Signals::recv`], where
/// before it would have killed the process.
pub struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    toggle: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            toggle: signal(SignalKind::user_defined1())?,
        })
    }

    /// The next signal.
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.interrupt.recv() => Signal::Stop,
            _ = self.terminate.recv() => Signal::Stop,
            _ = self.toggle.recv() => Signal::ToggleDiagnostics,
        }
    }
}
