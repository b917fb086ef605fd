//! Where alerts and metrics go: the command-line options every command
//! that exports shares.

use std::{net::SocketAddr, path::PathBuf};

use clap::Args;

use super::{
    otlp::{self, Protocol},
    spool,
};

/// Where alerts and metrics go, shared by `observe`, `learn`, `monitor`
/// and `run`. Without any flag, the standard `OTEL_EXPORTER_OTLP_*`
/// variables still enable and configure export; a flag beats its variable.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// OTLP collector: a gRPC endpoint (http://collector:4317) or an
    /// OTLP/HTTP base URL (http://collector:4318; /v1/logs and /v1/metrics
    /// are appended). Default: OTEL_EXPORTER_OTLP_[LOGS_]ENDPOINT; export is
    /// off when neither is set.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf`. Default: OTEL_EXPORTER_OTLP_[LOGS_]PROTOCOL,
    /// else grpc.
    #[arg(long, value_name = "PROTOCOL", value_parser = Protocol::parse)]
    pub otlp_protocol: Option<Protocol>,
    /// A header (gRPC metadata) sent with every export, e.g.
    /// `authorization=Bearer TOKEN`; repeatable. OTEL_EXPORTER_OTLP_HEADERS
    /// is added too.
    #[arg(long = "otlp-header", value_name = "KEY=VALUE", value_parser = otlp::parse_header)]
    pub otlp_headers: Vec<(String, String)>,
    /// CA certificate(s) (PEM) the collector's certificate must chain to.
    /// Default: OTEL_EXPORTER_OTLP_CERTIFICATE, else the system roots.
    #[arg(long, value_name = "PEM")]
    pub otlp_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS. Default:
    /// OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE.
    #[arg(long, value_name = "PEM", requires = "otlp_client_key")]
    pub otlp_client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM). Default:
    /// OTEL_EXPORTER_OTLP_CLIENT_KEY.
    #[arg(long, value_name = "PEM", requires = "otlp_client_cert")]
    pub otlp_client_key: Option<PathBuf>,
    /// Where alerts wait for the collector (survives restarts).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/eastwatch/spool")]
    pub spool_dir: PathBuf,
    /// Disk the spool may use; past it new alerts are counted as dropped
    /// and a visibility-gap alert follows once there is room again.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20, value_parser = spool_bytes)]
    pub spool_max_bytes: u64,
    /// Liveness (/healthz) and readiness (/readyz) over HTTP; loopback
    /// unless you say otherwise. `off` disables them. An address that
    /// cannot be bound (taken, not local) stops the agent at start-up.
    #[arg(
        long,
        value_name = "ADDR",
        env = "EASTWATCH_HEALTH_LISTEN",
        default_value = "127.0.0.1:9090",
        value_parser = health_listen
    )]
    pub health_listen: HealthListen,
}

fn spool_bytes(text: &str) -> Result<u64, String> {
    let bytes: u64 = text.parse().map_err(|e| format!("{e}"))?;
    if bytes < spool::MIN_BYTES {
        return Err(format!("must be at least {}", spool::MIN_BYTES));
    }
    Ok(bytes)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthListen {
    Off,
    On(SocketAddr),
}

fn health_listen(text: &str) -> Result<HealthListen, String> {
    if text == "off" {
        return Ok(HealthListen::Off);
    }
    text.parse()
        .map(HealthListen::On)
        .map_err(|e| format!("{e}: an address such as 127.0.0.1:9090, or off"))
}

impl Default for ExportArgs {
    /// Export off (unless the environment says otherwise), health off.
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            otlp_protocol: None,
            otlp_headers: Vec::new(),
            otlp_ca: None,
            otlp_client_cert: None,
            otlp_client_key: None,
            spool_dir: PathBuf::from("/var/lib/eastwatch/spool"),
            spool_max_bytes: 64 << 20,
            health_listen: HealthListen::Off,
        }
    }
}
