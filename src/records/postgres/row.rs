//! A row of `<schema>.datarecords` (as `to_jsonb(row)`, the same shape the change log
//! stores) turned into a validated DataRecord; a bad row is an error naming it.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::api::label_selector::{is_valid_label_key, is_valid_label_value};
use crate::api::meta::ObjectMeta;
use crate::api::time::Time;
use crate::records::set::StoredRecord;
use crate::records::types::{API_VERSION, KIND};
use crate::records::{DataRecord, DataRecordSpec, DataRecordStatus};

/// Why a row cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    /// The row's namespace (as stored, possibly invalid).
    pub namespace: String,
    /// The row's name (as stored, possibly invalid).
    pub name: String,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for BadRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "row ({:?}, {:?}): {}",
            self.namespace, self.name, self.reason
        )
    }
}

fn text<'a>(row: &'a Value, key: &str) -> Option<&'a str> {
    row.get(key).and_then(Value::as_str)
}

fn string_map(
    row: &Value,
    key: &str,
    check: impl Fn(&str, &str) -> Result<(), String>,
) -> Result<BTreeMap<String, String>, String> {
    match row.get(key) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => {
                    check(k, s)?;
                    Ok((k.clone(), s.clone()))
                }
                other => Err(format!(
                    "{key}.{k} must be a string, got {}",
                    json_type(other)
                )),
            })
            .collect(),
        Some(other) => Err(format!(
            "{key} must be a JSON object, got {}",
            json_type(other)
        )),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn timestamp(row: &Value, key: &str) -> Result<Option<Time>, String> {
    match row.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s
            .parse::<jiff::Timestamp>()
            .map(|t| Some(Time::from_millis(t.as_millisecond())))
            .map_err(|e| format!("{key} {s:?} is not a timestamp: {e}")),
        Some(other) => Err(format!(
            "{key} must be a timestamp, got {}",
            json_type(other)
        )),
    }
}

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// Converts one row image into a DataRecord.
pub fn record_from_row(row: &Value) -> Result<DataRecord, BadRow> {
    let namespace = text(row, "namespace").unwrap_or_default().to_string();
    let name = text(row, "name").unwrap_or_default().to_string();
    let bad = |reason: String| BadRow {
        namespace: namespace.clone(),
        name: name.clone(),
        reason,
    };
    if !is_dns1123_label(&namespace) {
        return Err(bad(
            "namespace must be a lowercase RFC 1123 label (a-z, 0-9, '-'; at most 63 characters)"
                .into(),
        ));
    }
    if !is_dns1123_subdomain(&name) {
        return Err(bad(
            "name must be a lowercase RFC 1123 subdomain (a-z, 0-9, '-', '.'; at most 253 characters)"
                .into(),
        ));
    }
    let labels = string_map(row, "labels", |k, v| {
        if !is_valid_label_key(k) {
            return Err(format!("label key {k:?} is not a valid label key"));
        }
        if !is_valid_label_value(v) {
            return Err(format!("label {k}={v:?}: not a valid label value"));
        }
        Ok(())
    })
    .map_err(bad)?;
    let annotations = string_map(row, "annotations", |_, _| Ok(())).map_err(bad)?;
    let data = string_map(row, "data", |_, _| Ok(())).map_err(bad)?;
    let rv = row
        .get("resource_version")
        .and_then(Value::as_i64)
        .ok_or_else(|| bad("resource_version is missing".into()))?;
    let created = timestamp(row, "created_at").map_err(bad)?;
    let last_sync = timestamp(row, "last_sync_time").map_err(bad)?;
    Ok(DataRecord {
        api_version: API_VERSION.to_string(),
        kind: KIND.to_string(),
        metadata: ObjectMeta {
            name: name.clone(),
            namespace: Some(namespace.clone()),
            uid: text(row, "uid").map(str::to_string),
            resource_version: Some(rv.to_string()),
            generation: Some(1),
            creation_timestamp: created,
            labels: Arc::new(labels),
            annotations,
        },
        spec: DataRecordSpec {
            source: text(row, "source").unwrap_or_default().to_string(),
            query: text(row, "query").unwrap_or_default().to_string(),
            data,
        },
        status: Some(DataRecordStatus {
            last_sync_time: last_sync,
            sync_status: text(row, "sync_status").unwrap_or_default().to_string(),
            ..Default::default()
        }),
    })
}

/// A row as a served record, or the reason it is skipped (logged and counted).
pub fn stored_from_row(row: &Value) -> Result<Arc<StoredRecord>, BadRow> {
    record_from_row(row).map(|r| Arc::new(StoredRecord::new(r)))
}

/// Logs and counts a skipped row.
pub fn report_bad_row(source: &str, bad: &BadRow) {
    tracing::warn!(
        source,
        namespace = %bad.namespace,
        name = %bad.name,
        reason = %bad.reason,
        "skipping a DataRecords row that is not a valid DataRecord"
    );
    crate::telemetry::record_bad_row(source, &bad.namespace, &bad.name);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row() -> Value {
        json!({
            "namespace": "team-a", "name": "cfg", "uid": "6f1c7c1e-0000-4000-8000-000000000001",
            "labels": {"app": "web"}, "annotations": {}, "source": "postgres", "query": "",
            "data": {"k": "v"}, "sync_status": "Current",
            "last_sync_time": "2026-12-01T10:00:00.5+00:00",
            "created_at": "2026-12-01T09:00:00.123456+00:00", "resource_version": 42
        })
    }

    #[test]
    fn a_good_row_is_a_record() {
        let r = record_from_row(&row()).unwrap();
        assert_eq!(r.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(r.metadata.labels["app"], "web");
        assert_eq!(r.spec.data["k"], "v");
        assert_eq!(
            r.metadata.creation_timestamp.unwrap().to_string(),
            "2026-12-01T09:00:00Z"
        );
        assert_eq!(r.sync_status(), "Current");
    }

    #[test]
    fn bad_rows_name_the_row_and_the_field() {
        let cases = [
            ("name", json!("Bad_Name"), "name must be"),
            ("namespace", json!(""), "namespace must be"),
            ("labels", json!({"app": 1}), "labels.app must be a string"),
            ("labels", json!({"bad key": "x"}), "not a valid label key"),
            (
                "labels",
                json!({"app": "no spaces"}),
                "not a valid label value",
            ),
            ("labels", json!([1]), "labels must be a JSON object"),
            (
                "data",
                json!({"k": {"nested": true}}),
                "data.k must be a string",
            ),
            ("created_at", json!("yesterday"), "created_at"),
        ];
        for (field, value, want) in cases {
            let mut r = row();
            r[field] = value;
            let e = record_from_row(&r).unwrap_err();
            assert!(e.reason.contains(want), "{field}: {e}");
        }
    }
}
