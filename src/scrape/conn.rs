//! Kubelet connections (issue #15 §4): at most one kept-alive HTTP/1.1 connection per
//! kubelet, spoken directly over its TLS stream: the request is written, the response head
//! parsed with `httparse` and the body read (Content-Length, chunked, or to the end) into one
//! buffer that becomes the body handed to the decoder.
//!
//! Why not hyper's client: an idle hyper HTTP/1.1 connection keeps an 8 KiB read buffer, an
//! 8 KiB header write buffer, an 8 KiB block of its dispatch channel and a spawned task (valgrind
//! massif of `kd-load floor --lean-max-buf 8192`: 8,274 + 8,192 + 7,968 bytes per connection,
//! docs/benchmarks.md), and reqwest's pool kept hyper's adaptive read buffer of up to ~400 KB.
//! Here an idle connection is the socket and the TLS session (whose receive buffer rustls
//! shrinks to 4 KiB on the read after a response, see [`Connections::put_back`]), nothing else.
//! CPU stays that of a kept-alive connection: no handshake per scrape.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use dashmap::DashMap;
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::client::{ScrapeError, error_chain};
use crate::api::time::now_millis;

/// A byte stream to a kubelet: TLS over TCP, or plain TCP for `http` URLs.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection to one kubelet.
pub type Stream = Box<dyn Io>;

/// Largest response head accepted (status line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// Largest chunk-size line (with extensions) or trailer section accepted.
const MAX_LINE: usize = 4 * 1024;
/// Most headers parsed in a response head.
const MAX_HEADERS: usize = 64;
/// Read granularity while a response arrives (the body buffer grows in steps of this).
const READ_STEP: usize = 16 * 1024;

/// The idle connection of one kubelet (scheme + authority), with when it was last used.
#[derive(Default)]
struct Slot {
    idle: Mutex<Option<(Stream, i64)>>,
}

/// One idle connection per kubelet, dropped after `idle_timeout` unused.
pub struct Connections {
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
    idle_timeout_ms: i64,
    slots: DashMap<String, Arc<Slot>>,
    last_sweep_ms: AtomicI64,
}

/// A checked-out connection: returned to its slot by [`Connections::put_back`] after a
/// complete response that allows reuse, dropped (closed) otherwise.
pub struct Lease {
    slot: Arc<Slot>,
    /// The stream.
    pub io: Stream,
    /// True when it was an idle connection from an earlier request (so a failure before any
    /// answer may just be the kubelet having closed it, and is worth one retry).
    pub reused: bool,
}

/// True unless the idle stream has ended, failed or sent something unasked. The read is
/// polled once and never waits; on a TLS stream it also lets rustls shrink its receive
/// buffer (it does so on a read that finds it empty).
fn still_open(io: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    io.read(&mut byte).now_or_never().is_none()
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
            && let Some((mut io, used)) = idle
            && now.saturating_sub(used) <= self.idle_timeout_ms
            && still_open(&mut io)
        {
            return Ok(Lease {
                slot,
                io,
                reused: true,
            });
        }
        let io = self.connect(uri).await?;
        Ok(Lease {
            slot,
            io,
            reused: false,
        })
    }

    /// Keeps `lease` as its kubelet's idle connection (its response was read to the end and
    /// allows another request).
    pub fn put_back(&self, mut lease: Lease) {
        if !still_open(&mut lease.io) {
            return;
        }
        *lease
            .slot
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((lease.io, now_millis()));
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
            if idle
                .as_ref()
                .is_some_and(|(_, used)| now.saturating_sub(*used) > self.idle_timeout_ms)
            {
                *idle = None;
            }
            // A slot in use right now has no idle connection but a lease: keep it (cheap).
            idle.is_some() || Arc::strong_count(slot) > 1
        });
    }

    async fn connect(&self, uri: &http::Uri) -> Result<Stream, ScrapeError> {
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
        if !https {
            return Ok(Box::new(tcp));
        }
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
        Ok(Box::new(tls))
    }
}

