//! TLS listeners of the simulated kubelets, with runtime fault injection per node.
//!
//! One listener per node on `address:port`, HTTP/1.1 and h2 chosen by ALPN
//! (hyper-util's auto builder), `GET /metrics/resource` answered with [`render`], any
//! other request 404. Like a kubelet, a configured bearer token is checked before
//! routing (401 `Unauthorized`). Each node's [`Behaviour`] can be changed at run time
//! through the [`SimHandle`]; nothing on a request's path panics.

use std::{
    convert::Infallible,
    fmt, io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Frame, Incoming},
    header::{
        ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue,
    },
    service::service_fn,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    sync::{mpsc, watch},
    time::{sleep, timeout},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::{Fleet, SimError, node_object, payload, pki::Pki, render};

/// The only path a simulated kubelet serves.
pub const METRICS_PATH: &str = "/metrics/resource";
/// How long [`SimHandle::set_behaviour`] waits for a listener or its connections.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before retrying a failed accept or re-bind.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// The body of [`Behaviour::Garbage`]: an HTML error page with a broken series line.
const GARBAGE: &[u8] = b"<html><head><title>502 Bad Gateway</title></head>\n\
<body><h1>Bad Gateway</h1>{{{ not prometheus }}}</body></html>\n\
container_cpu_usage_seconds_total{container=\"x\",namespace=\"y\",pod=\"z\" 1.5e 12 13 14\n\
\x00\xff\xfe garbage\n";

/// How one simulated kubelet answers, changed at run time with
/// [`SimHandle::set_behaviour`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Behaviour {
    /// Serve the metrics.
    #[default]
    Normal,
    /// Answer `/metrics/resource` with this status code (500 if it is not a valid code)
    /// and a short text body.
    Status(u16),
    /// Answer `/metrics/resource` with 200 and a body that is not Prometheus text.
    Garbage,
    /// Wait this long before answering any request, then answer normally.
    Slow(Duration),
    /// Accept connections and requests but never answer (until the behaviour changes).
    Hang,
    /// Close the listener and every open connection: connections are refused.
    Down,
    /// Send the normal body `chunk` bytes at a time, pausing `every` between chunks.
    SlowDrip {
        /// Bytes per chunk (at least 1).
        chunk: usize,
        /// Pause between chunks.
        every: Duration,
    },
    /// Answer 200 with a body of this many bytes (comment lines, streamed, no length).
    HugeBody(usize),
    /// Serve TLS with a certificate from another CA (the client's verification fails).
    WrongCertificate,
    /// Every CPU counter (node and containers) restarts from 0 when this behaviour is set (as
    /// after a kubelet or cgroup reset without a new start time) and then grows at the normal
    /// rate: the counter is the normal value minus the normal value at that moment.
    CounterReset,
    /// Timestamps (and the counters at them) shifted by this many ms from the simulator clock.
    ClockSkew(i64),
    /// Every container's CPU counter and working set reported as 0 (the node's too).
    ZeroValues,
    /// Also report the pods of the node with this index (a pod on two nodes).
    AlsoReport(usize),
}

/// Where rendered payloads take "now" from.
#[derive(Clone, Debug, Default)]
pub struct SimClock(Option<Arc<AtomicI64>>);

impl SimClock {
    /// The system clock.
    pub fn system() -> Self {
        Self(None)
    }

    /// A clock that stands still at `start_ms` until [`SimClock::advance`] or
    /// [`SimClock::set_ms`] moves it (clones share the time).
    pub fn manual(start_ms: i64) -> Self {
        Self(Some(Arc::new(AtomicI64::new(start_ms))))
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match &self.0 {
            Some(ms) => ms.load(Ordering::SeqCst),
            None => system_now_ms(),
        }
    }

    /// Moves a manual clock forward by `by`; does nothing on the system clock.
    pub fn advance(&self, by: Duration) {
        if let Some(ms) = &self.0 {
            ms.fetch_add(
                i64::try_from(by.as_millis()).unwrap_or(i64::MAX),
                Ordering::SeqCst,
            );
        }
    }

