//! Kubelet connections (issue #15 §4): at most one kept-alive HTTP/1.1 connection per
//! kubelet, each reading through a small fixed buffer.
//!
//! reqwest's pool kept the same one connection per kubelet, but hyper's adaptive read buffer
//! in it grows to fit a whole payload (up to ~400 KB, never shrunk) and the idle connection
//! keeps that buffer between ticks; at ~50 KB payloads that was most of our resident memory
//! per node (docs/benchmarks.md). Here hyper reads at most [`READ_BUF`] bytes at a time, the
//! body is copied out as it arrives, and nothing but the TLS session and that buffer stays
//! with an idle connection. CPU stays that of a kept-alive connection: no handshake per scrape.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use http_body_util::Empty;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use super::client::{ScrapeError, error_chain};
use crate::api::time::now_millis;

/// hyper's smallest allowed read buffer (`max_buf_size`): kubelet headers fit easily.
pub const READ_BUF: usize = 8192;

/// A connection's request side.
type Sender = SendRequest<Empty<Bytes>>;

/// The idle connection of one kubelet (scheme + authority), with when it was last used.
#[derive(Default)]
struct Slot {
    idle: Mutex<Option<(Sender, i64)>>,
}

/// One idle connection per kubelet, dropped after `idle_timeout` unused.
pub struct Connections {
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
    idle_timeout_ms: i64,
    slots: DashMap<String, Arc<Slot>>,
    last_sweep_ms: AtomicI64,
}

/// A checked-out connection: returned to its slot by [`Connections::put_back`] after its
/// response body was read to the end, dropped (closed) otherwise.
pub struct Lease {
    slot: Arc<Slot>,
    /// The request side.
    pub sender: Sender,
    /// True when it was an idle connection from an earlier request (so a failure before any
    /// answer may just be the kubelet having closed it, and is worth one retry).
    pub reused: bool,
}

impl Connections {
    /// Connections using `tls` for `https` kubelets.
    pub fn new(
        tls: rustls::ClientConfig,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        Connections {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            connect_timeout,
            idle_timeout_ms: i64::try_from(idle_timeout.as_millis()).unwrap_or(i64::MAX),
            slots: DashMap::new(),
            last_sweep_ms: AtomicI64::new(0),
        }
    }

    /// Idle connections held (one per recently scraped kubelet).
    pub fn idle_count(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.idle.lock().is_ok_and(|i| i.is_some()))
            .count()
    }

    /// The kubelet's idle connection, or a new one (`fresh` skips the idle one).
    pub async fn checkout(&self, uri: &http::Uri, fresh: bool) -> Result<Lease, ScrapeError> {
        let now = now_millis();
        self.sweep(now);
        let key = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or("https"),
            uri.authority().map_or("", |a| a.as_str())
        );
        let existing = self.slots.get(&key).map(|s| Arc::clone(s.value()));
        let slot = match existing {
            Some(slot) => slot,
            None => Arc::clone(self.slots.entry(key).or_default().value()),
        };
        let idle = slot
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if !fresh
            && let Some((sender, used)) = idle
            && now.saturating_sub(used) <= self.idle_timeout_ms
            && !sender.is_closed()
        {
            return Ok(Lease {
                slot,
                sender,
                reused: true,
            });
        }
        let sender = self.connect(uri).await?;
        Ok(Lease {
            slot,
            sender,
            reused: false,
        })
    }

    /// Keeps `lease` as its kubelet's idle connection (its response was read to the end).
    pub fn put_back(&self, lease: Lease) {
        if lease.sender.is_closed() {
            return;
        }
        *lease
            .slot
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((lease.sender, now_millis()));
    }

    /// Drops connections idle for longer than the idle timeout (at most every 10 s).
    fn sweep(&self, now: i64) {
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 10_000
            || self
                .last_sweep_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.slots.retain(|_, slot| {
            let mut idle = slot
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if idle.as_ref().is_some_and(|(s, used)| {
                s.is_closed() || now.saturating_sub(*used) > self.idle_timeout_ms
            }) {
                *idle = None;
            }
            // A slot in use right now has no idle connection but a lease: keep it (cheap).
            idle.is_some() || Arc::strong_count(slot) > 1
        });
    }

    async fn connect(&self, uri: &http::Uri) -> Result<Sender, ScrapeError> {
        let host = uri
            .host()
            .ok_or_else(|| ScrapeError::Address(format!("no host in {uri}")))?;
        // `[fd00::1]` in a URI, `fd00::1` for the socket and the TLS server name.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let https = uri.scheme_str() != Some("http");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect((host, port)),
        )
        .await
        .map_err(|_| {
            ScrapeError::Timeout(format!(
                "connecting to {host}:{port}: no connection within {:?}",
                self.connect_timeout
            ))
        })?
        .map_err(|e| ScrapeError::Transport(format!("connecting to {host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        // As reqwest did (`tcp_keepalive(30 s)`): a dead peer is noticed between ticks.
        let _ = socket2::SockRef::from(&tcp)
            .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(Duration::from_secs(30)));
        let handshake = |e: hyper::Error| ScrapeError::Transport(error_chain(&e));
        if https {
            let name = rustls_pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| ScrapeError::Address(format!("{host}: {e}")))?;
            let tls = tokio::time::timeout(self.connect_timeout, self.tls.connect(name, tcp))
                .await
                .map_err(|_| {
                    ScrapeError::Timeout(format!(
                        "TLS handshake with {host}:{port}: no answer within {:?}",
                        self.connect_timeout
                    ))
                })?
                .map_err(|e| {
                    ScrapeError::Tls(format!(
                        "TLS handshake with {host}:{port}: {}",
                        error_chain(&e)
                    ))
                })?;
            let (sender, conn) = builder()
                .handshake(TokioIo::new(tls))
                .await
                .map_err(handshake)?;
            tokio::spawn(drive(conn));
            Ok(sender)
        } else {
            let (sender, conn) = builder()
                .handshake(TokioIo::new(tcp))
                .await
                .map_err(handshake)?;
            tokio::spawn(drive(conn));
            Ok(sender)
        }
    }
}

fn builder() -> http1::Builder {
    let mut b = http1::Builder::new();
    b.max_buf_size(READ_BUF);
    b
}

/// Runs a connection until it closes (its sender dropped, or the kubelet hung up).
async fn drive<T>(conn: http1::Connection<T, Empty<Bytes>>)
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "kubelet connection closed");
    }
}
