//! OTLP configuration (flags and the standard environment variables), the
//! exporters of the official opentelemetry-otlp crate, TLS and the
//! resource.
//!
//! What the crate reads itself: `OTEL_EXPORTER_OTLP_[SIGNAL_]TIMEOUT`,
//! `_HEADERS`, `_COMPRESSION`, `_INSECURE` (schemeless gRPC endpoints) and
//! `OTEL_METRIC_EXPORT_INTERVAL`/`_TIMEOUT`. What eastwatch reads here,
//! because it picks the transport and needs to know whether export is on:
//! `_ENDPOINT`, `_PROTOCOL`, `_CERTIFICATE`, `_CLIENT_CERTIFICATE`,
//! `_CLIENT_KEY`, `OTEL_SDK_DISABLED`, `OTEL_SERVICE_NAME` and
//! `OTEL_RESOURCE_ATTRIBUTES`.

pub mod record;
mod tls;

use std::{fmt, path::PathBuf};

use opentelemetry::KeyValue;
use opentelemetry_otlp::{
    LogExporter, MetricExporter, RetryPolicy, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::{
    Resource,
    logs::LogExporter as _,
    metrics::{SdkMeterProvider, periodic_reader_with_async_runtime::PeriodicReader},
    resource::EnvResourceDetector,
    runtime,
};

use super::ExportArgs;
use crate::identity::Site;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Tls(String),
    #[error("building the exporter: {0}")]
    Build(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            other => Err(format!(
                "unsupported OTLP protocol {other:?}: grpc or http/protobuf"
            )),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        })
    }
}

/// `KEY=VALUE` of `--otlp-header`.
pub fn parse_header(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| "expected KEY=VALUE".to_owned())?;
    let key = key.trim();
    if key.is_empty() {
        return Err("empty header name".into());
    }
    Ok((key.to_owned(), value.trim().to_owned()))
}

/// TLS files for one signal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl TlsFiles {
    fn any(&self) -> bool {
        self.ca.is_some() || self.client_cert.is_some() || self.client_key.is_some()
    }
}

/// Where one signal (logs or metrics) goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalSettings {
    pub protocol: Protocol,
    /// The full URL: for OTLP/HTTP with the signal's path.
    pub endpoint: String,
    pub tls: TlsFiles,
}

/// Export settings after flags and environment are combined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// Alerts; None when only metrics have an endpoint.
    pub logs: Option<SignalSettings>,
    /// Metrics; None when only alerts have an endpoint.
    pub metrics: Option<SignalSettings>,
    /// Headers from the flags (the crate adds `OTEL_EXPORTER_OTLP_HEADERS`).
    pub headers: Vec<(String, String)>,
}

/// Looks up an environment variable (a function so tests can pass theirs).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment; empty values count as unset, as the spec says.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

#[derive(Clone, Copy)]
enum Signal {
    Logs,
    Metrics,
}

impl Signal {
    fn var(self, suffix: &str) -> String {
        let signal = match self {
            Self::Logs => "LOGS",
            Self::Metrics => "METRICS",
        };
        format!("OTEL_EXPORTER_OTLP_{signal}_{suffix}")
    }

    fn path(self) -> &'static str {
        match self {
            Self::Logs => "/v1/logs",
            Self::Metrics => "/v1/metrics",
        }
    }
}

/// `base` + the signal's path, as the spec builds OTLP/HTTP URLs.
fn with_path(base: &str, signal: Signal) -> String {
    format!("{}{}", base.trim_end_matches('/'), signal.path())
}

