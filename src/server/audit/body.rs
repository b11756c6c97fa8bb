//! The response body of a `RequestResponse` request, kept as it is sent so that
//! `ResponseComplete` carries it as `responseObject`. Only bodies the event wants
//! ([`AuditEvent::wants_response_body`]) are wrapped: other requests pay nothing.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::event::AuditEvent;
use crate::api::response::Body;

/// A body that copies what it sends and hands the whole of it to the event at its end.
pub struct AuditedBody {
    inner: Body,
    kept: Vec<u8>,
    content_type: Option<String>,
    /// Dropped after the body is handed over: writes `ResponseComplete`.
    event: Option<AuditEvent>,
}

impl AuditedBody {
    /// Wraps `inner` for `event`.
    pub fn new(inner: Body, event: AuditEvent, content_type: Option<String>) -> Self {
        AuditedBody {
            inner,
            kept: Vec::new(),
            content_type,
            event: Some(event),
        }
    }

    fn complete(&mut self) {
        if let Some(mut event) = self.event.take() {
            event.response_body(&self.kept, self.content_type.as_deref());
            self.kept = Vec::new();
            drop(event);
        }
    }
}

impl HttpBody for AuditedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.kept.extend_from_slice(data);
                }
                if self.inner.is_end_stream() {
                    self.complete();
                }
            }
            Poll::Ready(None) => self.complete(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request body of a request that carries one, read before the request is handled
/// when the policy records request bodies (a request extension for the audit event).
#[derive(Clone, Debug)]
pub struct RequestBody {
    /// The bytes, whole.
    pub bytes: Bytes,
    /// Its `Content-Type`.
    pub content_type: Option<String>,
}

/// Most request body bytes kept (upstream's default `--max-request-bytes`, 3 MiB); a
/// longer body is not recorded.
pub const MAX_REQUEST_BODY: usize = 3 * 1024 * 1024;

/// Whether requests with `method` carry a body worth recording (create, update, patch,
/// delete).
pub fn may_have_body(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::POST | http::Method::PUT | http::Method::PATCH | http::Method::DELETE
    )
}

/// Reads `req`'s body (at most [`MAX_REQUEST_BODY`] bytes, within `timeout`) into a
/// [`RequestBody`] extension; a body too long, too slow or broken is left out.
pub async fn read_request<B>(
    req: http::Request<B>,
    timeout: std::time::Duration,
) -> http::Request<()>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    let (mut parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_REQUEST_BODY);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Ok(Ok(collected)) => {
            let content_type = parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            parts.extensions.insert(RequestBody {
                bytes: collected.to_bytes(),
                content_type,
            });
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "request body not recorded for the audit log"),
        Err(_) => tracing::debug!("request body not recorded for the audit log: timed out"),
    }
    http::Request::from_parts(parts, ())
}
