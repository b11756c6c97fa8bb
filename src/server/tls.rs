//! Serving TLS: certificates from files (reloaded when they change, so cert-manager
//! renewals take effect for new connections without a restart) or generated
//! self-signed into `--cert-dir`; ALPN h2 and http/1.1.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::pki::CertificateAuthority;

/// Why serving TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Generating a self-signed certificate failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(String),
    /// rustls rejected the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Where the serving certificate comes from.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
}

/// Loads a certificate chain and key from PEM files into a rustls `CertifiedKey`.
pub fn load_certified_key(files: &CertFiles) -> Result<CertifiedKey, TlsError> {
    let err = |path: &Path, message: String| TlsError::File {
        path: path.display().to_string(),
        message,
    };
    let cert_pem = std::fs::read(&files.cert).map_err(|e| err(&files.cert, e.to_string()))?;
    let key_pem = std::fs::read(&files.key).map_err(|e| err(&files.key, e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| err(&files.cert, format!("not a PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(err(&files.cert, "no certificate found in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| err(&files.key, format!("not a PEM private key: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| err(&files.key, format!("certificate and key do not match: {e}")))
}

/// Generates a CA and a serving certificate into `dir` unless `apiserver.crt` and
/// `apiserver.key` already exist there (as metrics-server does with `--cert-dir`).
/// Returns the file pair and the CA PEM when one was generated.
pub fn ensure_self_signed(
    dir: &Path,
    sans: &[String],
) -> Result<(CertFiles, Option<String>), TlsError> {
    let files = CertFiles {
        cert: dir.join("apiserver.crt"),
        key: dir.join("apiserver.key"),
    };
    if files.cert.exists() && files.key.exists() {
        return Ok((files, None));
    }
    std::fs::create_dir_all(dir).map_err(|e| TlsError::File {
        path: dir.display().to_string(),
        message: format!("cannot create --cert-dir: {e}"),
    })?;
    let stamp = jiff::Timestamp::now().as_second();
    let ca = CertificateAuthority::new(&format!("kubedojo-data-api-ca@{stamp}"))
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let pair = ca
        .serving_cert(&format!("kubedojo-data-api@{stamp}"), sans)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let write = |path: &Path, body: &str| {
        std::fs::write(path, body).map_err(|e| TlsError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    };
    write(&files.cert, &format!("{}{}", pair.cert_pem, ca.cert_pem))?;
    write(&files.key, &pair.key_pem)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600));
    }
    write(&dir.join("ca.crt"), &ca.cert_pem)?;
    Ok((files, Some(ca.cert_pem)))
}

/// The default SANs of a self-signed serving certificate.
pub fn default_sans(extra: &[String]) -> Vec<String> {
    let mut sans = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "kubedojo-data-api".to_string(),
        "kubedojo-data-api.kube-system".to_string(),
        "kubedojo-data-api.kube-system.svc".to_string(),
        "kubedojo-data-api.kube-system.svc.cluster.local".to_string(),
    ];
    for s in extra {
        if !sans.contains(s) {
            sans.push(s.clone());
        }
    }
    sans
}

/// SANs for the Service named by `SERVICE_NAME` in `POD_NAMESPACE` (both set by the
/// manifests through the downward API or plain env), empty when either is unset.
pub fn service_sans(service: Option<&str>, namespace: Option<&str>) -> Vec<String> {
    match (service, namespace) {
        (Some(svc), Some(ns)) if !svc.is_empty() && !ns.is_empty() => vec![
            svc.to_string(),
            format!("{svc}.{ns}"),
            format!("{svc}.{ns}.svc"),
            format!("{svc}.{ns}.svc.cluster.local"),
        ],
        _ => Vec::new(),
    }
}

/// Serves the current certificate and swaps in a new one when the files change.
#[derive(Debug)]
pub struct ReloadingCert {
    files: CertFiles,
    current: ArcSwap<CertifiedKey>,
    stamp: std::sync::Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ReloadingCert {
    /// Loads the files now; fails when they are unusable.
    pub fn new(files: CertFiles) -> Result<Arc<Self>, TlsError> {
        let key = load_certified_key(&files)?;
        let stamp = (modified(&files.cert), modified(&files.key));
        Ok(Arc::new(ReloadingCert {
            files,
            current: ArcSwap::from_pointee(key),
            stamp: std::sync::Mutex::new(stamp),
        }))
    }

    /// Re-reads the files if their modification times changed. A broken pair (e.g. a
    /// half-written renewal) keeps the old certificate and is retried next time.
    pub fn reload_if_changed(&self) -> bool {
        let now = (modified(&self.files.cert), modified(&self.files.key));
        let mut stamp = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if *stamp == now {
            return false;
        }
        match load_certified_key(&self.files) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                *stamp = now;
                tracing::info!(cert = %self.files.cert.display(), "serving certificate reloaded");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "serving certificate changed but cannot be loaded yet; keeping the old one");
                false
            }
        }
    }

    /// The certificate served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// Polls the files every `interval` until the task is dropped.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            self.reload_if_changed();
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Minimum TLS version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MinTlsVersion {
    /// TLS 1.2 (default).
    #[default]
    Tls12,
    /// TLS 1.3.
    Tls13,
}

impl std::str::FromStr for MinTlsVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "VersionTLS12" | "1.2" | "TLS12" => Ok(MinTlsVersion::Tls12),
            "VersionTLS13" | "1.3" | "TLS13" => Ok(MinTlsVersion::Tls13),
            "VersionTLS10" | "VersionTLS11" => {
                Err(format!("{s} is not supported: the minimum is VersionTLS12"))
            }
            _ => Err(format!(
                "unknown TLS version {s:?}: use VersionTLS12 or VersionTLS13"
            )),
        }
    }
}