    /// Sets a manual clock; does nothing on the system clock.
    pub fn set_ms(&self, now_ms: i64) {
        if let Some(ms) = &self.0 {
            ms.store(now_ms, Ordering::SeqCst);
        }
    }
}

fn system_now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// Options of [`serve`].
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// If set, requests must carry `Authorization: Bearer <token>` or get 401.
    pub bearer_token: Option<String>,
    /// Source of "now" for the payloads.
    pub clock: SimClock,
    /// Connections that do not finish the TLS handshake in time are dropped.
    pub handshake_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            bearer_token: None,
            clock: SimClock::system(),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// State of one node's kubelet, shared by its accept loop, its connections and the handle.
struct NodeSlot {
    addr: SocketAddr,
    behaviour: watch::Sender<Behaviour>,
    listening: watch::Sender<bool>,
    connections: watch::Sender<usize>,
    requests: AtomicU64,
    /// Response body bytes written (after compression): bytes on the wire, less framing.
    body_bytes: AtomicU64,
    /// Requests answered with a gzip-compressed body.
    gzipped: AtomicU64,
    /// When the current behaviour was set (simulator clock, ms).
    since_ms: AtomicI64,
    /// The [`Behaviour::WrongCertificate`] acceptor, made on first use.
    rogue: std::sync::OnceLock<Option<TlsAcceptor>>,
}

/// Everything the tasks share.
struct Shared {
    /// The fleet being served; replaced whole when pods change ([`SimHandle::update_fleet`]).
    fleet: ArcSwap<Fleet>,
    /// Serialises fleet updates (each is a read-copy-update of `fleet`).
    updating: std::sync::Mutex<()>,
    ca_pem: String,
    expected_auth: Option<String>,
    clock: SimClock,
    handshake_timeout: Duration,
    http: auto::Builder<TokioExecutor>,
    nodes: Vec<NodeSlot>,
}

/// What every spawned task holds: the shared state, the stop signal, and a guard whose
/// drop tells [`SimHandle::shutdown`] that the task ended.
#[derive(Clone)]
struct TaskCtx {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    _alive: mpsc::Sender<()>,
}

/// A running simulated fleet. Dropping it stops every listener and connection (as
/// [`SimHandle::shutdown`] does, without waiting).
pub struct SimHandle {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    finished: mpsc::Receiver<()>,
}

/// Starts one TLS kubelet per node of `fleet` and returns once every listener is bound.
///
/// Fails if a certificate cannot be made or an address cannot be bound (not local, in
/// use, or out of file descriptors: each node needs one, each connection another).
pub async fn serve(fleet: Arc<Fleet>, options: ServeOptions) -> Result<SimHandle, SimError> {
    let pki = Pki::new()?;
    let configs = fleet
        .nodes
        .iter()
        .map(|node| pki.server_config(node))
        .collect::<Result<Vec<_>, _>>()?;
    let listeners = fleet
        .nodes
        .iter()
        .map(|node| bind(SocketAddr::from((node.address, node.port))))
        .collect::<Result<Vec<_>, _>>()?;
    let nodes = listeners
        .iter()
        .map(NodeSlot::new)
        .collect::<Result<_, _>>()?;
    let shared = Arc::new(Shared::new(fleet, pki.ca_pem, options, nodes));
    let (alive, finished) = mpsc::channel(1);
    let ctx = TaskCtx {
        shared: shared.clone(),
        cancel: CancellationToken::new(),
        _alive: alive,
    };
    for (index, (listener, config)) in listeners.into_iter().zip(configs).enumerate() {
        tokio::spawn(accept_loop(
            ctx.clone(),
            index,
            listener,
            TlsAcceptor::from(config),
        ));
    }
    tracing::debug!(nodes = shared.nodes.len(), "kubelet simulator listening");
    Ok(SimHandle {
        shared,
        cancel: ctx.cancel,
        finished,
    })
}

