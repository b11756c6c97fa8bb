//! The kubelet client: one kept-alive HTTP/1.1 connection per kubelet reused across ticks,
//! spoken directly over its TLS stream with nothing kept between requests but the TLS session (`conn`), kubelet TLS verified against the cluster CA (or explicitly insecure), the
//! kubeconfig's credentials (bearer token, token file re-read as it rotates, exec plugin
//! tokens, client certificate), a per-node timeout, a response size limit and optional gzip.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderValue;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

/// Where the `Authorization` header of kubelet requests comes from.
#[derive(Clone, Debug, Default)]
pub enum KubeletAuth {
    /// No header (mTLS only, or an anonymous kubelet).
    #[default]
    None,
    /// A fixed bearer token (demo mode's simulator, tests).
    Bearer(String),
    /// A bearer token file, re-read at most once a minute (the projected service-account token).
    TokenFile(PathBuf),
    /// Whatever the kubeconfig's user says, as client-go's `rest.TransportFor` does for
    /// metrics-server: a token, a token file, an exec plugin (run again before its token
    /// expires), basic auth. Client certificates are TLS identities (see
    /// [`KubeletClientConfig::client_identity_pem`]).
    Kubeconfig(Box<kube::Config>),
}

/// How to talk to kubelets.
#[derive(Clone, Debug, Default)]
pub struct KubeletClientConfig {
    /// Skip verifying kubelet serving certificates (`--kubelet-insecure-tls`).
    pub insecure: bool,
    /// CA bundle (PEM) that signs kubelet serving certificates.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key (PEM), for kubelets that require mTLS.
    pub client_identity_pem: Option<Vec<u8>>,
    /// The `Authorization` header's source.
    pub auth: KubeletAuth,
    /// Per-request timeout (`--kubelet-request-timeout`).
    pub timeout: Duration,
    /// Largest response accepted, in bytes (after decompression).
    pub max_body_bytes: usize,
    /// Ask for gzip-compressed responses (`Accept-Encoding: gzip`, as metrics-server's Go
    /// client does) and decompress them (`--kubelet-gzip`).
    pub gzip: bool,
}

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// Connection failure.
    #[error("request failed: {0}")]
    Transport(String),
    /// The TLS handshake failed (e.g. the serving certificate does not verify).
    #[error("request failed (TLS): {0}")]
    Tls(String),
    /// The per-request timeout passed.
    #[error("request timed out: {0}")]
    Timeout(String),
    /// The kubelet answered with a non-200 status.
    #[error("request failed, status: {0:?}")]
    Status(String),
    /// The body exceeded the size limit.
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    /// The body was not Prometheus text.
    #[error("unparseable response: {0}")]
    Decode(String),
    /// No usable address for the node.
    #[error("{0}")]
    Address(String),
    /// The credentials could not be obtained (token file unreadable, exec plugin failed).
    #[error("kubelet credentials: {0}")]
    Credentials(String),
}

impl ScrapeError {
    /// A short, stable name of the failure kind, for the self-metrics' `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            ScrapeError::Transport(_) => "transport",
            ScrapeError::Tls(_) => "tls",
            ScrapeError::Timeout(_) => "timeout",
            ScrapeError::Status(_) => "status",
            ScrapeError::TooLarge(_) => "too_large",
            ScrapeError::Decode(_) => "decode",
            ScrapeError::Address(_) => "address",
            ScrapeError::Credentials(_) => "credentials",
        }
    }
}

/// A failure after the connection was made: a TLS alert (e.g. the kubelet refusing our client
/// certificate, which TLS 1.3 reports only then) counts as TLS, anything else as transport.
fn after_connect(e: &dyn std::error::Error) -> ScrapeError {
    let chain = error_chain(e);
    if is_tls_failure(&chain) {
        ScrapeError::Tls(chain)
    } else {
        ScrapeError::Transport(chain)
    }
}

fn is_tls_failure(chain: &str) -> bool {
    let lower = chain.to_ascii_lowercase();
    ["certificate", "tls", "handshake", "unknownissuer", "x509"]
        .iter()
        .any(|needle| lower.contains(needle))
}

/// A bearer token that is re-read from its file at most once every 60 s.
struct TokenFile {
    file: PathBuf,
    cached: Mutex<Option<(String, Instant)>>,
}

