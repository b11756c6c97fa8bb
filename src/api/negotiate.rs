//! Content negotiation of the `Accept` header, with k8s.io/apiserver's rules:
//! clauses ordered by quality, `as=Table` / `as=PartialObjectMetadata[List]`
//! transforms, unknown parameters ignored, protobuf skipped in favour of JSON.

use super::status::ApiError;

/// The representation a response is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The plain object or list as JSON.
    Json,
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

/// Chooses the output for a resource response.
///
/// An empty or absent header means JSON. A clause naming a transform we cannot
/// produce is skipped; when no clause can be served the answer is 406.
pub fn negotiate(accept: Option<&str>, target: Target, table: bool) -> Result<Output, ApiError> {
    let Some(header) = accept.filter(|h| !h.trim().is_empty()) else {
        return Ok(Output::Json);
    };
    for range in parse_accept(header) {
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
    Err(ApiError::not_acceptable(
        "only the following media types are accepted: application/json",
    ))
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