impl NodeSlot {
    fn new(listener: &TcpListener) -> Result<Self, SimError> {
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        Ok(Self {
            addr,
            behaviour: watch::Sender::new(Behaviour::Normal),
            listening: watch::Sender::new(true),
            connections: watch::Sender::new(0),
            requests: AtomicU64::new(0),
            body_bytes: AtomicU64::new(0),
            gzipped: AtomicU64::new(0),
            since_ms: AtomicI64::new(0),
            rogue: std::sync::OnceLock::new(),
        })
    }
}

impl Shared {
    fn new(fleet: Arc<Fleet>, ca_pem: String, options: ServeOptions, nodes: Vec<NodeSlot>) -> Self {
        Self {
            fleet: ArcSwap::new(fleet),
            updating: std::sync::Mutex::new(()),
            ca_pem,
            expected_auth: options.bearer_token,
            clock: options.clock,
            handshake_timeout: options.handshake_timeout,
            http: http_builder(),
            nodes,
        }
    }

    /// Whether the request passes the kubelet's bearer-token authentication.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.expected_auth else {
            return true;
        };
        let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        match value.trim().split_once(' ') {
            Some((scheme, token)) => {
                scheme.eq_ignore_ascii_case("bearer") && token.trim() == expected
            }
            None => false,
        }
    }
}

/// HTTP/1.1 and h2 on one port; the timer enables hyper's 30 s header-read timeout.
fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    builder
}

