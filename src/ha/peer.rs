//! The peer exchange over HTTPS: a small listener that answers for this replica's own shard
//! (`POST /ha/v2/shard` naming the nodes wanted, bearer token required) and the client that
//! asks the others, pinning each peer's certificate to the SHA-256 published in its membership
//! record, bounded in size and time both ways.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::membership::Member;
use super::peer_auth::{PeerAuthError, PeerAuthenticator};
use super::shard::OwnShard;
use super::wire::{self, NodeFrame};

/// The least time the server gives a peer to send a request head (hyper's header timeout,
/// which also ends idle keep-alive connections).
const PEER_SERVER_IDLE_MIN: Duration = Duration::from_secs(10);
/// The least time the client keeps an idle pooled connection.
const PEER_CLIENT_IDLE_MIN: Duration = Duration::from_secs(5);

/// How long each side keeps an idle peer connection, for replicas that fetch from each peer
/// once per tick: the client longer than a tick, so the next tick's fetch reuses the
/// connection instead of a new TCP and TLS handshake with every peer; the server a tick
/// longer still, so the client always drops an idle connection first and never sends a request
/// on one the server is closing (at resolutions >= 10 s that failed a fetch per tick, found by
/// tests/e2e/ha.sh). Should the server close one under a request anyway (a peer restarting),
/// the client asks once more on a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepAlive {
    /// The client drops a pooled connection idle this long.
    pub client_idle: Duration,
    /// The server ends a connection on which no request head arrived for this long.
    pub server_idle: Duration,
}

impl KeepAlive {
    /// For a fetch every `resolution`: the client keeps idle connections two resolutions (at
    /// least 5 s), the server one more (at least 10 s).
    pub fn for_resolution(resolution: Duration) -> Self {
        let client_idle = (resolution * 2).max(PEER_CLIENT_IDLE_MIN);
        KeepAlive {
            client_idle,
            server_idle: (client_idle + resolution).max(PEER_SERVER_IDLE_MIN),
        }
    }
}

/// The one route of the peer listener (version 2: the request names the nodes; version 1's
/// `GET /ha/v1/shard` of the whole shard is gone, a peer still asking it gets 404 and scrapes
/// those nodes itself).
pub const SHARD_PATH: &str = "/ha/v2/shard";

/// This replica's peer serving certificate: generated at start-up, never written to disk;
/// peers trust it through the SHA-256 this replica publishes in its membership record.
#[derive(Clone)]
pub struct PeerIdentity {
    /// Certificate and key for the listener.
    pub certified: Arc<CertifiedKey>,
    /// SHA-256 of the certificate (DER).
    pub cert_sha256: [u8; 32],
}

impl PeerIdentity {
    /// A fresh self-signed certificate.
    pub fn generate() -> anyhow::Result<Self> {
        let key = rcgen::KeyPair::generate()?;
        let params = rcgen::CertificateParams::new(vec!["kubedojo-data-api-peer".to_string()])?;
        let cert = params.self_signed(&key)?;
        let cert_sha256: [u8; 32] = Sha256::digest(cert.der()).into();
        let certified =
            crate::server::tls::certified_key_from_pem(&cert.pem(), &key.serialize_pem())?;
        Ok(PeerIdentity {
            certified: Arc::new(certified),
            cert_sha256,
        })
    }
}

/// Lower-case hex of a pin.
pub fn hex(pin: &[u8; 32]) -> String {
    pin.iter().map(|b| format!("{b:02x}")).collect()
}

