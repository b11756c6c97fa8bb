//! Content negotiation of the `Accept` header, with k8s.io/apiserver's rules:
//! clauses ordered by quality, `as=Table` / `as=PartialObjectMetadata[List]`
//! transforms, unknown parameters ignored, protobuf for resources that have it (and
//! skipped in favour of JSON for those that do not).

use super::status::ApiError;

/// The representation a response is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The plain object or list as JSON.
    Json,
    /// The plain object or list as Kubernetes protobuf (`application/vnd.kubernetes.protobuf`).
    Protobuf,
    /// A `meta.k8s.io` Table (`version` is `v1` or `v1beta1`).
    Table {
        /// `meta.k8s.io` version asked for.
        version: &'static str,
    },
    /// `PartialObjectMetadata` (single object).
    PartialObjectMetadata {
        /// `meta.k8s.io` version asked for.
        version: &'static str,
    },
    /// `PartialObjectMetadataList` (list).
    PartialObjectMetadataList {
        /// `meta.k8s.io` version asked for.
        version: &'static str,
    },
}

/// Whether the response is a single object or a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A single object (GET by name).
    Object,
    /// A list.
    List,
}

/// One parsed clause of an `Accept` header.
#[derive(Clone, Debug, PartialEq)]
pub struct MediaRange {
    /// Type, e.g. `application` or `*`.
    pub kind: String,
    /// Subtype, e.g. `json` or `*`.
    pub subtype: String,
    /// Parameters other than `q`, lower-cased keys.
    pub params: Vec<(String, String)>,
    /// Quality.
    pub q: f32,
}

impl MediaRange {
    /// The value of a parameter.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// True when this range accepts `application/json`.
    pub fn accepts_json(&self) -> bool {
        (self.kind == "application" || self.kind == "*")
            && (self.subtype == "json" || self.subtype == "*")
    }

    /// True when this range names `application/vnd.kubernetes.protobuf` itself (a wildcard
    /// means JSON, the first type kube-apiserver's serializers list).
    pub fn is_protobuf(&self) -> bool {
        self.kind == "application" && self.subtype == "vnd.kubernetes.protobuf"
    }
}

/// Parses an `Accept` header into clauses sorted by quality then specificity
/// (goautoneg's order); clauses with q=0 are dropped.
pub fn parse_accept(header: &str) -> Vec<MediaRange> {
    let mut ranges: Vec<MediaRange> = header
        .split(',')
        .filter_map(|clause| {
            let mut parts = clause.split(';');
            let mime = parts.next()?.trim().to_ascii_lowercase();
            let (kind, subtype) = mime.split_once('/')?;
            if kind.is_empty() || subtype.is_empty() {
                return None;
            }
            let mut q = 1.0f32;
            let mut params = Vec::new();
            for p in parts {
                let Some((k, v)) = p.split_once('=') else {
                    continue;
                };
                let k = k.trim().to_ascii_lowercase();
                let v = v.trim().trim_matches('"').to_string();
                if k == "q" {
                    q = v.parse().unwrap_or(1.0);
                } else {
                    params.push((k, v));
                }
            }
            Some(MediaRange {
                kind: kind.to_string(),
                subtype: subtype.to_string(),
                params,
                q,
            })
        })
        .filter(|r| r.q > 0.0)
        .collect();
    ranges.sort_by(|a, b| {
        b.q.partial_cmp(&a.q)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| specificity(b).cmp(&specificity(a)))
    });
    ranges
}

fn specificity(r: &MediaRange) -> u8 {
    match (r.kind.as_str(), r.subtype.as_str()) {
        ("*", _) => 0,
        (_, "*") => 1,
        _ => 2,
    }
}

fn meta_version(v: Option<&str>) -> Option<&'static str> {
    match v {
        Some("v1") => Some("v1"),
        Some("v1beta1") => Some("v1beta1"),
        _ => None,
    }
}

