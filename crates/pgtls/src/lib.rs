//! rustls configurations: the listener's server side, and the client side toward
//! a database or the state store with libpq's `sslmode` semantics
//! (prefer/require encrypt without verifying the server, exactly as libpq does;
//! verify-full checks the chain and the host name).
//!
//! Shared by `proxy` (listener, upstream, admin connections) and `store` (the
//! PostgreSQL state store), so both read `sslmode` the same way.
#![forbid(unsafe_code)]

use config::UpstreamTls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read {what} from {path}: {reason}")]
    Pem {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("unknown sslmode `{0}` (use disable, prefer, require, verify-ca or verify-full)")]
    Mode(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let err = |reason: String| TlsSetupError::Pem {
        what: "certificates",
        path: path.display().to_string(),
        reason,
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate found".into()));
    }
    Ok(certs)
}

/// The listener's TLS configuration from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let certs = read_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsSetupError::Pem {
        what: "private key",
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(cfg))
}

/// The client configuration toward one database, `None` for `disable`.
pub fn client_config(
    mode: UpstreamTls,
    ca_file: Option<&Path>,
) -> Result<Option<Arc<ClientConfig>>, TlsSetupError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let cfg = match mode {
        UpstreamTls::Disable => return Ok(None),
        UpstreamTls::Prefer | UpstreamTls::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider())))
            .with_no_client_auth(),
        UpstreamTls::VerifyFull => {
            let mut roots = RootCertStore::empty();
            match ca_file {
                Some(path) => {
                    for c in read_certs(path)? {
                        roots.add(c)?;
                    }
                }
                None => {
                    for c in rustls_native_certs::load_native_certs().certs {
                        let _ = roots.add(c);
                    }
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(Arc::new(cfg)))
}

/// A libpq-style URL split into what tokio-postgres reads and what it does
/// not: `sslmode` (all of libpq's values; `verify-ca` is checked as
/// `verify-full`, which is stricter) and `sslrootcert`.
#[derive(Debug, PartialEq)]
pub struct UrlTls {
    pub url: String,
    pub mode: UpstreamTls,
    pub root_cert: Option<std::path::PathBuf>,
}

/// Takes `sslmode` and `sslrootcert` out of a `postgres://` URL's query.
/// libpq's default, `prefer`, applies when `sslmode` is absent.
pub fn split_url(url: &str) -> Result<UrlTls, TlsSetupError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut mode = UpstreamTls::Prefer;
    let mut root_cert = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", v)) => {
                mode = match v {
                    "disable" => UpstreamTls::Disable,
                    "allow" | "prefer" => UpstreamTls::Prefer,
                    "require" => UpstreamTls::Require,
                    "verify-ca" | "verify-full" => UpstreamTls::VerifyFull,
                    other => {
                        return Err(TlsSetupError::Mode(other.to_string()));
                    }
                }
            }
            Some(("sslrootcert", v)) => root_cert = Some(v.into()),
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok(UrlTls {
        url,
        mode,
        root_cert,
    })
}

pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsSetupError> {
    ServerName::try_from(host.to_string()).map_err(|e| TlsSetupError::Pem {
        what: "server name",
        path: host.to_string(),
        reason: e.to_string(),
    })
}

/// libpq's `sslmode=require`: encrypt, accept any certificate, but still check
/// that the handshake is signed by the certificate presented.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_root_cert_leave_the_url() {
        let t = split_url(
            "postgres://a@h:5/db?sslmode=verify-ca&application_name=x&sslrootcert=/ca.pem",
        )
        .unwrap();
        assert_eq!(t.url, "postgres://a@h:5/db?application_name=x");
        assert_eq!(t.mode, UpstreamTls::VerifyFull);
        assert_eq!(t.root_cert, Some("/ca.pem".into()));
        let t = split_url("postgres://a@h/db").unwrap();
        assert_eq!(
            (t.url.as_str(), t.mode),
            ("postgres://a@h/db", UpstreamTls::Prefer)
        );
        assert_eq!(
            split_url("postgres://h/db?sslmode=disable").unwrap().mode,
            UpstreamTls::Disable
        );
        assert!(split_url("postgres://h/db?sslmode=sometimes").is_err());
    }
}

pub use tokio_postgres_rustls::MakeRustlsConnect;

/// A `postgres://` URL with libpq's `sslmode`/`sslrootcert`, as tokio-postgres
/// settings and the TLS connector they need: the one way the state store,
/// `jitgate init` and `jitgate doctor` reach a database by URL.
pub fn postgres(url: &str) -> Result<(tokio_postgres::Config, MakeRustlsConnect), UrlError> {
    let split = split_url(url)?;
    let mut config: tokio_postgres::Config = split
        .url
        .parse()
        .map_err(|e: tokio_postgres::Error| UrlError::Url(e.to_string()))?;
    let (mode, tls) = connector(split.mode, split.root_cert.as_deref())?;
    config.ssl_mode(mode);
    Ok((config, tls))
}

/// A configured database's admin connection (`admin_url`), with TLS as its
/// `tls` and `tls_ca_file` say: for `scan`, `policy check --live`, `doctor`.
pub fn admin_connection(
    db: &config::Database,
) -> Result<(tokio_postgres::Config, MakeRustlsConnect), TlsSetupError> {
    let mut config = db.admin().clone();
    let (mode, tls) = connector(db.tls, db.tls_ca_file.as_deref())?;
    config.ssl_mode(mode);
    Ok((config, tls))
}

/// tokio-postgres's mode and the connector for a libpq `sslmode`.
fn connector(
    mode: UpstreamTls,
    root_cert: Option<&Path>,
) -> Result<(tokio_postgres::config::SslMode, MakeRustlsConnect), TlsSetupError> {
    use tokio_postgres::config::SslMode;
    let ssl_mode = match mode {
        UpstreamTls::Disable => SslMode::Disable,
        UpstreamTls::Prefer => SslMode::Prefer,
        _ => SslMode::Require,
    };
    // `disable` never uses it; the others need one.
    let mode = match mode {
        UpstreamTls::Disable => UpstreamTls::Require,
        m => m,
    };
    let tls = client_config(mode, root_cert)?.expect("not disable");
    Ok((ssl_mode, MakeRustlsConnect::new((*tls).clone())))
}

#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("not a PostgreSQL connection URL: {0}")]
    Url(String),
}