/// A pin from hex (64 digits).
pub fn parse_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Serves `shard` to authenticated peers on `listener` until `shutdown`, ending a connection
/// that brings no request head for `idle` ([`KeepAlive::server_idle`]).
pub async fn serve(
    listener: TcpListener,
    identity: PeerIdentity,
    auth: Arc<dyn PeerAuthenticator>,
    shard: Arc<OwnShard>,
    idle: Duration,
    shutdown: CancellationToken,
) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config =
        match rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        {
            Ok(b) => b.with_no_client_auth().with_cert_resolver(Arc::new(
                crate::server::tls::StaticCert(identity.certified.clone()),
            )),
            Err(e) => {
                tracing::error!(error = %e, "peer listener TLS configuration");
                return;
            }
        };
    let acceptor = TlsAcceptor::from(Arc::new(config));
    loop {
        let (tcp, remote) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "peer accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let auth = auth.clone();
        let shard = shard.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    _ => {
                        tracing::debug!(%remote, "peer TLS handshake failed");
                        return;
                    }
                };
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let auth = auth.clone();
                let shard = shard.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, &*auth, &shard).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(idle)
                .serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                r = conn => if let Err(e) = r { tracing::debug!(%remote, error = %e, "peer connection ended with an error") },
                _ = stop.cancelled() => {}
            }
        });
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn handle<B>(
    req: Request<B>,
    auth: &dyn PeerAuthenticator,
    shard: &OwnShard,
) -> Response<Full<Bytes>>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return plain(StatusCode::UNAUTHORIZED, "Unauthorized");
    };
    match auth.check(token).await {
        Ok(()) => {}
        Err(PeerAuthError::Unauthorized(why)) => {
            tracing::debug!(reason = %why, "peer request refused");
            return plain(StatusCode::UNAUTHORIZED, "Unauthorized");
        }
        Err(PeerAuthError::Forbidden(why)) => {
            tracing::warn!(reason = %why, "peer request refused");
            return plain(StatusCode::FORBIDDEN, "Forbidden");
        }
    }
    if req.uri().path() != SHARD_PATH {
        return plain(StatusCode::NOT_FOUND, "Not Found");
    }
    if req.method() != http::Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    // Read only after authentication, and never more than the largest valid request.
    let body = match http_body_util::BodyExt::collect(http_body_util::Limited::new(
        req.into_body(),
        wire::MAX_REQUEST_BYTES,
    ))
    .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body refused: {e}"),
            );
        }
    };
    let nodes = match wire::decode_request(&body) {
        Ok(n) => n,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("bad shard request: {e}")),
    };
    let mut r = Response::new(Full::new(Bytes::from(shard.answer(&nodes))));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(wire::CONTENT_TYPE),
    );
    r
}

/// Where the client's bearer token comes from.
#[derive(Clone, Debug)]
pub enum PeerToken {
    /// A fixed token (demo, tests).
    Fixed(String),
    /// A file re-read on every fetch (the projected ServiceAccount token rotates).
    File(PathBuf),
}

impl PeerToken {
    fn read(&self) -> Result<String, PeerError> {
        match self {
            PeerToken::Fixed(t) => Ok(t.clone()),
            PeerToken::File(p) => std::fs::read_to_string(p)
                .map(|t| t.trim().to_string())
                .map_err(|e| PeerError::Transport(format!("reading {}: {e}", p.display()))),
        }
    }
}

/// Why a fetch from a peer failed (its shard is then scraped directly).
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Connection, TLS (including a certificate that does not match the pin) or timeout.
    #[error("transport: {0}")]
    Transport(String),
    /// Not 200.
    #[error("status {0}")]
    Status(u16),
    /// Over `--peer-max-response-bytes`.
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    /// Not a valid shard body.
    #[error("bad shard body: {0}")]
    Wire(#[from] wire::WireError),
    /// The whole exchange took longer than the deadline.
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
}

/// Fetches shards from peers.
pub struct PeerClient {
    token: PeerToken,
    timeout: Duration,
    max_bytes: usize,
    idle: Duration,
    clients: Mutex<HashMap<[u8; 32], reqwest::Client>>,
}

