//! The kubelet client: one reqwest client with keep-alive connections reused across
//! ticks, kubelet TLS verified against the cluster CA (or explicitly insecure), the
//! kubeconfig's credentials (bearer token, token file re-read as it rotates, exec plugin
//! tokens, client certificate), a per-node timeout, a response size limit and optional gzip.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
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

    fn from_reqwest(e: &reqwest::Error) -> Self {
        let chain = error_chain(e);
        if e.is_timeout() {
            ScrapeError::Timeout(chain)
        } else if is_tls_failure(&chain) {
            ScrapeError::Tls(chain)
        } else {
            ScrapeError::Transport(chain)
        }
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

/// A shared client for every kubelet.
pub struct KubeletClient {
    http: reqwest::Client,
    auth: Authorizer,
    max_body_bytes: usize,
}

impl KubeletClient {
    /// Builds the client.
    pub fn new(config: KubeletClientConfig) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .timeout(config.timeout)
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(Duration::from_secs(120))
            .tcp_keepalive(Duration::from_secs(30))
            .gzip(config.gzip)
            .no_proxy();
        if config.insecure {
            builder = builder.tls_danger_accept_invalid_certs(true);
        } else if let Some(pem) = &config.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("kubelet certificate authority: {e}"))?;
            builder = builder.tls_certs_only(certs);
        }
        if let Some(identity) = &config.client_identity_pem {
            let id = reqwest::Identity::from_pem(identity)
                .map_err(|e| format!("kubelet client certificate: {e}"))?;
            builder = builder.identity(id);
        }
        let http = builder
            .build()
            .map_err(|e| format!("kubelet client: {e}"))?;
        Ok(KubeletClient {
            http,
            auth: Authorizer::new(config.auth)?,
            max_body_bytes: config.max_body_bytes.max(1024),
        })
    }

    /// GETs `url` and returns the body, bounded by the size limit.
    pub async fn get(&self, url: &str) -> Result<Bytes, ScrapeError> {
        let mut req = self.http.get(url);
        if let Some(value) = self.auth.header().await? {
            req = req.header(http::header::AUTHORIZATION, value);
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| ScrapeError::from_reqwest(&e))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(ScrapeError::Status(resp.status().to_string()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n as usize > self.max_body_bytes)
        {
            return Err(ScrapeError::TooLarge(self.max_body_bytes));
        }
        let mut body = BytesMut::with_capacity(resp.content_length().unwrap_or(16 * 1024) as usize);
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| ScrapeError::from_reqwest(&e))?
        {
            if body.len() + chunk.len() > self.max_body_bytes {
                return Err(ScrapeError::TooLarge(self.max_body_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