/// Builds the rustls server configuration with ALPN h2 + http/1.1.
pub fn server_config(
    cert: Arc<dyn ResolvesServerCert>,
    client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    min_version: MinTlsVersion,
) -> Result<rustls::ServerConfig, TlsError> {
    server_config_with_suites(cert, client_verifier, min_version, None)
}

/// Like [`server_config`], restricted to `suites` (`--tls-cipher-suites`) when given.
pub fn server_config_with_suites(
    cert: Arc<dyn ResolvesServerCert>,
    client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    min_version: MinTlsVersion,
    suites: Option<Vec<rustls::SupportedCipherSuite>>,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(suites) = suites {
        provider.cipher_suites = suites;
    }
    let provider = Arc::new(provider);
    let versions: &[&'static rustls::SupportedProtocolVersion] = match min_version {
        MinTlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinTlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = match client_verifier {
        Some(v) => builder
            .with_client_cert_verifier(v)
            .with_cert_resolver(cert),
        None => builder.with_no_client_auth().with_cert_resolver(cert),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Builds a rustls `CertifiedKey` from in-memory PEM.
pub fn certified_key_from_pem(cert_pem: &str, key_pem: &str) -> Result<CertifiedKey, TlsError> {
    let err = |message: String| TlsError::File {
        path: "<in memory>".into(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| err(e.to_string()))?;
    CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
        .map_err(|e| err(e.to_string()))
}

/// A fixed serving certificate (demo mode, tests).
#[derive(Debug)]
pub struct StaticCert(pub Arc<CertifiedKey>);

impl ResolvesServerCert for StaticCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_sans_need_both_names() {
        assert_eq!(
            service_sans(Some("kubedojo-apiserver"), Some("kube-system")),
            vec![
                "kubedojo-apiserver",
                "kubedojo-apiserver.kube-system",
                "kubedojo-apiserver.kube-system.svc",
                "kubedojo-apiserver.kube-system.svc.cluster.local",
            ]
        );
        assert!(service_sans(Some("svc"), None).is_empty());
        assert!(service_sans(Some(""), Some("ns")).is_empty());
        let sans = default_sans(&service_sans(
            Some("kubedojo-apiserver"),
            Some("kube-system"),
        ));
        assert!(sans.contains(&"kubedojo-data-api.kube-system.svc".to_string()));
        assert!(sans.contains(&"kubedojo-apiserver.kube-system.svc".to_string()));
    }
}