/// A kubelet's answer.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body as sent (empty unless the status is 200).
    pub body: BytesMut,
    /// `Content-Encoding: gzip`.
    pub gzip: bool,
    /// The connection may carry another request (HTTP/1.1, no `Connection: close`, the body
    /// read exactly to its end).
    pub reusable: bool,
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum ExchangeError {
    /// The stream ended or failed before any byte of a response: on a reused connection the
    /// kubelet most likely closed it while idle (worth one retry on a new connection).
    NoResponse(std::io::Error),
    /// The stream failed in the middle of the response.
    Io(std::io::Error),
    /// Not a valid HTTP/1.1 response.
    Protocol(String),
    /// The body is larger than the limit.
    TooLarge,
}

/// Writes `request` (a whole HTTP/1.1 request head) and reads the response; the body of a 200
/// is read to its end and bounded by `max_body`, any other status returns without its body.
pub async fn exchange(
    io: &mut Stream,
    request: &[u8],
    max_body: usize,
) -> Result<Response, ExchangeError> {
    io.write_all(request)
        .await
        .map_err(ExchangeError::NoResponse)?;
    io.flush().await.map_err(ExchangeError::NoResponse)?;
    let mut buf = BytesMut::with_capacity(READ_STEP);
    let head = loop {
        if !buf.is_empty() {
            match parse_head(&buf)? {
                // An interim answer (100 Continue): the real one follows, maybe already here.
                Some(head) if (100..200).contains(&head.status) => {
                    buf.advance(head.len);
                    continue;
                }
                Some(head) => break head,
                None if buf.len() > MAX_HEAD => {
                    return Err(ExchangeError::Protocol(format!(
                        "response head larger than {MAX_HEAD} bytes"
                    )));
                }
                None => {}
            }
        }
        let got = fill(io, &mut buf).await.map_err(|e| {
            if buf.is_empty() {
                ExchangeError::NoResponse(e)
            } else {
                ExchangeError::Io(e)
            }
        })?;
        if got == 0 {
            let e = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed");
            return Err(if buf.is_empty() {
                ExchangeError::NoResponse(e)
            } else {
                ExchangeError::Protocol("connection closed inside the response head".into())
            });
        }
    };
    buf.advance(head.len);
    if head.status != 200 {
        return Ok(Response {
            status: head.status,
            body: BytesMut::new(),
            gzip: head.gzip,
            reusable: false,
        });
    }
    let (body, exact) = match head.framing {
        Framing::Length(n) => {
            if n > max_body {
                return Err(ExchangeError::TooLarge);
            }
            read_length(io, buf, n).await?
        }
        Framing::Chunked => read_chunked(io, buf, max_body).await?,
        Framing::ToEnd => read_to_end(io, buf, max_body).await?,
    };
    Ok(Response {
        status: head.status,
        body,
        gzip: head.gzip,
        reusable: exact && head.keep_alive,
    })
}

/// Reads what the stream has into `buf`'s spare room (grown by [`READ_STEP`] when full).
async fn fill(io: &mut Stream, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < READ_STEP / 4 {
        buf.reserve(READ_STEP);
    }
    io.read_buf(buf).await
}

/// How the body's end is known.
#[derive(Debug, PartialEq)]
enum Framing {
    Length(usize),
    Chunked,
    ToEnd,
}

/// A parsed response head.
#[derive(Debug)]
struct Head {
    len: usize,
    status: u16,
    framing: Framing,
    gzip: bool,
    keep_alive: bool,
}

/// The response head at the start of `buf`, `None` while incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, ExchangeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(ExchangeError::Protocol(format!(
                "malformed response head: {e}"
            )));
        }
    };
    let status = resp.code.unwrap_or(0);
    let http11 = resp.version == Some(1);
    let mut length = None;
    let mut chunked = false;
    let mut gzip = false;
    let mut close = !http11;
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<usize>()
                .map_err(|_| ExchangeError::Protocol(format!("bad Content-Length {value:?}")))?;
            if length.is_some_and(|m| m != n) {
                return Err(ExchangeError::Protocol(
                    "conflicting Content-Length headers".into(),
                ));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides (RFC 9112 §6.3); anything but chunked last: to the end.
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
            if !chunked {
                close = true;
            }
        } else if h.name.eq_ignore_ascii_case("content-encoding") {
            gzip = value.eq_ignore_ascii_case("gzip");
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && !http11 {
                    close = false;
                }
            }
        }
    }
    let framing = if chunked {
        Framing::Chunked
    } else if resp
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
    {
        Framing::ToEnd
    } else {
        match length {
            Some(n) => Framing::Length(n),
            None => Framing::ToEnd,
        }
    };
    Ok(Some(Head {
        len,
        status,
        framing,
        gzip,
        keep_alive: !close,
    }))
}