/// Chooses the output for a resource without protobuf support (see [`negotiate_output`]).
pub fn negotiate(accept: Option<&str>, target: Target, table: bool) -> Result<Output, ApiError> {
    negotiate_output(accept, target, table, false)
}

/// Chooses the output for a resource response.
///
/// An empty or absent header means JSON. The first clause we can serve wins:
/// `application/vnd.kubernetes.protobuf` (without `as=`) when `protobuf` is true, JSON or a
/// JSON transform otherwise. A clause naming a transform we cannot produce (Table and
/// PartialObjectMetadata are served as JSON only) is skipped; when no clause can be served the
/// answer is 406.
pub fn negotiate_output(
    accept: Option<&str>,
    target: Target,
    table: bool,
    protobuf: bool,
) -> Result<Output, ApiError> {
    let Some(header) = accept.filter(|h| !h.trim().is_empty()) else {
        return Ok(Output::Json);
    };
    for range in parse_accept(header) {
        if protobuf && range.is_protobuf() && range.param("as").is_none() {
            return Ok(Output::Protobuf);
        }
        if !range.accepts_json() {
            continue;
        }
        let Some(as_) = range.param("as") else {
            return Ok(Output::Json);
        };
        if range.param("g") != Some("meta.k8s.io") {
            continue;
        }
        let Some(version) = meta_version(range.param("v")) else {
            continue;
        };
        match (as_, target) {
            ("Table", _) if table => return Ok(Output::Table { version }),
            ("Table", _) => continue,
            ("PartialObjectMetadata", Target::Object) => {
                return Ok(Output::PartialObjectMetadata { version });
            }
            ("PartialObjectMetadataList", Target::List) => {
                return Ok(Output::PartialObjectMetadataList { version });
            }
            ("PartialObjectMetadata", Target::List) => {
                return Err(ApiError::not_acceptable(
                    "you requested PartialObjectMetadata, but the requested object is a list (use PartialObjectMetadataList)",
                ));
            }
            ("PartialObjectMetadataList", Target::Object) => {
                return Err(ApiError::not_acceptable(
                    "you requested PartialObjectMetadataList, but the requested object is not a list (use PartialObjectMetadata)",
                ));
            }
            _ => continue,
        }
    }
    Err(ApiError::not_acceptable(if protobuf {
        "only the following media types are accepted: application/json, application/vnd.kubernetes.protobuf"
    } else {
        "only the following media types are accepted: application/json"
    }))
}

/// Whether an error (`metav1.Status`) for this request is written as protobuf: the first
/// clause naming a plain type we write Status in (JSON or protobuf, no transform) is
/// protobuf. Anything else, including no acceptable clause at all, gets JSON.
pub fn status_as_protobuf(accept: Option<&str>) -> bool {
    let Some(header) = accept.filter(|h| !h.trim().is_empty()) else {
        return false;
    };
    for range in parse_accept(header) {
        if range.param("as").is_some() {
            continue;
        }
        if range.is_protobuf() {
            return true;
        }
        if range.accepts_json() {
            return false;
        }
    }
    false
}

