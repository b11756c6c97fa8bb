//! Watch streams: newline-delimited JSON `WatchEvent`s written as they happen,
//! with bookmarks, the WatchList initial-events marker, `timeoutSeconds` and the
//! 410 ERROR event for a resourceVersion that is too old.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;

use super::response::Body;
use super::status::ApiError;

/// A sender of encoded events; dropping it ends the stream.
pub type EventSender = mpsc::Sender<Bytes>;

/// A 200 streaming response fed by the returned sender, which holds up to 64 items.
pub fn stream() -> (EventSender, Response<Body>) {
    stream_with_capacity(64)
}

/// [`stream`] with a sender that holds up to `capacity` items (at least 1).
pub fn stream_with_capacity(capacity: usize) -> (EventSender, Response<Body>) {
    let (tx, rx) = mpsc::channel::<Bytes>(capacity.max(1));
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut resp = Response::new(StreamBody::new(frames).boxed());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    (tx, resp)
}

/// Encodes `{"type":<type>,"object":<object>}\n`.
pub fn event(kind: &str, object: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(event_len(kind, object.len()));
    write_event(&mut out, kind, object);
    Bytes::from(out)
}

/// Appends the line [`event`] encodes to `out`.
pub fn write_event(out: &mut Vec<u8>, kind: &str, object: &[u8]) {
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    out.extend_from_slice(object);
    out.extend_from_slice(b"}\n");
}

/// The length of the line [`event`] encodes for an object of `object_len` bytes.
pub fn event_len(kind: &str, object_len: usize) -> usize {
    r#"{"type":"","object":}"#.len() + 1 + kind.len() + object_len
}

/// A BOOKMARK event carrying only the resourceVersion (and the WatchList marker
/// `k8s.io/initial-events-end` when `initial_events_end`).
pub fn bookmark(
    api_version: &str,
    kind: &str,
    resource_version: &str,
    initial_events_end: bool,
) -> Bytes {
    let mut meta = serde_json::json!({"resourceVersion": resource_version});
    if initial_events_end {
        meta["annotations"] = serde_json::json!({"k8s.io/initial-events-end": "true"});
    }
    let object = serde_json::json!({"kind": kind, "apiVersion": api_version, "metadata": meta});
    event(
        "BOOKMARK",
        &serde_json::to_vec(&object).expect("bookmark serialises"),
    )
}

/// An ERROR event carrying a Status (e.g. 410 Expired).
pub fn error(e: &ApiError) -> Bytes {
    event("ERROR", &e.to_json())
}

/// How long a watch lasts: `timeoutSeconds`, else (also for `timeoutSeconds=0`, as
/// kube-apiserver treats it) a random 30–60 minutes as kube-apiserver does with its
/// default `--min-request-timeout`.
pub fn timeout(timeout_seconds: Option<u64>) -> Duration {
    match timeout_seconds {
        Some(s) if s > 0 => Duration::from_secs(s),
        _ => Duration::from_secs(
            MIN_REQUEST_TIMEOUT_SECS + rand::random_range(0..MIN_REQUEST_TIMEOUT_SECS),
        ),
    }
}

/// kube-apiserver's default `--min-request-timeout`.
pub const MIN_REQUEST_TIMEOUT_SECS: u64 = 1800;

/// The longest any watch may last (the server ends the stream then, even if the
/// client stopped reading and the producer is blocked).
pub fn hard_deadline(timeout_seconds: Option<u64>) -> Duration {
    match timeout_seconds {
        Some(s) if s > 0 => Duration::from_secs(s),
        _ => Duration::from_secs(2 * MIN_REQUEST_TIMEOUT_SECS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_timeout_means_the_default() {
        for t in [None, Some(0)] {
            let d = timeout(t).as_secs();
            assert!((1800..3600).contains(&d), "{t:?}: {d}");
        }
        assert_eq!(timeout(Some(5)), Duration::from_secs(5));
        assert_eq!(hard_deadline(Some(0)), Duration::from_secs(3600));
    }

    #[test]
    fn event_len_is_the_encoded_length() {
        for (kind, object) in [
            ("ADDED", &b"{}"[..]),
            ("MODIFIED", b"{\"a\":1}"),
            ("X", b""),
        ] {
            assert_eq!(event(kind, object).len(), event_len(kind, object.len()));
        }
    }
}