fn eof() -> ExchangeError {
    ExchangeError::Io(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "connection closed before the end of the body",
    ))
}

/// Exactly `n` body bytes (`buf` holds what came with the head); `false` when the kubelet sent
/// more than that (the connection is then not reused).
async fn read_length(
    io: &mut Stream,
    mut buf: BytesMut,
    n: usize,
) -> Result<(BytesMut, bool), ExchangeError> {
    if buf.len() < n {
        buf.reserve(n - buf.len());
    }
    while buf.len() < n {
        if io.read_buf(&mut buf).await.map_err(ExchangeError::Io)? == 0 {
            return Err(eof());
        }
    }
    let exact = buf.len() == n;
    buf.truncate(n);
    Ok((buf, exact))
}

/// The body until the kubelet closes the stream.
async fn read_to_end(
    io: &mut Stream,
    mut buf: BytesMut,
    max_body: usize,
) -> Result<(BytesMut, bool), ExchangeError> {
    loop {
        if buf.len() > max_body {
            return Err(ExchangeError::TooLarge);
        }
        if fill(io, &mut buf).await.map_err(ExchangeError::Io)? == 0 {
            return Ok((buf, false));
        }
    }
}

/// A chunked body (RFC 9112 §7.1): chunk extensions and trailers are read and ignored.
async fn read_chunked(
    io: &mut Stream,
    mut raw: BytesMut,
    max_body: usize,
) -> Result<(BytesMut, bool), ExchangeError> {
    let mut body = BytesMut::with_capacity(READ_STEP);
    loop {
        let line = read_line(io, &mut raw).await?;
        let size = std::str::from_utf8(&line)
            .ok()
            .map(|l| l.split(';').next().unwrap_or("").trim())
            .and_then(|hex| usize::from_str_radix(hex, 16).ok())
            .ok_or_else(|| ExchangeError::Protocol("bad chunk size line".into()))?;
        if size == 0 {
            // Trailer fields until the empty line.
            let mut trailers = 0usize;
            loop {
                let line = read_line(io, &mut raw).await?;
                if line.is_empty() {
                    return Ok((body, raw.is_empty()));
                }
                trailers += line.len();
                if trailers > MAX_LINE {
                    return Err(ExchangeError::Protocol("trailers too large".into()));
                }
            }
        }
        if body.len().saturating_add(size) > max_body {
            return Err(ExchangeError::TooLarge);
        }
        body.reserve(size);
        let mut left = size;
        while left > 0 {
            if raw.is_empty() && fill(io, &mut raw).await.map_err(ExchangeError::Io)? == 0 {
                return Err(eof());
            }
            let take = left.min(raw.len());
            body.extend_from_slice(&raw[..take]);
            raw.advance(take);
            left -= take;
        }
        if !read_line(io, &mut raw).await?.is_empty() {
            return Err(ExchangeError::Protocol("chunk not followed by CRLF".into()));
        }
    }
}

