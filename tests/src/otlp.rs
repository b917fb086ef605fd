//! Real OTLP receivers for the tests (and the demo): OTLP/gRPC served with
//! tonic from opentelemetry-proto's server stubs, and OTLP/HTTP (protobuf
//! POST /v1/logs and /v1/metrics) decoded with the same proto types. Both
//! listen on 127.0.0.1 only. A collector can go down and come back on the
//! same port, keeping what it received.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, routing::post};
use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::{
            ExportLogsServiceRequest, ExportLogsServiceResponse,
            logs_service_server::{LogsService, LogsServiceServer},
        },
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
    },
    common::v1::{AnyValue, KeyValue, any_value},
    logs::v1::LogRecord,
    metrics::v1::metric,
};
use prost::Message as _;
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Http,
}

/// One log record as received, with its resource and scope.
#[derive(Debug, Clone)]
pub struct ReceivedLog {
    pub received: SystemTime,
    pub resource: BTreeMap<String, String>,
    pub scope: String,
    pub record: LogRecord,
    /// Request headers (gRPC metadata), lower-case names.
    pub headers: BTreeMap<String, String>,
}

impl ReceivedLog {
    /// An attribute as text (ints and bools printed).
    pub fn attr(&self, key: &str) -> Option<String> {
        self.record
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .map(text)
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        self.record
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::IntValue(i) => Some(*i),
                _ => None,
            })
    }

    pub fn body(&self) -> String {
        self.record.body.as_ref().map(text).unwrap_or_default()
    }

    pub fn event_name(&self) -> &str {
        &self.record.event_name
    }
}

/// One metric data point's attributes, as received.
#[derive(Debug, Clone)]
pub struct ReceivedPoint {
    pub metric: String,
    pub attributes: BTreeMap<String, String>,
    /// Sum or gauge value (integers).
    pub value: i64,
    pub resource: BTreeMap<String, String>,
}

/// Any value as text.
pub fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn map(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(text).unwrap_or_default(),
            )
        })
        .collect()
}

#[derive(Default)]
struct Received {
    logs: Vec<ReceivedLog>,
    points: Vec<ReceivedPoint>,
    log_requests: u64,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Received>>);

impl Shared {
    fn logs(&self, request: ExportLogsServiceRequest, headers: BTreeMap<String, String>) {
        let now = SystemTime::now();
        let mut received = self.0.lock().expect("receiver lock");
        received.log_requests += 1;
        for resource_logs in request.resource_logs {
            let resource = resource_logs
                .resource
                .map(|r| map(&r.attributes))
                .unwrap_or_default();
            for scope_logs in resource_logs.scope_logs {
                let scope = scope_logs.scope.map(|s| s.name).unwrap_or_default();
                for record in scope_logs.log_records {
                    received.logs.push(ReceivedLog {
                        received: now,
                        resource: resource.clone(),
                        scope: scope.clone(),
                        record,
                        headers: headers.clone(),
                    });
                }
            }
        }
    }

    fn metrics(&self, request: ExportMetricsServiceRequest) {
        let mut received = self.0.lock().expect("receiver lock");
        for resource_metrics in request.resource_metrics {
            let resource = resource_metrics
                .resource
                .map(|r| map(&r.attributes))
                .unwrap_or_default();
            for scope in resource_metrics.scope_metrics {
                for m in scope.metrics {
                    let points: Vec<(BTreeMap<String, String>, i64)> = match &m.data {
                        Some(metric::Data::Sum(sum)) => sum
                            .data_points
                            .iter()
                            .map(|p| (map(&p.attributes), number(&p.value)))
                            .collect(),
                        Some(metric::Data::Gauge(gauge)) => gauge
                            .data_points
                            .iter()
                            .map(|p| (map(&p.attributes), number(&p.value)))
                            .collect(),
                        _ => Vec::new(),
                    };
                    for (attributes, value) in points {
                        received.points.push(ReceivedPoint {
                            metric: m.name.clone(),
                            attributes,
                            value,
                            resource: resource.clone(),
                        });
                    }
                }
            }
        }
    }
}