impl OtlpSettings {
    /// Flags first, then the signal's variable, then the generic one.
    /// None: export is off (no endpoint anywhere, or `OTEL_SDK_DISABLED`).
    pub fn resolve(args: &ExportArgs, env: Env<'_>) -> Result<Option<Self>, ConfigError> {
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let logs = Self::signal(args, env, Signal::Logs)?;
        let metrics = Self::signal(args, env, Signal::Metrics)?;
        if logs.is_none() && metrics.is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            logs,
            metrics,
            headers: args.otlp_headers.clone(),
        }))
    }

    fn signal(
        args: &ExportArgs,
        env: Env<'_>,
        signal: Signal,
    ) -> Result<Option<SignalSettings>, ConfigError> {
        let protocol = match args.otlp_protocol {
            Some(protocol) => protocol,
            None => {
                let named = env(&signal.var("PROTOCOL"))
                    .map(|v| (signal.var("PROTOCOL"), v))
                    .or_else(|| {
                        env("OTEL_EXPORTER_OTLP_PROTOCOL")
                            .map(|v| ("OTEL_EXPORTER_OTLP_PROTOCOL".to_owned(), v))
                    });
                match named {
                    Some((name, value)) => Protocol::parse(value.trim())
                        .map_err(|reason| ConfigError::Invalid { name, reason })?,
                    None => Protocol::Grpc,
                }
            }
        };
        let base_to_url = |base: &str| match protocol {
            Protocol::Grpc => base.to_owned(),
            Protocol::HttpProtobuf => with_path(base, signal),
        };
        let endpoint = match &args.otlp_endpoint {
            Some(flag) => Some(base_to_url(flag)),
            // A signal's own variable is the full URL.
            None => env(&signal.var("ENDPOINT"))
                .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT").map(|base| base_to_url(&base))),
        };
        let Some(endpoint) = endpoint else {
            return Ok(None);
        };
        let file = |flag: &Option<PathBuf>, suffix: &str| {
            flag.clone().or_else(|| {
                env(&signal.var(suffix))
                    .or_else(|| env(&format!("OTEL_EXPORTER_OTLP_{suffix}")))
                    .map(PathBuf::from)
            })
        };
        let tls = TlsFiles {
            ca: file(&args.otlp_ca, "CERTIFICATE"),
            client_cert: file(&args.otlp_client_cert, "CLIENT_CERTIFICATE"),
            client_key: file(&args.otlp_client_key, "CLIENT_KEY"),
        };
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            return Err(ConfigError::Invalid {
                name: "mutual TLS".into(),
                reason: "a client certificate needs its key and the other way round".into(),
            });
        }
        if tls.any() && endpoint.starts_with("http://") {
            return Err(ConfigError::Invalid {
                name: "endpoint".into(),
                reason: format!(
                    "{endpoint} is plain http but TLS files are configured: use https://"
                ),
            });
        }
        Ok(Some(SignalSettings {
            protocol,
            endpoint,
            tls,
        }))
    }
}

/// A client TLS config with the system roots (for `eastwatch probe`).
pub fn tls_config_for_probe() -> Result<rustls::ClientConfig, ConfigError> {
    tls::rustls_config(&TlsFiles::default())
}

/// The log exporter the spool drives. Retries are the spool's job, so the
/// exporter makes one attempt per call.
pub fn log_exporter(
    settings: &SignalSettings,
    headers: &[(String, String)],
    resource: &Resource,
) -> Result<LogExporter, ConfigError> {
    let mut exporter = match settings.protocol {
        Protocol::Grpc => over_grpc(LogExporter::builder().with_tonic(), settings, headers)?
            .with_retry_policy(RetryPolicy::disabled())
            .build()?,
        Protocol::HttpProtobuf => over_http(LogExporter::builder().with_http(), settings, headers)?
            .with_retry_policy(RetryPolicy::disabled())
            .build()?,
    };
    exporter.set_resource(resource);
    Ok(exporter)
}

/// The metrics pipeline: the SDK's meter provider with a periodic reader
/// on the tokio runtime (`OTEL_METRIC_EXPORT_INTERVAL`, default 60 s).
pub fn meter_provider(
    settings: &SignalSettings,
    headers: &[(String, String)],
    resource: Resource,
) -> Result<SdkMeterProvider, ConfigError> {
    let exporter = match settings.protocol {
        Protocol::Grpc => {
            over_grpc(MetricExporter::builder().with_tonic(), settings, headers)?.build()?
        }
        Protocol::HttpProtobuf => {
            over_http(MetricExporter::builder().with_http(), settings, headers)?.build()?
        }
    };
    let reader = PeriodicReader::builder(exporter, runtime::Tokio).build();
    Ok(SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(reader)
        .build())
}

/// OTLP/gRPC to `settings`' endpoint, for either signal's exporter.
fn over_grpc<B: WithExportConfig + WithTonicConfig>(
    builder: B,
    settings: &SignalSettings,
    headers: &[(String, String)],
) -> Result<B, ConfigError> {
    let builder = builder
        .with_endpoint(settings.endpoint.clone())
        .with_metadata(tls::metadata(headers)?);
    Ok(
        match tls::tonic_config(&settings.endpoint, &settings.tls)? {
            Some(config) => builder.with_tls_config(config),
            None => builder,
        },
    )
}

/// OTLP/HTTP (protobuf) to `settings`' endpoint, for either signal's
/// exporter.
fn over_http<B: WithExportConfig + WithHttpConfig>(
    builder: B,
    settings: &SignalSettings,
    headers: &[(String, String)],
) -> Result<B, ConfigError> {
    Ok(builder
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(settings.endpoint.clone())
        .with_headers(headers.iter().cloned().collect())
        .with_http_client(tls::reqwest_client(&settings.tls)?))
}