impl PeerClient {
    /// A client presenting `token`, giving each fetch `timeout` and at most `max_bytes`, and
    /// keeping an idle connection to a peer for `idle` ([`KeepAlive::client_idle`]).
    pub fn new(token: PeerToken, timeout: Duration, max_bytes: usize, idle: Duration) -> Self {
        PeerClient {
            token,
            timeout,
            max_bytes,
            idle,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, pin: [u8; 32]) -> Result<reqwest::Client, PeerError> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&pin) {
            return Ok(c.clone());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| PeerError::Transport(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCert { pin, provider }))
            .with_no_client_auth();
        let c = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .pool_max_idle_per_host(1)
            // Below the server's idle timeout (see `KeepAlive`).
            .pool_idle_timeout(self.idle)
            .no_proxy()
            .build()
            .map_err(|e| PeerError::Transport(e.to_string()))?;
        // Pins of departed members would pile up: keep the map small.
        if clients.len() > 64 {
            clients.clear();
        }
        clients.insert(pin, c.clone());
        Ok(c)
    }

    /// Asks `peer` for `nodes` (at most [`wire::MAX_REQUEST_NODES`]) and decodes its answer
    /// (all or nothing), with the body's size.
    pub async fn fetch(
        &self,
        peer: &Member,
        nodes: &[&str],
    ) -> Result<(Vec<(String, NodeFrame)>, usize), PeerError> {
        let request = wire::encode_request(nodes.iter().copied());
        let body = match tokio::time::timeout(self.timeout, self.fetch_body(peer, request)).await {
            Ok(r) => r?,
            Err(_) => return Err(PeerError::Timeout(self.timeout)),
        };
        Ok((wire::decode(&body)?, body.len()))
    }

    async fn fetch_body(&self, peer: &Member, request: Vec<u8>) -> Result<Bytes, PeerError> {
        let client = self.client(peer.cert_sha256)?;
        let token = self.token.read()?;
        let url = format!("https://{}{SHARD_PATH}", peer.address);
        let request = Bytes::from(request);
        let send = || {
            client
                .post(&url)
                .bearer_auth(&token)
                .header(reqwest::header::CONTENT_TYPE, wire::REQUEST_CONTENT_TYPE)
                .body(request.clone())
                .send()
        };
        let mut resp = match send().await {
            // The pooled connection was closed under the request (a peer ending it as it was
            // reused): once more, on a new connection. The request only reads, so asking
            // twice is safe; a failed connect or TLS handshake (a wrong pin) is not retried.
            Err(e) if !e.is_connect() && !e.is_timeout() => {
                tracing::debug!(peer = %peer.id, error = %chain(&e), "peer connection closed under a request; asking again");
                send().await
            }
            r => r,
        }
        .map_err(|e| PeerError::Transport(chain(&e)))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(PeerError::Status(resp.status().as_u16()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n as usize > self.max_bytes)
        {
            return Err(PeerError::TooLarge(self.max_bytes));
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| PeerError::Transport(chain(&e)))?
        {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(PeerError::TooLarge(self.max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Accepts exactly the certificate whose SHA-256 is the pin (and checks the handshake
/// signatures with it, so the peer holds its key). The name is not checked: the pin is
/// stronger than any name.
#[derive(Debug)]
struct PinnedCert {
    pin: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One fetch per tick: the client keeps a connection past the next tick, and always drops
    /// it before the server would (so it never reuses one the server is closing).
    #[test]
    fn connections_outlive_a_tick_and_the_client_lets_go_first() {
        for secs in [1, 5, 10, 15, 30, 60, 300] {
            let resolution = Duration::from_secs(secs);
            let k = KeepAlive::for_resolution(resolution);
            assert!(k.client_idle > resolution, "{secs}s: {k:?}");
            assert!(
                k.server_idle >= k.client_idle + resolution.min(PEER_SERVER_IDLE_MIN),
                "{secs}s: {k:?}"
            );
            assert!(k.server_idle >= PEER_SERVER_IDLE_MIN, "{secs}s: {k:?}");
        }
    }

    #[test]
    fn pins_round_trip_as_hex() {
        let pin = [0xabu8; 32];
        assert_eq!(parse_hex(&hex(&pin)), Some(pin));
        assert_eq!(parse_hex("ab"), None);
        assert_eq!(parse_hex(&"zz".repeat(32)), None);
    }
}