/// The next CRLF-terminated line of `raw` (without the CRLF), reading more as needed.
async fn read_line(io: &mut Stream, raw: &mut BytesMut) -> Result<BytesMut, ExchangeError> {
    let mut searched = 0;
    loop {
        if let Some(at) = memchr::memchr(b'\n', &raw[searched..]) {
            let end = searched + at;
            let mut line = raw.split_to(end + 1);
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            return Ok(line);
        }
        searched = raw.len();
        if raw.len() > MAX_LINE {
            return Err(ExchangeError::Protocol("chunk size line too long".into()));
        }
        if fill(io, raw).await.map_err(ExchangeError::Io)? == 0 {
            return Err(eof());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `exchange` against a peer that answers `answer` (in pieces of `step` bytes).
    async fn run(
        answer: &'static [u8],
        step: usize,
        max: usize,
    ) -> Result<Response, ExchangeError> {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let peer = tokio::spawn(async move {
            let mut req = vec![0u8; 4096];
            let n = server.read(&mut req).await.unwrap();
            assert!(req[..n].starts_with(b"GET /metrics/resource HTTP/1.1\r\n"));
            for piece in answer.chunks(step.max(1)) {
                server.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            // Closing ends a body without framing (and is after every framed answer).
            drop(server);
        });
        let mut io: Stream = Box::new(client);
        let out = exchange(
            &mut io,
            b"GET /metrics/resource HTTP/1.1\r\nhost: k\r\n\r\n",
            max,
        )
        .await;
        drop(io);
        let _ = peer.await;
        out
    }

    #[tokio::test]
    async fn content_length_body_in_any_pieces() {
        for step in [1, 3, 17, 4096] {
            let r = run(
                b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world",
                step,
                1 << 20,
            )
            .await
            .unwrap();
            assert_eq!(
                (r.status, &r.body[..], r.reusable),
                (200, &b"hello world"[..], true)
            );
        }
    }

    #[tokio::test]
    async fn chunked_body_with_extensions_and_trailers() {
        let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for step in [1, 7, 4096] {
            let r = run(answer, step, 1 << 20).await.unwrap();
            assert_eq!(&r.body[..], b"hello world");
            assert!(r.gzip && r.reusable);
        }
    }

    #[tokio::test]
    async fn interim_responses_are_skipped() {
        let r = run(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            5,
            1024,
        )
        .await
        .unwrap();
        assert_eq!(&r.body[..], b"ok");
    }

    #[tokio::test]
    async fn close_http10_and_unframed_bodies_are_not_reused() {
        let r = run(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            4096,
            1024,
        )
        .await
        .unwrap();
        assert!(!r.reusable);
        let r = run(
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            4096,
            1024,
        )
        .await
        .unwrap();
        assert!(!r.reusable);
        // No length, not chunked: the body ends with the stream.
        let r = run(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", 3, 1024)
            .await
            .unwrap();
        assert_eq!((&r.body[..], r.reusable), (&b"until the end"[..], false));
        // More bytes than announced: the connection is not trusted again.
        let r = run(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
            4096,
            1024,
        )
        .await
        .unwrap();
        assert_eq!((&r.body[..], r.reusable), (&b"ok"[..], false));
    }

    #[tokio::test]
    async fn limits_and_malformed_answers_are_errors() {
        let big = run(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n",
            4096,
            1000,
        )
        .await;
        assert!(matches!(big, Err(ExchangeError::TooLarge)), "{big:?}");
        let big = run(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n",
            4096,
            1000,
        )
        .await;
        assert!(matches!(big, Err(ExchangeError::TooLarge)), "{big:?}");
        let garbage = run(b"SSH-2.0-OpenSSH\r\n\r\n", 4096, 1000).await;
        assert!(
            matches!(garbage, Err(ExchangeError::Protocol(_))),
            "{garbage:?}"
        );
        let bad_size = run(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            4096,
            1000,
        )
        .await;
        assert!(
            matches!(bad_size, Err(ExchangeError::Protocol(_))),
            "{bad_size:?}"
        );
        let cut = run(
            b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nshort",
            4096,
            1000,
        )
        .await;
        assert!(matches!(cut, Err(ExchangeError::Io(_))), "{cut:?}");
        let silent = run(b"", 4096, 1000).await;
        assert!(
            matches!(silent, Err(ExchangeError::NoResponse(_))),
            "{silent:?}"
        );
    }

    #[tokio::test]
    async fn other_statuses_return_without_the_body() {
        let r = run(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy",
            4096,
            1024,
        )
        .await
        .unwrap();
        assert_eq!((r.status, r.body.len(), r.reusable), (503, 0, false));
    }
}
