//! Per-request and per-connection protection, as k8s.io/apiserver's filters and
//! secure serving provide it: an in-flight limit (429), a request timeout (504), panic
//! isolation (500), watch streams that end at their deadline or at shutdown, and the
//! activity tracking behind the idle-connection timeout.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::options::ServingOptions;
use crate::api::response::Body;

/// The server-wide limits every request passes through.
pub struct Limits {
    /// `--request-timeout` for non-long-running requests.
    pub request_timeout: Duration,
    /// `--max-requests-inflight` (None: no limit).
    pub inflight: Option<Arc<Semaphore>>,
    /// Cancelled when shutdown starts: watch streams end cleanly.
    pub closing: CancellationToken,
}

impl Limits {
    /// Limits from the serving flags.
    pub fn new(opts: &ServingOptions) -> Self {
        Limits {
            request_timeout: opts.request_timeout,
            inflight: (opts.max_requests_inflight > 0)
                .then(|| Arc::new(Semaphore::new(opts.max_requests_inflight))),
            closing: CancellationToken::new(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(&ServingOptions::default())
    }
}

/// Activity of one connection: requests in flight and the last byte moved.
#[derive(Debug)]
pub struct ConnActivity {
    started: Instant,
    last_ms: AtomicU64,
    active: AtomicUsize,
}

impl ConnActivity {
    /// A connection that just opened.
    pub fn new() -> Arc<Self> {
        Arc::new(ConnActivity {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            active: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// True when no request is in flight and nothing moved for `idle`.
    pub fn idle_for(&self, idle: Duration) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        self.active.load(Ordering::Acquire) == 0
            && now.saturating_sub(self.last_ms.load(Ordering::Relaxed)) >= idle.as_millis() as u64
    }

    /// Marks a request in flight until the guard (moved into its response body) drops.
    pub fn begin(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.touch();
        ActiveGuard(self.clone())
    }
}

/// A request in flight on a connection.
#[derive(Debug)]
pub struct ActiveGuard(Arc<ConnActivity>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An IO stream that records activity on every read and write.
pub struct TrackedIo<T> {
    inner: T,
    activity: Arc<ConnActivity>,
}

impl<T> TrackedIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, activity: Arc<ConnActivity>) -> Self {
        TrackedIo { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Completes at `deadline` or when `closing` is cancelled, whichever is first (the
/// helper task also ends when the receiver is dropped).
pub fn watch_stop(
    closing: CancellationToken,
    deadline: Duration,
) -> tokio::sync::oneshot::Receiver<()> {
    let (mut tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        tokio::select! {
            _ = closing.cancelled() => {}
            _ = tokio::time::sleep(deadline) => {}
            _ = tx.closed() => return,
        }
        let _ = tx.send(());
    });
    rx
}

/// A response body that holds its request's guards until it is dropped and, for
/// watches, ends cleanly (end of stream, not a reset) at `stop`.
pub struct GuardedBody {
    inner: Body,
    stop: Option<tokio::sync::oneshot::Receiver<()>>,
    _guards: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl GuardedBody {
    /// Wraps `inner`; `stop` ends the stream early when it completes.
    pub fn new(
        inner: Body,
        stop: Option<tokio::sync::oneshot::Receiver<()>>,
        guards: Vec<Box<dyn std::any::Any + Send + Sync>>,
    ) -> Self {
        GuardedBody {
            inner,
            stop,
            _guards: guards,
        }
    }
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(stop) = self.stop.as_mut()
            && Pin::new(stop).poll(cx).is_ready()
        {
            return Poll::Ready(None);
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.stop.is_some() {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}
