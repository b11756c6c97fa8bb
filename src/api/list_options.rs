//! `ListOptions` from the query string: selectors, paging, watch parameters, with
//! the validation k8s.io/apiserver applies.

use super::field_selector::FieldSelector;
use super::label_selector::LabelSelector;
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
    /// Parses and validates the query parameters of a list or watch request.
    pub fn from_query(query: &[(String, String)], watch: bool) -> Result<Self, ApiError> {
        let mut o = ListOptions::default();
        for (k, v) in query {
            match k.as_str() {
                "labelSelector" => {
                    o.label_selector = LabelSelector::parse(v).map_err(|e| {
                        ApiError::bad_request(format!("unable to parse requirement: {e}"))
                    })?;
                }
                "fieldSelector" => o.field_selector = FieldSelector::parse(v)?,
                "limit" => {
                    let n: i64 = v.parse().map_err(|_| {
                        ApiError::bad_request(format!(
                            "invalid value {v:?} for query parameter limit: want an integer"
                        ))
                    })?;
                    o.limit = n.max(0) as usize;
                }
                "continue" if !v.is_empty() => o.continue_token = Some(v.clone()),
                "resourceVersion" if !v.is_empty() => o.resource_version = Some(v.clone()),
                "resourceVersionMatch" if !v.is_empty() => {
                    o.resource_version_match = Some(v.clone())
                }
                "timeoutSeconds" => {
                    o.timeout_seconds = Some(v.parse().map_err(|_| {
                        ApiError::bad_request(format!(
                            "invalid value {v:?} for query parameter timeoutSeconds: want a non-negative integer"
                        ))
                    })?);
                }
                "allowWatchBookmarks" => o.allow_watch_bookmarks = parse_bool(k, v)?,
                "sendInitialEvents" => o.send_initial_events = Some(parse_bool(k, v)?),
                "includeObject" => {
                    o.include_object = match v.as_str() {
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
                _ => {}
            }
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

/// Parses `a=b&c=d` into decoded pairs.
pub fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| {
        url_pairs(q)
            .map(|(k, v)| (percent_decode(k), percent_decode(v)))
            .collect()
    })
    .unwrap_or_default()
}

fn url_pairs(q: &str) -> impl Iterator<Item = (&str, &str)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// Decodes `%XX` escapes and `+` (as a space) in a query component.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn decodes_queries() {
        assert_eq!(
            parse_query(Some("labelSelector=app%3Dweb&limit=500&x")),
            q(&[("labelSelector", "app=web"), ("limit", "500"), ("x", "")])
        );
        assert_eq!(percent_decode("a+b%2Cc%"), "a b,c%");
        assert_eq!(percent_decode("%zz"), "%zz");
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
