//! HTTP response helpers: the body type every handler returns and constructors for
//! JSON documents, plain text and `metav1.Status` errors.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};

use super::status::ApiError;

/// The response body type used throughout the server.
pub type Body = BoxBody<Bytes, Infallible>;

/// Wraps bytes as a [`Body`].
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// A 200 `application/json` response (API responses are never cached).
pub fn json(bytes: impl Into<Bytes>) -> Response<Body> {
    json_with_status(StatusCode::OK, bytes)
}

/// A JSON response with the given status.
pub fn json_with_status(status: StatusCode, bytes: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    resp
}

/// A 200 `application/vnd.kubernetes.protobuf` response.
pub fn protobuf(bytes: impl Into<Bytes>) -> Response<Body> {
    protobuf_with_status(StatusCode::OK, bytes)
}

/// A protobuf response with the given status.
pub fn protobuf_with_status(status: StatusCode, bytes: impl Into<Bytes>) -> Response<Body> {
    let mut resp = json_with_status(status, bytes);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(super::protobuf::MEDIA_TYPE),
    );
    resp
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// Go's `404 page not found` for paths outside every served group.
pub fn page_not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "404 page not found\n")
}

/// Serialises a value as a 200 JSON response.
pub fn json_value<T: serde::Serialize>(value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => json(bytes),
        Err(e) => error(&ApiError::internal(e)),
    }
}

/// A `metav1.Status` error response.
pub fn error(err: &ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = json_with_status(status, err.to_json());
    if let Some(s) = err.retry_after() {
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from(s));
    }
    resp
}

/// A `metav1.Status` error response in the type the request's `Accept` header asks for, as
/// kube-apiserver writes errors: protobuf when `protobuf` (the serializers in play can write
/// it) and it is the first plain type of the header, JSON otherwise (also when nothing in the
/// header is acceptable).
pub fn error_negotiated(err: &ApiError, accept: Option<&str>, protobuf: bool) -> Response<Body> {
    if protobuf && super::negotiate::status_as_protobuf(accept) {
        let status = StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        protobuf_with_status(status, super::protobuf::status(err))
    } else {
        error(err)
    }
}