fn number(
    value: &Option<opentelemetry_proto::tonic::metrics::v1::number_data_point::Value>,
) -> i64 {
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
    match value {
        Some(Value::AsInt(i)) => *i,
        Some(Value::AsDouble(d)) => *d as i64,
        None => 0,
    }
}

struct Grpc(Shared);

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let headers = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        self.0.logs(request.into_inner(), headers);
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.metrics(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn http_router(shared: Shared) -> Router {
    Router::new()
        .route("/v1/logs", post(http_logs))
        .route("/v1/metrics", post(http_metrics))
        .with_state(shared)
}

/// OTLP/HTTP over TLS: each accepted connection is a TLS session (client
/// certificate required) served by hyper with the same router.
async fn serve_https(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    mut stopped: oneshot::Receiver<()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    eprintln!("collector (HTTPS): accept: {e}");
                    continue;
                }
            },
            _ = &mut stopped => return,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(stream) => stream,
                Err(e) => {
                    eprintln!("collector (HTTPS): handshake: {e}");
                    return;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
        });
    }
}

fn protobuf(bytes: Vec<u8>) -> ([(axum::http::HeaderName, &'static str); 1], Vec<u8>) {
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
        bytes,
    )
}

async fn http_logs(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl axum::response::IntoResponse, axum::http::StatusCode> {
    let request =
        ExportLogsServiceRequest::decode(body).map_err(|_| axum::http::StatusCode::BAD_REQUEST)?;
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    shared.logs(request, headers);
    Ok(protobuf(
        ExportLogsServiceResponse::default().encode_to_vec(),
    ))
}

async fn http_metrics(
    State(shared): State<Shared>,
    body: Bytes,
) -> Result<impl axum::response::IntoResponse, axum::http::StatusCode> {
    let request = ExportMetricsServiceRequest::decode(body)
        .map_err(|_| axum::http::StatusCode::BAD_REQUEST)?;
    shared.metrics(request);
    Ok(protobuf(
        ExportMetricsServiceResponse::default().encode_to_vec(),
    ))
}

/// PEM files for mutual TLS, made for one test: a CA, a server
/// certificate for 127.0.0.1 and a client certificate, both signed by it.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TlsFiles {
    pub fn generate(dir: &Path) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "eastwatch test CA");
        let ca_key = KeyPair::generate().expect("ca key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>, ip: bool| {
            let mut params = CertificateParams::new(names).expect("params");
            if ip {
                params
                    .subject_alt_names
                    .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
            }
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &issuer).expect("sign");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(vec!["localhost".into()], true);
        let (client_cert, client_key) = leaf(vec!["eastwatch-agent".into()], false);
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        Self {
            ca: write("ca.pem", &ca_cert.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server-key.pem", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client-key.pem", &client_key),
        }
    }

    fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).expect("read PEM")
    }

    /// The server side for rustls: our certificate, client certificates
    /// required and checked against the CA.
    fn rustls_server(&self) -> rustls::ServerConfig {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&Self::read(&self.ca)) {
            roots.add(cert.expect("ca")).expect("add ca");
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .build()
        .expect("client verifier");
        let chain = CertificateDer::pem_slice_iter(&Self::read(&self.server_cert))
            .collect::<Result<Vec<_>, _>>()
            .expect("server chain");
        let key = PrivateKeyDer::from_pem_slice(&Self::read(&self.server_key)).expect("key");
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .expect("server config");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }
}

/// A collector on 127.0.0.1 that can be taken down and brought back.
pub struct Collector {
    protocol: Protocol,
    addr: SocketAddr,
    shared: Shared,
    runtime: tokio::runtime::Runtime,
    server: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    tls: Option<Arc<rustls::ServerConfig>>,
    grpc_tls: Option<tonic::transport::ServerTlsConfig>,
    /// The port, while down.
    held: Option<tokio::net::TcpSocket>,
}

