//! TLS and headers for both transports: tonic's own TLS for gRPC, a
//! rustls config (ring, the provider the rest of the agent uses) handed to
//! reqwest for OTLP/HTTP.

use std::{path::Path, str::FromStr as _, sync::Arc};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tonic::{
    metadata::{MetadataKey, MetadataMap, MetadataValue},
    transport::{Certificate, ClientTlsConfig, Identity},
};

use super::{ConfigError, TlsFiles};

fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// `--otlp-header`s as gRPC metadata.
pub fn metadata(headers: &[(String, String)]) -> Result<MetadataMap, ConfigError> {
    let mut map = MetadataMap::new();
    for (key, value) in headers {
        let invalid = |reason: String| ConfigError::Invalid {
            name: format!("--otlp-header {key}"),
            reason,
        };
        let name =
            MetadataKey::from_str(&key.to_ascii_lowercase()).map_err(|e| invalid(e.to_string()))?;
        let value = MetadataValue::try_from(value.as_str()).map_err(|e| invalid(e.to_string()))?;
        map.insert(name, value);
    }
    Ok(map)
}

/// tonic's TLS settings: for https endpoints, the CA (else the system
/// roots) and the client identity.
pub fn tonic_config(
    endpoint: &str,
    files: &TlsFiles,
) -> Result<Option<ClientTlsConfig>, ConfigError> {
    if !endpoint.starts_with("https://") {
        return Ok(None);
    }
    let mut config = ClientTlsConfig::new();
    config = match &files.ca {
        Some(ca) => config.ca_certificate(Certificate::from_pem(read(ca)?)),
        None => config.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&files.client_cert, &files.client_key) {
        config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(Some(config))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::Tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ConfigError::Tls(format!(
            "{}: no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// The rustls client config for OTLP/HTTP: the CA file, else the system's
/// roots; the client certificate when given.
pub fn rustls_config(files: &TlsFiles) -> Result<rustls::ClientConfig, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    match &files.ca {
        Some(ca) => {
            for cert in certificates(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| ConfigError::Tls(format!("{}: {e}", ca.display())))?;
            }
        }
        None => {
            // A minimal image may have none; plain http needs none.
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    match (&files.client_cert, &files.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cert)?;
            let key = PrivateKeyDer::from_pem_slice(&read(key)?)
                .map_err(|e| ConfigError::Tls(format!("{}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ConfigError::Tls(e.to_string()))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// The async HTTP client behind OTLP/HTTP.
pub fn reqwest_client(files: &TlsFiles) -> Result<reqwest::Client, ConfigError> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(rustls_config(files)?)
        .build()
        .map_err(|e| ConfigError::Tls(format!("building the HTTP client: {e}")))
}