/// A listening socket with `SO_REUSEADDR`, so a node can come back right after `Down`.
fn bind(addr: SocketAddr) -> Result<TcpListener, SimError> {
    let bind_error = |source| SimError::Bind { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(bind_error)?;
    socket.set_reuseaddr(true).map_err(bind_error)?;
    socket.bind(addr).map_err(bind_error)?;
    socket.listen(1024).map_err(bind_error)
}

/// Accepts connections for one node, closing and re-opening its listener as its
/// behaviour enters and leaves [`Behaviour::Down`].
async fn accept_loop(ctx: TaskCtx, index: usize, listener: TcpListener, acceptor: TlsAcceptor) {
    let slot = &ctx.shared.nodes[index];
    let mut behaviour = slot.behaviour.subscribe();
    let mut listener = Some(listener);
    loop {
        let down = *behaviour.borrow_and_update() == Behaviour::Down;
        sync_listener(&mut listener, down, slot);
        let retry_bind = listener.is_none() && !down;
        tokio::select! {
            () = ctx.cancel.cancelled() => return,
            changed = behaviour.changed() => if changed.is_err() { return },
            accepted = accept(listener.as_ref()) => match accepted {
                Ok((tcp, _)) => {
                    tokio::spawn(connection(ctx.clone(), index, tcp, acceptor.clone()));
                }
                Err(error) => {
                    tracing::warn!(node = index, %error, "simulated kubelet accept failed");
                    sleep(RETRY_PAUSE).await;
                }
            },
            () = sleep(RETRY_PAUSE), if retry_bind => {}
        }
    }
}

/// Drops the listener when down, re-binds it when up, and publishes which it is.
fn sync_listener(listener: &mut Option<TcpListener>, down: bool, slot: &NodeSlot) {
    if down {
        *listener = None;
    } else if listener.is_none() {
        match bind(slot.addr) {
            Ok(bound) => *listener = Some(bound),
            Err(error) => {
                tracing::warn!(addr = %slot.addr, %error, "simulated kubelet cannot re-bind")
            }
        }
    }
    let up = listener.is_some();
    slot.listening
        .send_if_modified(|state| std::mem::replace(state, up) != up);
}

async fn accept(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Counts an open connection for as long as it lives.
struct Open<'a>(&'a NodeSlot);

impl<'a> Open<'a> {
    fn new(slot: &'a NodeSlot) -> Self {
        slot.connections.send_modify(|n| *n += 1);
        Self(slot)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.connections.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Serves one TCP connection: TLS handshake, then HTTP/1.1 or h2 until the peer closes,
/// the node goes down or the simulator stops.
async fn connection(ctx: TaskCtx, index: usize, tcp: TcpStream, acceptor: TlsAcceptor) {
    let shared = &ctx.shared;
    let slot = &shared.nodes[index];
    let _open = Open::new(slot);
    let _ = tcp.set_nodelay(true);
    let mut behaviour = slot.behaviour.subscribe();
    let rogue = *slot.behaviour.borrow() == Behaviour::WrongCertificate;
    let acceptor = if rogue {
        match rogue_acceptor(shared, index) {
            Some(rogue) => rogue,
            None => return,
        }
    } else {
        acceptor
    };
    let serve = async {
        let Ok(Ok(tls)) = timeout(shared.handshake_timeout, acceptor.accept(tcp)).await else {
            return;
        };
        let state = shared.clone();
        let service = service_fn(move |req| respond(state.clone(), index, req));
        if let Err(error) = shared
            .http
            .serve_connection(TokioIo::new(tls), service)
            .await
        {
            tracing::trace!(node = index, %error, "simulated kubelet connection ended");
        }
    };
    tokio::select! {
        () = serve => {}
        () = ctx.cancel.cancelled() => {}
        // Down closes every connection; so does a change of certificate, so clients reconnect.
        _ = behaviour.wait_for(|b| *b == Behaviour::Down || (*b == Behaviour::WrongCertificate) != rogue) => {}
    }
}

/// A response body: whole, or streamed for the drip and huge-body faults.
type SimBody = BoxBody<Bytes, Infallible>;

/// The acceptor with a certificate from a CA nobody trusts, made once per node.
fn rogue_acceptor(shared: &Shared, index: usize) -> Option<TlsAcceptor> {
    shared.nodes[index]
        .rogue
        .get_or_init(|| {
            let made =
                Pki::new().and_then(|pki| pki.server_config(&shared.fleet.load().nodes[index]));
            match made {
                Ok(config) => Some(TlsAcceptor::from(config)),
                Err(error) => {
                    tracing::warn!(node = index, %error, "cannot make the rogue certificate");
                    None
                }
            }
        })
        .clone()
}

/// Whether the client accepts a gzip-compressed body (`Accept-Encoding: gzip`, no `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| p.replace(' ', "") == "q=0");
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// Answers one request according to the node's behaviour.
async fn respond(
    shared: Arc<Shared>,
    index: usize,
    req: Request<Incoming>,
) -> Result<Response<SimBody>, Infallible> {
    let slot = &shared.nodes[index];
    slot.requests.fetch_add(1, Ordering::Relaxed);
    let behaviour = delay(slot).await;
    if !shared.authorized(req.headers()) {
        return Ok(boxed(text(StatusCode::UNAUTHORIZED, "Unauthorized\n")));
    }
    if req.method() != Method::GET || req.uri().path() != METRICS_PATH {
        return Ok(boxed(text(StatusCode::NOT_FOUND, "404 page not found\n")));
    }
    let gzip = accepts_gzip(req.headers());
    let now = shared.clock.now_ms();
    let fleet = shared.fleet.load_full();
    let node = &fleet.nodes[index];
    let rendered = |at: i64| {
        let mut body = Vec::new();
        render(node, at, &mut body);
        body
    };
    Ok(match behaviour {
        Behaviour::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            boxed(text(status, format!("simulated kubelet status {code}\n")))
        }
        Behaviour::Garbage => metrics_response(slot, Bytes::from_static(GARBAGE), gzip),
        Behaviour::HugeBody(size) => huge_body(size),
        Behaviour::SlowDrip { chunk, every } => drip(Bytes::from(rendered(now)), chunk, every),
        Behaviour::CounterReset => {
            let at_reset: Vec<Option<f64>> = rendered(slot.since_ms.load(Ordering::Relaxed))
                .split_inclusive(|b| *b == b'\n')
                .map(|line| sample_value(std::str::from_utf8(line).unwrap_or_default()))
                .collect();
            let body = rewrite_values(&rendered(now), |line, metric, v| {
                let base = at_reset.get(line).copied().flatten().unwrap_or(0.0);
                metric
                    .ends_with("_cpu_usage_seconds_total")
                    .then(|| (v - base).max(0.0))
            });
            metrics_response(slot, Bytes::from(body), gzip)
        }
        Behaviour::ZeroValues => {
            let body = rewrite_values(&rendered(now), |_, metric, _| {
                (metric.ends_with("_cpu_usage_seconds_total")
                    || metric.ends_with("_memory_working_set_bytes"))
                .then_some(0.0)
            });
            metrics_response(slot, Bytes::from(body), gzip)
        }
        Behaviour::ClockSkew(ms) => {
            metrics_response(slot, Bytes::from(rendered(now.saturating_add(ms))), gzip)
        }
        Behaviour::AlsoReport(other) => {
            let mut body = rendered(now);
            if let Some(other) = fleet.nodes.get(other) {
                let mut theirs = Vec::new();
                render(other, now, &mut theirs);
                for line in theirs.split_inclusive(|b| *b == b'\n') {
                    if line.starts_with(b"container_") {
                        body.extend_from_slice(line);
                    }
                }
            }
            metrics_response(slot, Bytes::from(body), gzip)
        }
        Behaviour::Normal
        | Behaviour::Slow(_)
        | Behaviour::Hang
        | Behaviour::Down
        | Behaviour::WrongCertificate => metrics_response(slot, Bytes::from(rendered(now)), gzip),
    })
}

/// The sample value of a series line (`None` for comments and anything unparsable).
fn sample_value(text: &str) -> Option<f64> {
    if text.starts_with('#') {
        return None;
    }
    let name_end = text.find(['{', ' '])?;
    let after_labels = text.find('}').map_or(name_end, |i| i + 1);
    text[after_labels..].split_whitespace().next()?.parse().ok()
}

/// Rewrites sample values: `change(line index, metric, value)` returns the new value, or
/// `None` to keep the line as it is. Comment lines and timestamps are kept.
fn rewrite_values(body: &[u8], change: impl Fn(usize, &str, f64) -> Option<f64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    for (index, line) in body.split_inclusive(|b| *b == b'\n').enumerate() {
        let text = std::str::from_utf8(line).unwrap_or_default();
        let rewritten = (!text.starts_with('#'))
            .then(|| {
                let name_end = text.find(['{', ' '])?;
                let metric = &text[..name_end];
                let after_labels = text.find('}').map_or(name_end, |i| i + 1);
                let rest = text[after_labels..].trim_start();
                let (value, tail) = rest.split_once(' ').unwrap_or((rest.trim_end(), ""));
                let new = change(index, metric, value.parse().ok()?)?;
                let tail = tail.trim_end();
                let sep = if tail.is_empty() { "" } else { " " };
                Some(format!("{} {new:e}{sep}{tail}\n", &text[..after_labels]))
            })
            .flatten();
        match rewritten {
            Some(new) => out.extend_from_slice(new.as_bytes()),
            None => out.extend_from_slice(line),
        }
    }
    out
}

/// A body of `size` bytes of comment lines, streamed in 64 KiB frames without a length.
fn huge_body(size: usize) -> Response<SimBody> {
    const FRAME: usize = 64 * 1024;
    let mut line = vec![b'#'; FRAME];
    line[FRAME - 1] = b'\n';
    let frame = Bytes::from(line);
    let frames = size.div_ceil(FRAME);
    let stream = futures::stream::iter((0..frames).map(move |i| {
        let len = if i + 1 == frames {
            size - i * FRAME
        } else {
            FRAME
        };
        Ok::<_, Infallible>(Frame::data(frame.slice(..len)))
    }));
    stream_response(stream)
}

/// `body` in `chunk`-byte frames, `every` apart.
fn drip(body: Bytes, chunk: usize, every: Duration) -> Response<SimBody> {
    let chunk = chunk.max(1);
    let stream = futures::stream::unfold(0usize, move |at| {
        let body = body.clone();
        async move {
            if at >= body.len() {
                return None;
            }
            if at > 0 {
                sleep(every).await;
            }
            let end = (at + chunk).min(body.len());
            Some((Ok::<_, Infallible>(Frame::data(body.slice(at..end))), end))
        }
    });
    stream_response(stream)
}

fn stream_response(
    stream: impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + Sync + 'static,
) -> Response<SimBody> {
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(payload::CONTENT_TYPE),
    );
    response
}

fn boxed(response: Response<Full<Bytes>>) -> Response<SimBody> {
    response.map(BodyExt::boxed)
}

/// Applies [`Behaviour::Slow`] and [`Behaviour::Hang`]; returns the behaviour to answer with.
async fn delay(slot: &NodeSlot) -> Behaviour {
    let mut rx = slot.behaviour.subscribe();
    let current = rx.borrow_and_update().clone();
    match current {
        Behaviour::Slow(pause) => sleep(pause).await,
        Behaviour::Hang => {
            if rx.wait_for(|b| *b != Behaviour::Hang).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        _ => return current,
    }
    rx.borrow().clone()
}

/// A metrics body, gzip-compressed (default level, as the kubelet's Prometheus handler) when
/// the client accepts it.
fn metrics_response(slot: &NodeSlot, body: Bytes, gzip: bool) -> Response<SimBody> {
    let compressed = gzip.then(|| {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 4),
            flate2::Compression::default(),
        );
        encoder
            .write_all(&body)
            .and_then(|()| encoder.finish())
            .ok()
    });
    let (body, gzipped) = match compressed.flatten() {
        Some(bytes) => (Bytes::from(bytes), true),
        None => (body, false),
    };
    slot.body_bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    let mut response = Response::new(BodyExt::boxed(Full::new(body)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(payload::CONTENT_TYPE),
    );
    if gzipped {
        slot.gzipped.fetch_add(1, Ordering::Relaxed);
        response
            .headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Changes a running fleet's pods ([`SimHandle::control`]); clones share the fleet.
#[derive(Clone)]
pub struct SimControl(Arc<Shared>);

impl SimControl {
    /// The fleet as it is now.
    pub fn fleet(&self) -> Arc<Fleet> {
        self.0.fleet.load_full()
    }

    /// "Now" on the simulator's clock, ms since the epoch.
    pub fn now_ms(&self) -> i64 {
        self.0.clock.now_ms()
    }

    /// Changes the served fleet (a copy, swapped in whole: a scrape sees the fleet before or
    /// after, never half of it). `change` must keep the nodes (their count and addresses):
    /// it is for adding, removing and re-sizing pods ([`Fleet::put_pod`], [`Fleet::remove_pod`]).
    pub fn update_fleet<R>(&self, change: impl FnOnce(&mut Fleet) -> R) -> R {
        let _one_at_a_time = self
            .0
            .updating
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut fleet = Fleet::clone(&self.0.fleet.load());
        let count = fleet.nodes.len();
        let out = change(&mut fleet);
        if fleet.nodes.len() == count {
            self.0.fleet.store(Arc::new(fleet));
        } else {
            tracing::warn!("a fleet update changed the number of nodes; not applied");
        }
        out
    }
}

impl SimHandle {
    /// PEM of the CA that signed every node's serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.shared.ca_pem
    }

    /// The simulated fleet as it is now (expected values are read from it).
    pub fn fleet(&self) -> Arc<Fleet> {
        self.shared.fleet.load_full()
    }

    /// Changes the served fleet: see [`SimControl::update_fleet`].
    pub fn update_fleet<R>(&self, change: impl FnOnce(&mut Fleet) -> R) -> R {
        self.control().update_fleet(change)
    }

    /// A cloneable handle that changes the fleet's pods while it serves.
    pub fn control(&self) -> SimControl {
        SimControl(self.shared.clone())
    }

    /// The clock the payloads use.
    pub fn clock(&self) -> &SimClock {
        &self.shared.clock
    }

    /// The bound address of node `node` (differs from the fleet's port when it was 0).
    pub fn addr(&self, node: usize) -> Option<SocketAddr> {
        self.shared.nodes.get(node).map(|s| s.addr)
    }

    /// `https://<addr>/metrics/resource` of node `node`.
    pub fn url(&self, node: usize) -> Option<String> {
        self.addr(node)
            .map(|a| format!("https://{a}{METRICS_PATH}"))
    }

    /// Every node as a v1 `Node` ([`node_object`]) whose kubelet port is the bound one,
    /// for a cluster view when the fleet's port is 0.
    pub fn node_objects(&self) -> Vec<serde_json::Value> {
        let fleet = self.shared.fleet.load();
        let nodes = fleet.nodes.iter().zip(&self.shared.nodes);
        nodes
            .map(|(node, slot)| {
                let mut object = node_object(node);
                object["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] =
                    slot.addr.port().into();
                object
            })
            .collect()
    }

    /// Response body bytes node `node` has sent (compressed size when gzipped): what the
    /// scraper reads off the wire, less HTTP and TLS framing.
    pub fn body_bytes(&self, node: usize) -> u64 {
        self.shared
            .nodes
            .get(node)
            .map_or(0, |s| s.body_bytes.load(Ordering::Relaxed))
    }

    /// Requests node `node` answered with a gzip-compressed body.
    pub fn gzipped(&self, node: usize) -> u64 {
        self.shared
            .nodes
            .get(node)
            .map_or(0, |s| s.gzipped.load(Ordering::Relaxed))
    }

    /// Requests node `node` has received (any path, any outcome); 0 for an unknown index.
    pub fn requests(&self, node: usize) -> u64 {
        self.shared
            .nodes
            .get(node)
            .map_or(0, |s| s.requests.load(Ordering::Relaxed))
    }

    /// Open TCP connections of node `node`; 0 for an unknown index.
    pub fn connections(&self, node: usize) -> usize {
        self.shared
            .nodes
            .get(node)
            .map_or(0, |s| *s.connections.borrow())
    }

    /// The current behaviour of node `node`.
    pub fn behaviour(&self, node: usize) -> Option<Behaviour> {
        self.shared
            .nodes
            .get(node)
            .map(|s| s.behaviour.borrow().clone())
    }

    /// Changes how node `node` answers, and waits until it takes effect: for
    /// [`Behaviour::Down`] until its listener and connections are closed, when leaving
    /// it until the listener is bound again. Requests already waiting in
    /// [`Behaviour::Slow`] or [`Behaviour::Hang`] answer with the new behaviour.
    pub async fn set_behaviour(&self, node: usize, behaviour: Behaviour) -> Result<(), SimError> {
        let slot = self
            .shared
            .nodes
            .get(node)
            .ok_or(SimError::NoSuchNode(node))?;
        let down = behaviour == Behaviour::Down;
        slot.since_ms
            .store(self.shared.clock.now_ms(), Ordering::Relaxed);
        let mut listening = slot.listening.subscribe();
        let mut connections = slot.connections.subscribe();
        slot.behaviour.send_replace(behaviour);
        let settled = async {
            listening.wait_for(|&up| up != down).await.is_ok()
                && (!down || connections.wait_for(|&n| n == 0).await.is_ok())
        };
        match timeout(SETTLE_TIMEOUT, settled).await {
            Ok(true) => Ok(()),
            _ => Err(SimError::NotSettled {
                node,
                waited: SETTLE_TIMEOUT,
            }),
        }
    }

    /// Stops every listener and connection and waits (up to 10 s) until all have ended.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        let _ = timeout(Duration::from_secs(10), self.finished.recv()).await;
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimHandle")
            .field("nodes", &self.shared.nodes.len())
            .field("stopped", &self.cancel.is_cancelled())
            .finish_non_exhaustive()
    }
}