/// A socket on `addr` that can share its port with the collector's own
/// listener (SO_REUSEPORT), so the port stays the collector's while down.
fn port_holder(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

impl Collector {
    /// Starts a receiver on a free loopback port.
    pub fn start(protocol: Protocol) -> Self {
        Self::start_with(protocol, None)
    }

    /// Starts a receiver that speaks TLS and requires a client certificate
    /// signed by the files' CA.
    pub fn start_tls(protocol: Protocol, files: &TlsFiles) -> Self {
        Self::start_with(protocol, Some(files))
    }

    fn start_with(protocol: Protocol, files: Option<&TlsFiles>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("receiver runtime");
        let mut collector = Self {
            protocol,
            addr: "127.0.0.1:0".parse().expect("addr"),
            shared: Shared::default(),
            runtime,
            server: None,
            held: None,
            tls: files.map(|f| Arc::new(f.rustls_server())),
            grpc_tls: files.map(|f| {
                use tonic::transport::{Certificate, Identity, ServerTlsConfig};
                ServerTlsConfig::new()
                    .identity(Identity::from_pem(
                        TlsFiles::read(&f.server_cert),
                        TlsFiles::read(&f.server_key),
                    ))
                    .client_ca_root(Certificate::from_pem(TlsFiles::read(&f.ca)))
            }),
        };
        collector.up();
        collector
    }

    /// The URL to give the agent (`--otlp-endpoint`).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn protocol_flag(&self) -> &'static str {
        match self.protocol {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http/protobuf",
        }
    }

    /// Serves again (on the same port once it had one).
    pub fn up(&mut self) {
        assert!(self.server.is_none(), "collector already up");
        let held = self.held.take();
        let addr = self.addr;
        let listener = self.runtime.block_on(async {
            let socket = match held {
                Some(socket) => socket,
                None => port_holder(addr).expect("collector socket"),
            };
            socket.listen(1024).expect("collector listen")
        });
        self.addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let shared = self.shared.clone();
        let grpc_tls = self.grpc_tls.clone();
        let https = self.tls.clone();
        let task = match (self.protocol, https) {
            (Protocol::Http, Some(tls)) => {
                self.runtime
                    .spawn(serve_https(listener, tls, http_router(shared), stopped))
            }
            (Protocol::Grpc, _) => self.runtime.spawn(async move {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let mut builder = tonic::transport::Server::builder();
                if let Some(tls) = grpc_tls {
                    builder = builder.tls_config(tls).expect("server TLS");
                }
                let result = builder
                    .add_service(LogsServiceServer::new(Grpc(shared.clone())))
                    .add_service(MetricsServiceServer::new(Grpc(shared)))
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    })
                    .await;
                if let Err(e) = result {
                    eprintln!("collector (gRPC) stopped: {e}");
                }
            }),
            (Protocol::Http, None) => self.runtime.spawn(async move {
                let app = http_router(shared);
                let result = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
                if let Err(e) = result {
                    eprintln!("collector (HTTP) stopped: {e}");
                }
            }),
        };
        self.server = Some((stop, task));
    }

    /// Stops serving: the port refuses connections until [`Collector::up`].
    pub fn down(&mut self) {
        let Some((stop, task)) = self.server.take() else {
            return;
        };
        // Keep the port (bound, not listening: connections are refused), so
        // nothing else on the machine takes it before `up`.
        self.held = Some(port_holder(self.addr).expect("hold the collector's port"));
        let _ = stop.send(());
        // Graceful shutdown waits for open connections; don't wait long.
        let _ = self
            .runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await });
    }

    /// Every log record received so far.
    pub fn logs(&self) -> Vec<ReceivedLog> {
        self.shared.0.lock().expect("receiver lock").logs.clone()
    }

    /// Every metric data point received so far.
    pub fn points(&self) -> Vec<ReceivedPoint> {
        self.shared.0.lock().expect("receiver lock").points.clone()
    }

    /// Waits until `done` holds for the logs received.
    pub fn wait_logs(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedLog]) -> bool,
    ) -> Vec<ReceivedLog> {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.logs();
            if done(&logs) || Instant::now() >= deadline {
                return logs;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `done` holds for the metric points received.
    pub fn wait_points(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedPoint]) -> bool,
    ) -> Vec<ReceivedPoint> {
        let deadline = Instant::now() + timeout;
        loop {
            let points = self.points();
            if done(&points) || Instant::now() >= deadline {
                return points;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.down();
    }
}