impl TokenFile {
    fn current(&self) -> Option<String> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, at)) = cached.as_ref()
            && at.elapsed() < Duration::from_secs(60)
        {
            return Some(token.clone());
        }
        match std::fs::read_to_string(&self.file) {
            Ok(t) => {
                let t = t.trim().to_string();
                *cached = Some((t.clone(), Instant::now()));
                Some(t)
            }
            Err(e) => {
                tracing::warn!(file = %self.file.display(), error = %e, "cannot read the kubelet bearer token");
                cached.as_ref().map(|(t, _)| t.clone())
            }
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// kube's auth layer over a service that returns the header it was given.
type HeaderService = BoxCloneSyncService<
    http::Request<http_body_util::Empty<Bytes>>,
    http::Response<Option<HeaderValue>>,
    BoxError,
>;

enum Authorizer {
    None,
    Fixed(HeaderValue),
    File(TokenFile),
    Layer(HeaderService),
}

impl Authorizer {
    fn new(auth: KubeletAuth) -> Result<Self, String> {
        Ok(match auth {
            KubeletAuth::None => Authorizer::None,
            KubeletAuth::Bearer(token) => Authorizer::Fixed(bearer(&token)?),
            KubeletAuth::TokenFile(file) => Authorizer::File(TokenFile {
                file,
                cached: Mutex::new(None),
            }),
            KubeletAuth::Kubeconfig(config) => {
                use kube::client::ConfigExt;
                use tower::Layer;
                let layer = config
                    .auth_layer()
                    .map_err(|e| format!("kubelet credentials from the kubeconfig: {e}"))?;
                match layer {
                    None => Authorizer::None,
                    Some(layer) => {
                        let echo = tower::service_fn(
                            |req: http::Request<http_body_util::Empty<Bytes>>| async move {
                                Ok::<_, BoxError>(http::Response::new(
                                    req.headers().get(http::header::AUTHORIZATION).cloned(),
                                ))
                            },
                        );
                        Authorizer::Layer(BoxCloneSyncService::new(layer.layer(echo)))
                    }
                }
            }
        })
    }

    async fn header(&self) -> Result<Option<HeaderValue>, ScrapeError> {
        match self {
            Authorizer::None => Ok(None),
            Authorizer::Fixed(value) => Ok(Some(value.clone())),
            Authorizer::File(file) => file
                .current()
                .map(|t| bearer(&t))
                .transpose()
                .map_err(ScrapeError::Credentials),
            Authorizer::Layer(service) => service
                .clone()
                .oneshot(http::Request::new(http_body_util::Empty::new()))
                .await
                .map(http::Response::into_body)
                .map_err(|e| ScrapeError::Credentials(error_chain(e.as_ref()))),
        }
    }
}

fn bearer(token: &str) -> Result<HeaderValue, String> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
        .map_err(|_| "the bearer token is not a valid header value".to_string())?;
    value.set_sensitive(true);
    Ok(value)
}

/// A shared client for every kubelet: one kept-alive HTTP/1.1 connection each, without
/// per-connection buffers between requests ([`super::conn`]).
pub struct KubeletClient {
    conns: super::conn::Connections,
    auth: Authorizer,
    timeout: Duration,
    max_body_bytes: usize,
    gzip: bool,
}

/// How long an unused kubelet connection is kept (reqwest's `pool_idle_timeout` before).
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

impl KubeletClient {
    /// Builds the client.
    pub fn new(config: KubeletClientConfig) -> Result<Self, String> {
        let tls = tls_config(&config)?;
        Ok(KubeletClient {
            conns: super::conn::Connections::new(
                tls,
                config.timeout.min(Duration::from_secs(5)),
                IDLE_TIMEOUT,
            ),
            auth: Authorizer::new(config.auth)?,
            timeout: config.timeout,
            max_body_bytes: config.max_body_bytes.max(1024),
            gzip: config.gzip,
        })
    }

    /// Idle kubelet connections held.
    pub fn idle_connections(&self) -> usize {
        self.conns.idle_count()
    }

