//! `ListOptions` from the query string: selectors, paging, watch parameters, with
//! the validation k8s.io/apiserver applies.

use super::field_selector::FieldSelector;
use super::label_selector::LabelSelector;
use super::query::Query;
use super::status::ApiError;

/// The list/watch options of a request.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// `labelSelector`.
    pub label_selector: LabelSelector,
    /// `fieldSelector`.
    pub field_selector: FieldSelector,
    /// `limit` (0 = no limit).
    pub limit: usize,
    /// `continue` token.
    pub continue_token: Option<String>,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`.
    pub resource_version_match: Option<String>,
    /// `timeoutSeconds` (watch).
    pub timeout_seconds: Option<u64>,
    /// `allowWatchBookmarks`.
    pub allow_watch_bookmarks: bool,
    /// `sendInitialEvents`.
    pub send_initial_events: Option<bool>,
    /// `includeObject` for Table output.
    pub include_object: IncludeObject,
}

/// What each Table row carries in `object`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    /// `null`.
    None,
    /// A `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    /// The full object.
    Object,
}

fn parse_bool(name: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "true" | "1" | "True" | "TRUE" | "t" | "T" => Ok(true),
        "false" | "0" | "False" | "FALSE" | "f" | "F" | "" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "invalid value {v:?} for query parameter {name}: want a boolean"
        ))),
    }
}

impl ListOptions {
    /// Parses and validates the query parameters of a list or watch request. Each
    /// parameter's first value counts ([`Query::get`]), the same value
    /// [`RequestInfo`](super::request_info::RequestInfo) hands to authorization.
    pub fn from_query(query: &Query, watch: bool) -> Result<Self, ApiError> {
        let mut o = ListOptions::default();
        let value = |k: &str| query.get(k).filter(|v| !v.is_empty());
        if let Some(v) = query.get("labelSelector") {
            o.label_selector = LabelSelector::parse(v)
                .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        }
        if let Some(v) = query.get("fieldSelector") {
            o.field_selector = FieldSelector::parse(v)?;
        }
        if let Some(v) = query.get("limit") {
            let n: i64 = v.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid value {v:?} for query parameter limit: want an integer"
                ))
            })?;
            o.limit = n.max(0) as usize;
        }
        o.continue_token = value("continue").map(str::to_string);
        o.resource_version = value("resourceVersion").map(str::to_string);
        o.resource_version_match = value("resourceVersionMatch").map(str::to_string);
        if let Some(v) = query.get("timeoutSeconds") {
            o.timeout_seconds = Some(v.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid value {v:?} for query parameter timeoutSeconds: want a non-negative integer"
                ))
            })?);
        }
        if let Some(v) = query.get("allowWatchBookmarks") {
            o.allow_watch_bookmarks = parse_bool("allowWatchBookmarks", v)?;
        }
        if let Some(v) = query.get("sendInitialEvents") {
            o.send_initial_events = Some(parse_bool("sendInitialEvents", v)?);
        }
        if let Some(v) = query.get("includeObject") {
            o.include_object = match v {
                "None" => IncludeObject::None,
                "Metadata" | "" => IncludeObject::Metadata,
                "Object" => IncludeObject::Object,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "Unable to convert to Table as requested: includeObject {other:?} is not one of None, Metadata, Object"
                    )));
                }
            };
        }
        o.validate(watch)?;
        Ok(o)
    }

    fn validate(&self, watch: bool) -> Result<(), ApiError> {
        if self.continue_token.is_some() {
            if self.resource_version.as_deref().is_some_and(|rv| rv != "0") {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            if self.resource_version_match.is_some() {
                return Err(ApiError::invalid_list_options(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
        }
        if let Some(m) = &self.resource_version_match {
            if self.resource_version.is_none() && !(watch && self.send_initial_events.is_some()) {
                return Err(ApiError::invalid_list_options(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if m != "NotOlderThan" && m != "Exact" {
                return Err(ApiError::invalid_list_options(
                    "resourceVersionMatch",
                    &format!("resourceVersionMatch {m:?} is not one of Exact, NotOlderThan"),
                ));
            }
        }
        if self.send_initial_events.is_some() && !watch {
            return Err(ApiError::invalid_list_options(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for list",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Query {
        Query::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn repeated_parameters_take_the_first_value() {
        let o = ListOptions::from_query(
            &Query::parse(Some(
                "fieldSelector=metadata.name%3Dallowed&fieldSelector=&labelSelector=a%3D1&labelSelector=&limit=2&limit=0",
            )),
            false,
        )
        .unwrap();
        assert_eq!(o.field_selector.required_name(), Some("allowed"));
        assert!(!o.label_selector.is_empty());
        assert_eq!(o.limit, 2);
        // A bad later value is ignored, a bad first value is not.
        assert!(ListOptions::from_query(&Query::parse(Some("limit=1&limit=x")), false).is_ok());
        assert_eq!(
            ListOptions::from_query(&Query::parse(Some("limit=x&limit=1")), false)
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn continue_with_resource_version_is_400() {
        let e = ListOptions::from_query(&q(&[("continue", "x"), ("resourceVersion", "5")]), false)
            .unwrap_err();
        assert_eq!(e.code, 400);
        assert!(
            ListOptions::from_query(&q(&[("continue", "x"), ("resourceVersion", "0")]), false)
                .is_ok()
        );
    }

    #[test]
    fn rv_match_without_rv_is_422() {
        let e = ListOptions::from_query(&q(&[("resourceVersionMatch", "NotOlderThan")]), false)
            .unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"
        );
    }

    #[test]
    fn bad_values_are_400() {
        for (k, v) in [
            ("limit", "x"),
            ("labelSelector", "a in b"),
            ("includeObject", "All"),
            ("allowWatchBookmarks", "maybe"),
        ] {
            let e = ListOptions::from_query(&q(&[(k, v)]), false).unwrap_err();
            assert_eq!(e.code, 400, "{k}={v}");
        }
    }
}
