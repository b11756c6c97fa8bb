//! `metav1.Status` errors with the codes, reasons and messages kube-apiserver uses.

use serde::Serialize;

/// A failed request, rendered as a `metav1.Status` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `metav1.StatusReason` (empty for a plain internal error).
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `details`, when the upstream constructor sets them.
    pub details: Option<Box<StatusDetails>>,
    /// `metadata.continue` (only for a resumable 410 Expired).
    pub continue_token: Option<String>,
}

/// `metav1.StatusDetails`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    /// Object name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// API group.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Resource (upstream puts the plural resource here).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Individual causes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
    /// Seconds the client should wait before retrying (also sent as `Retry-After`).
    #[serde(skip_serializing_if = "is_zero")]
    pub retry_after_seconds: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// `metav1.StatusCause`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatusCause {
    /// Machine-readable cause.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Human-readable cause.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Field path the cause refers to.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody<'a> {
    kind: &'static str,
    api_version: &'static str,
    metadata: StatusMeta<'a>,
    status: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a StatusDetails>,
    code: u16,
}

#[derive(Serialize)]
struct StatusMeta<'a> {
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    continue_: Option<&'a str>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            continue_token: None,
        }
    }

    /// 400 BadRequest (`NewBadRequest`: no details).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized, as the authentication filter writes it.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden with upstream's message shape.
    pub fn forbidden(message: impl Into<String>, details: StatusDetails) -> Self {
        let mut e = Self::new(403, "Forbidden", message);
        e.details = Some(Box::new(details));
        e
    }

    /// 404 for a named object: `<resource>.<group> "<name>" not found`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        let qualified = if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        };
        let mut e = Self::new(404, "NotFound", format!("{qualified} \"{name}\" not found"));
        e.details = Some(Box::new(StatusDetails {
            name: name.to_string(),
            group: group.to_string(),
            kind: resource.to_string(),
            ..StatusDetails::default()
        }));
        e
    }

    /// 404 for a path inside a served group/version that names no resource.
    pub fn unknown_resource() -> Self {
        let mut e = Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
        e.details = Some(Box::default());
        e
    }

    /// 405 for a method the resource does not support.
    pub fn method_not_allowed() -> Self {
        let mut e = Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        );
        e.details = Some(Box::default());
        e
    }

    /// 405 for `?watch` on a resource that cannot be watched.
    pub fn watch_not_supported(group: &str, resource: &str) -> Self {
        let mut e = Self::new(
            405,
            "MethodNotAllowed",
            format!("watch is not supported on resources of kind \"{resource}.{group}\""),
        );
        e.details = Some(Box::new(StatusDetails {
            group: group.to_string(),
            kind: resource.to_string(),
            ..StatusDetails::default()
        }));
        e
    }

    /// 406 NotAcceptable.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    /// 410 Expired for a continue token whose snapshot is gone.
    pub fn continue_expired(resumable: Option<String>) -> Self {
        let base = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter";
        let message = if resumable.is_some() {
            format!(
                "{base}, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list."
            )
        } else {
            format!("{base}.")
        };
        let mut e = Self::new(410, "Expired", message);
        e.continue_token = resumable;
        e
    }

    /// 410 Expired for a watch or list at a resourceVersion we no longer have.
    pub fn resource_version_expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 422 Invalid `ListOptions`.
    pub fn invalid_list_options(field: &str, detail: &str) -> Self {
        let mut e = Self::new(
            422,
            "Invalid",
            format!("ListOptions.meta.k8s.io \"\" is invalid: {field}: Forbidden: {detail}"),
        );
        e.details = Some(Box::new(StatusDetails {
            group: "meta.k8s.io".into(),
            kind: "ListOptions".into(),
            causes: vec![StatusCause {
                reason: "FieldValueForbidden".into(),
                message: format!("Forbidden: {detail}"),
                field: field.into(),
            }],
            ..StatusDetails::default()
        }));
        e
    }

    /// 500 InternalError for a real fault on our side.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        let err = err.to_string();
        let mut e = Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {err}"),
        );
        e.details = Some(Box::new(StatusDetails {
            causes: vec![StatusCause {
                message: err,
                ..StatusCause::default()
            }],
            ..StatusDetails::default()
        }));
        e
    }

    /// 504 Timeout (`NewTimeoutError`: "Timeout: " + message, retry after `retry_after_seconds`).
    pub fn timeout(message: impl std::fmt::Display, retry_after_seconds: u32) -> Self {
        let mut e = Self::new(504, "Timeout", format!("Timeout: {message}"));
        e.details = Some(Box::new(StatusDetails {
            retry_after_seconds,
            ..StatusDetails::default()
        }));
        e
    }

    /// 503 ServiceUnavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// 503 ServiceUnavailable with `retryAfterSeconds` (and a `Retry-After` header).
    pub fn unavailable_retry(message: impl Into<String>, retry_after_seconds: u32) -> Self {
        let mut e = Self::new(503, "ServiceUnavailable", message);
        e.details = Some(Box::new(StatusDetails {
            retry_after_seconds,
            ..StatusDetails::default()
        }));
        e
    }

    /// 504 Timeout for a resourceVersion newer than anything the source has
    /// (kube-apiserver's `ResourceVersionTooLarge` cause).
    pub fn too_large_resource_version(requested: u64, current: u64) -> Self {
        let mut e = Self::new(
            504,
            "Timeout",
            format!("Timeout: Too large resource version: {requested}, current: {current}"),
        );
        e.details = Some(Box::new(StatusDetails {
            causes: vec![StatusCause {
                reason: "ResourceVersionTooLarge".into(),
                message: "Too large resource version".into(),
                ..StatusCause::default()
            }],
            retry_after_seconds: 1,
            ..StatusDetails::default()
        }));
        e
    }

    /// `retryAfterSeconds` of the details, if any.
    pub fn retry_after(&self) -> Option<u32> {
        self.details
            .as_ref()
            .map(|d| d.retry_after_seconds)
            .filter(|s| *s > 0)
    }

    /// The `metav1.Status` JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        let body = StatusBody {
            kind: "Status",
            api_version: "v1",
            metadata: StatusMeta {
                continue_: self.continue_token.as_deref(),
            },
            status: "Failure",
            message: &self.message,
            reason: self.reason,
            details: self.details.as_deref(),
            code: self.code,
        };
        serde_json::to_vec(&body).expect("Status serialises")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_matches_kube_apiserver_bytes() {
        let e = ApiError::not_found("data.kubedojo.io", "datarecords", "x");
        assert_eq!(
            String::from_utf8(e.to_json()).unwrap(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"datarecords.data.kubedojo.io \"x\" not found","reason":"NotFound","details":{"name":"x","group":"data.kubedojo.io","kind":"datarecords"},"code":404}"#
        );
    }

    #[test]
    fn bad_request_has_no_details() {
        let e = ApiError::bad_request("nope");
        assert_eq!(
            String::from_utf8(e.to_json()).unwrap(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"nope","reason":"BadRequest","code":400}"#
        );
    }

    #[test]
    fn method_not_allowed_has_empty_details() {
        let json = String::from_utf8(ApiError::method_not_allowed().to_json()).unwrap();
        assert!(json.contains(r#""reason":"MethodNotAllowed","details":{},"code":405"#));
    }

    #[test]
    fn resumable_expired_carries_continue() {
        let e = ApiError::continue_expired(Some("tok".into()));
        let json = String::from_utf8(e.to_json()).unwrap();
        assert!(
            json.starts_with(r#"{"kind":"Status","apiVersion":"v1","metadata":{"continue":"tok"}"#)
        );
        assert!(json.contains(r#""reason":"Expired""#));
    }
}