    /// GETs `url` and returns the body, bounded by the size limit and by the timeout.
    pub async fn get(&self, url: &str) -> Result<Bytes, ScrapeError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| ScrapeError::Address(format!("{url}: {e}")))?;
        let auth = self.auth.header().await?;
        match tokio::time::timeout(self.timeout, self.exchange(&uri, auth.as_ref())).await {
            Ok(result) => result,
            Err(_) => Err(ScrapeError::Timeout(format!(
                "{url}: no complete answer within {:?}",
                self.timeout
            ))),
        }
    }

    async fn exchange(
        &self,
        uri: &http::Uri,
        auth: Option<&HeaderValue>,
    ) -> Result<Bytes, ScrapeError> {
        use super::conn::ExchangeError;
        let request = self.request(uri, auth);
        let mut fresh = false;
        loop {
            let mut lease = self.conns.checkout(uri, fresh).await?;
            let resp =
                match super::conn::exchange(&mut lease.io, &request, self.max_body_bytes).await {
                    Ok(resp) => resp,
                    // The kubelet closed the idle connection before answering this request: GET is
                    // idempotent, so once more on a new connection (as hyper-util's pool does).
                    Err(ExchangeError::NoResponse(e)) if lease.reused && !fresh => {
                        tracing::debug!(error = %e, "kubelet connection gone; reconnecting");
                        fresh = true;
                        continue;
                    }
                    Err(ExchangeError::NoResponse(e) | ExchangeError::Io(e)) => {
                        return Err(after_connect(&e));
                    }
                    Err(ExchangeError::Protocol(e)) => {
                        return Err(ScrapeError::Transport(format!(
                            "invalid HTTP response: {e}"
                        )));
                    }
                    Err(ExchangeError::TooLarge) => {
                        return Err(ScrapeError::TooLarge(self.max_body_bytes));
                    }
                };
            if resp.status != 200 {
                return Err(ScrapeError::Status(
                    http::StatusCode::from_u16(resp.status)
                        .map_or_else(|_| resp.status.to_string(), |s| s.to_string()),
                ));
            }
            let gzipped = self.gzip && resp.gzip;
            if resp.reusable {
                self.conns.put_back(lease);
            }
            return self.decompress((resp.body.freeze(), gzipped));
        }
    }

    /// The request head: `GET path HTTP/1.1` with Host, Accept, gzip when asked for, and the
    /// credentials.
    fn request(&self, uri: &http::Uri, auth: Option<&HeaderValue>) -> Vec<u8> {
        let mut req = Vec::with_capacity(256);
        req.extend_from_slice(b"GET ");
        req.extend_from_slice(uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
        req.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        req.extend_from_slice(uri.authority().map_or("", |a| a.as_str()).as_bytes());
        req.extend_from_slice(b"\r\naccept: */*\r\n");
        if self.gzip {
            req.extend_from_slice(b"accept-encoding: gzip\r\n");
        }
        if let Some(value) = auth {
            req.extend_from_slice(b"authorization: ");
            req.extend_from_slice(value.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"\r\n");
        req
    }

    /// The body as sent, or gunzipped (bounded by the size limit after decompression).
    fn decompress(&self, (body, gzipped): (Bytes, bool)) -> Result<Bytes, ScrapeError> {
        if !gzipped {
            return Ok(body);
        }
        use std::io::Read;
        let limit = self.max_body_bytes;
        let mut out = Vec::with_capacity(body.len().saturating_mul(6).min(limit));
        flate2::read::GzDecoder::new(&body[..])
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| ScrapeError::Transport(format!("gzip body: {e}")))?;
        if out.len() > limit {
            return Err(ScrapeError::TooLarge(limit));
        }
        Ok(Bytes::from(out))
    }
}

/// rustls settings for kubelets: verified against the CA bundle (or the system roots without
/// one), or not at all when insecure; the client certificate when given; HTTP/1.1 only.
fn tls_config(config: &KubeletClientConfig) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("kubelet TLS: {e}"))?;
    let builder = if config.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::tls::AcceptAnyServerCert::new(
                provider,
            )))
    } else if let Some(pem) = &config.ca_pem {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("kubelet certificate authority: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("kubelet certificate authority: {e}"))?;
        }
        if roots.is_empty() {
            return Err("kubelet certificate authority: no certificate in the bundle".into());
        }
        builder.with_root_certificates(roots)
    } else {
        let verifier = rustls_platform_verifier::Verifier::new(provider)
            .map_err(|e| format!("kubelet TLS (system roots): {e}"))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
    };
    let mut tls = match &config.client_identity_pem {
        Some(pem) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("kubelet client certificate: {e}"))?;
            if chain.is_empty() {
                return Err("kubelet client certificate: no certificate in the PEM".into());
            }
            let key = PrivateKeyDer::from_pem_slice(pem)
                .map_err(|e| format!("kubelet client certificate: the key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("kubelet client certificate: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
