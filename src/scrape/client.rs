//! The kubelet client: one reqwest client with keep-alive connections reused across
//! ticks, kubelet TLS verified against the cluster CA (or explicitly insecure),
//! optional client certificate, a bearer token re-read when it rotates, a per-node
//! timeout and a response size limit.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

/// How to talk to kubelets.
#[derive(Clone, Debug, Default)]
pub struct KubeletClientConfig {
    /// Skip verifying kubelet serving certificates (`--kubelet-insecure-tls`).
    pub insecure: bool,
    /// CA bundle (PEM) that signs kubelet serving certificates.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key (PEM), for kubelets that require mTLS.
    pub client_identity_pem: Option<Vec<u8>>,
    /// A bearer token file, re-read when it changes (the projected service-account token).
    pub token_file: Option<PathBuf>,
    /// A fixed bearer token (from a kubeconfig, or demo mode's simulator).
    pub token: Option<String>,
    /// Per-request timeout (`--kubelet-request-timeout`).
    pub timeout: Duration,
    /// Largest response accepted, in bytes.
    pub max_body_bytes: usize,
}

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// Connection, TLS or timeout failure.
    #[error("request failed: {0}")]
    Transport(String),
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
}

/// A bearer token that is re-read from its file at most once every 60 s.
struct Token {
    file: Option<PathBuf>,
    fixed: Option<String>,
    cached: Mutex<Option<(String, Instant)>>,
}

impl Token {
    fn current(&self) -> Option<String> {
        if let Some(t) = &self.fixed {
            return Some(t.clone());
        }
        let file = self.file.as_ref()?;
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, at)) = cached.as_ref()
            && at.elapsed() < Duration::from_secs(60)
        {
            return Some(token.clone());
        }
        match std::fs::read_to_string(file) {
            Ok(t) => {
                let t = t.trim().to_string();
                *cached = Some((t.clone(), Instant::now()));
                Some(t)
            }
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "cannot read the kubelet bearer token");
                cached.as_ref().map(|(t, _)| t.clone())
            }
        }
    }
}

/// A shared client for every kubelet.
pub struct KubeletClient {
    http: reqwest::Client,
    token: Token,
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
            token: Token {
                file: config.token_file,
                fixed: config.token,
                cached: Mutex::new(None),
            },
            max_body_bytes: config.max_body_bytes.max(1024),
        })
    }

    /// GETs `url` and returns the body, bounded by the size limit.
    pub async fn get(&self, url: &str) -> Result<Bytes, ScrapeError> {
        let mut req = self.http.get(url);
        if let Some(token) = self.token.current() {
            req = req.bearer_auth(token);
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| ScrapeError::Transport(error_chain(&e)))?;
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
            .map_err(|e| ScrapeError::Transport(error_chain(&e)))?
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