/// The resource every record carries. eastwatch's defaults first, then
/// `OTEL_RESOURCE_ATTRIBUTES`, then `OTEL_SERVICE_NAME`: the environment
/// wins.
pub fn resource(site: &Site, env: Env<'_>) -> Resource {
    let mut defaults = vec![
        KeyValue::new("service.name", "eastwatch"),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("os.type", "linux"),
    ];
    if let Some(host) = &site.host {
        defaults.push(KeyValue::new("host.name", host.clone()));
    }
    if let Some(instance) = site.node_or_host() {
        defaults.push(KeyValue::new("service.instance.id", instance));
    }
    if let Some(node) = &site.node {
        defaults.push(KeyValue::new("k8s.node.name", node.clone()));
    }
    if let Some(cluster) = &site.cluster {
        defaults.push(KeyValue::new("k8s.cluster.name", cluster.clone()));
    }
    let mut builder = Resource::builder_empty()
        .with_attributes(defaults)
        .with_detector(Box::new(EnvResourceDetector::new()));
    if let Some(service) = env("OTEL_SERVICE_NAME") {
        builder = builder.with_service_name(service);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn resolve(args: &ExportArgs, vars: &[(&str, &str)]) -> Result<Option<OtlpSettings>, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = move |name: &str| vars.get(name).cloned();
        OtlpSettings::resolve(args, &env).map_err(|e| e.to_string())
    }

    #[test]
    fn nothing_set_means_no_export() {
        assert_eq!(resolve(&ExportArgs::default(), &[]), Ok(None));
    }

    #[test]
    fn the_environment_alone_enables_export() {
        let settings = resolve(
            &ExportArgs::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE", "/ca.pem"),
            ],
        );
        // TLS files on a plain http endpoint are refused.
        assert!(settings.unwrap_err().contains("plain http"));
        let settings = resolve(
            &ExportArgs::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318/"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE", "/ca.pem"),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/other.pem"),
            ],
        )
        .unwrap()
        .unwrap();
        let logs = settings.logs.unwrap();
        assert_eq!(logs.endpoint, "https://collector:4318/v1/logs");
        assert_eq!(logs.protocol, Protocol::HttpProtobuf);
        assert_eq!(logs.tls.ca, Some(PathBuf::from("/ca.pem")));
        let metrics = settings.metrics.unwrap();
        assert_eq!(metrics.endpoint, "https://collector:4318/v1/metrics");
        assert_eq!(metrics.tls.ca, Some(PathBuf::from("/other.pem")));
    }

    #[test]
    fn signal_variables_are_full_urls_and_flags_win() {
        let vars = [
            (
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                "http://logs:9999/custom",
            ),
            ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/protobuf"),
        ];
        let settings = resolve(&ExportArgs::default(), &vars).unwrap().unwrap();
        assert_eq!(settings.logs.unwrap().endpoint, "http://logs:9999/custom");
        assert_eq!(settings.metrics, None);

        let args = ExportArgs {
            otlp_endpoint: Some("http://flag:4317".into()),
            otlp_protocol: Some(Protocol::Grpc),
            ..ExportArgs::default()
        };
        let settings = resolve(&args, &vars).unwrap().unwrap();
        let logs = settings.logs.unwrap();
        assert_eq!(logs.endpoint, "http://flag:4317");
        assert_eq!(logs.protocol, Protocol::Grpc);
    }

    #[test]
    fn bad_values_name_their_source() {
        let err = resolve(
            &ExportArgs::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ],
        )
        .unwrap_err();
        assert!(err.starts_with("OTEL_EXPORTER_OTLP_PROTOCOL:"), "{err}");
        assert_eq!(
            resolve(
                &ExportArgs::default(),
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                    ("OTEL_SDK_DISABLED", "true")
                ]
            ),
            Ok(None)
        );
        assert!(parse_header("novalue").is_err());
        assert_eq!(
            parse_header("authorization=Bearer a=b"),
            Ok(("authorization".into(), "Bearer a=b".into()))
        );
    }

    #[test]
    fn the_environment_overrides_resource_defaults() {
        let site = Site {
            host: Some("h1".into()),
            node: Some("node-1".into()),
            cluster: None,
        };
        let env = |name: &str| (name == "OTEL_SERVICE_NAME").then(|| "soc-eastwatch".to_owned());
        let resource = resource(&site, &env);
        let get = |key: &str| {
            resource
                .get(&opentelemetry::Key::from(key.to_owned()))
                .map(|v| v.to_string())
        };
        assert_eq!(get("service.name").as_deref(), Some("soc-eastwatch"));
        assert_eq!(get("k8s.node.name").as_deref(), Some("node-1"));
        assert_eq!(get("host.name").as_deref(), Some("h1"));
        assert_eq!(get("k8s.cluster.name"), None);
    }
}
