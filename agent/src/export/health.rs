//! Liveness and readiness over HTTP (loopback by default).
//!
//! - `/healthz`: live while the main loop keeps turning (it beats at least
//!   every second; [`STALL`] without a beat is a hung agent).
//! - `/readyz`: ready once the kernel programs are attached and the
//!   baseline (if any) is loaded; until then, and after shutdown starts,
//!   503. An unreachable collector does not make the agent unready: alerts
//!   wait in the spool, and the metrics say so.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use axum::{Router, extract::State, http::StatusCode, routing::get};
use tracing::{info, warn};

/// How long the main loop may go without a beat before liveness fails.
pub const STALL: Duration = Duration::from_secs(30);

pub struct Health {
    started: Instant,
    /// Milliseconds since `started` at the last beat.
    beat: AtomicU64,
    ready: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            beat: AtomicU64::new(0),
            ready: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The main loop is turning.
    pub fn beat(&self) {
        self.beat.store(self.now_ms(), Ordering::Relaxed);
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
        self.beat();
    }

    pub fn is_live(&self) -> bool {
        let since = self
            .now_ms()
            .saturating_sub(self.beat.load(Ordering::Relaxed));
        Duration::from_millis(since) < STALL
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.is_live()
    }
}

async fn live(State(health): State<Arc<Health>>) -> (StatusCode, &'static str) {
    if health.is_live() {
        (StatusCode::OK, "live\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "main loop stalled\n")
    }
}

async fn ready(State(health): State<Arc<Health>>) -> (StatusCode, &'static str) {
    if health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Serves the endpoints on `addr`; returns the bound address (port 0 picks
/// one).
pub async fn serve(addr: SocketAddr, health: Arc<Health>) -> anyhow::Result<SocketAddr> {
    if !addr.ip().is_loopback() {
        warn!(%addr, "health endpoints listen beyond loopback, as configured");
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("health endpoints: binding {addr}"))?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(live))
        .route("/readyz", get(ready))
        .with_state(health);
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            warn!(%err, "health endpoints stopped");
        }
    });
    info!(%bound, "health endpoints: /healthz, /readyz");
    Ok(bound)
}

/// `eastwatch probe`: GETs a health URL; success only on 200. For exec
/// probes in pods without host networking (the kubelet cannot reach the
/// pod's loopback).
pub async fn probe(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .tls_backend_preconfigured(
            super::otlp::tls_config_for_probe()
                .map_err(|e| anyhow::anyhow!("probe TLS setup: {e}"))?,
        )
        .build()
        .context("building the probe client")?;
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    anyhow::ensure!(status.is_success(), "GET {url}: {status}");
    Ok(())
}