/// The media types we can serve a non-resource JSON document as (discovery, version).
pub fn accepts_plain_json(accept: Option<&str>) -> bool {
    match accept.filter(|h| !h.trim().is_empty()) {
        None => true,
        Some(h) => parse_accept(h).iter().any(|r| r.accepts_json()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECTL_GET: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

    #[test]
    fn kubectl_get_gets_a_table() {
        assert_eq!(
            negotiate(Some(KUBECTL_GET), Target::List, true),
            Ok(Output::Table { version: "v1" })
        );
        assert_eq!(
            negotiate(Some(KUBECTL_GET), Target::List, false),
            Ok(Output::Json)
        );
    }

    #[test]
    fn protobuf_with_wildcard_falls_back_to_json() {
        let h = "application/vnd.kubernetes.protobuf, */*";
        assert_eq!(negotiate(Some(h), Target::List, true), Ok(Output::Json));
        let h = "application/vnd.kubernetes.protobuf,application/json";
        assert_eq!(negotiate(Some(h), Target::Object, true), Ok(Output::Json));
    }

    #[test]
    fn protobuf_first_for_resources_that_have_it() {
        let hpa = "application/vnd.kubernetes.protobuf, */*";
        assert_eq!(
            negotiate_output(Some(hpa), Target::List, true, true),
            Ok(Output::Protobuf)
        );
        let pb_only = "application/vnd.kubernetes.protobuf";
        assert_eq!(
            negotiate_output(Some(pb_only), Target::Object, true, true),
            Ok(Output::Protobuf)
        );
        // JSON first, or protobuf with a lower quality: JSON.
        let json_first = "application/json, application/vnd.kubernetes.protobuf";
        assert_eq!(
            negotiate_output(Some(json_first), Target::List, true, true),
            Ok(Output::Json)
        );
        let low = "application/vnd.kubernetes.protobuf;q=0.5, application/json";
        assert_eq!(
            negotiate_output(Some(low), Target::List, true, true),
            Ok(Output::Json)
        );
        // A wildcard is JSON, as kube-apiserver lists JSON first.
        assert_eq!(
            negotiate_output(Some("*/*"), Target::List, true, true),
            Ok(Output::Json)
        );
        // Transforms in protobuf are skipped: the next clause decides.
        let pom = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
        assert_eq!(
            negotiate_output(Some(pom), Target::List, true, true),
            Ok(Output::PartialObjectMetadataList { version: "v1" })
        );
        let table = "application/vnd.kubernetes.protobuf;as=Table;g=meta.k8s.io;v=v1";
        assert_eq!(
            negotiate_output(Some(table), Target::List, true, true)
                .unwrap_err()
                .code,
            406
        );
        assert_eq!(
            negotiate_output(Some("text/html"), Target::List, true, true)
                .unwrap_err()
                .message,
            "only the following media types are accepted: application/json, application/vnd.kubernetes.protobuf"
        );
    }

    #[test]
    fn status_follows_the_first_plain_type() {
        assert!(status_as_protobuf(Some(
            "application/vnd.kubernetes.protobuf, */*"
        )));
        assert!(status_as_protobuf(Some(
            "application/json;as=Table;v=v1;g=meta.k8s.io, application/vnd.kubernetes.protobuf"
        )));
        assert!(!status_as_protobuf(Some(
            "application/json, application/vnd.kubernetes.protobuf"
        )));
        assert!(!status_as_protobuf(Some("*/*")));
        assert!(!status_as_protobuf(Some("text/html")));
        assert!(!status_as_protobuf(None));
    }

    #[test]
    fn protobuf_only_is_406() {
        let e = negotiate(
            Some("application/vnd.kubernetes.protobuf"),
            Target::List,
            true,
        )
        .unwrap_err();
        assert_eq!(e.code, 406);
        assert_eq!(e.reason, "NotAcceptable");
        assert!(negotiate(Some("text/html"), Target::List, true).is_err());
    }

    #[test]
    fn partial_object_metadata() {
        let h = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
        assert_eq!(
            negotiate(Some(h), Target::List, true),
            Ok(Output::PartialObjectMetadataList { version: "v1" })
        );
        let h = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
        assert_eq!(
            negotiate(Some(h), Target::Object, true),
            Ok(Output::PartialObjectMetadata { version: "v1" })
        );
        assert_eq!(
            negotiate(Some(h), Target::List, true).unwrap_err().code,
            406
        );
    }

    #[test]
    fn quality_orders_clauses() {
        let h = "application/json;as=Table;v=v1;g=meta.k8s.io;q=0.5,application/json";
        assert_eq!(negotiate(Some(h), Target::List, true), Ok(Output::Json));
        assert_eq!(negotiate(None, Target::List, true), Ok(Output::Json));
        assert_eq!(negotiate(Some("*/*"), Target::List, true), Ok(Output::Json));
    }
}
