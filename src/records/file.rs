//! The records file source: a YAML or JSON list of DataRecords (or a `List` /
//! `DataRecordList` object), with the lab's three records embedded as the default.
//!
//! The embedded records are the lab's seed (`seed.yaml`, a verbatim copy of the lab's
//! file): its values, uids and sync statuses; `creationTimestamp` and `lastSyncTime`
//! are the process start-up time, five minutes earlier for a `Stale` record (the lab's
//! `metrics-config`).

use std::path::PathBuf;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;

use super::types::{API_VERSION, DataRecord, DataRecordStatus, KIND};
use super::{RecordSource, RecordsError};
use crate::api::time::Time;

/// The embedded default records (`user-config`, `feature-flags`, `metrics-config`).
pub const EMBEDDED_SEED: &str = include_str!("seed.yaml");

/// How long before start-up a `Stale` embedded record was last synced (the lab's rule).
pub const EMBEDDED_STALE_AGE_MS: i64 = 5 * 60 * 1000;

/// Reads DataRecords from a file (re-read on every load), or the embedded default.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: Option<PathBuf>,
    /// When the embedded source was created (its records' start-up time).
    started: Time,
    refresh_interval: Option<std::time::Duration>,
}

impl FileSource {
    /// A source reading `path`.
    pub fn new(path: PathBuf) -> Self {
        FileSource {
            path: Some(path),
            started: Time::now(),
            refresh_interval: None,
        }
    }

    /// The embedded default records, stamped with the current time as start-up.
    pub fn embedded() -> Self {
        FileSource {
            path: None,
            started: Time::now(),
            refresh_interval: None,
        }
    }

    /// Re-reads the file every `interval` instead of the set's default.
    pub fn with_refresh_interval(mut self, interval: Option<std::time::Duration>) -> Self {
        self.refresh_interval = interval;
        self
    }

    fn label(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => "<embedded default records>".to_string(),
        }
    }
}

impl RecordSource for FileSource {
    fn name(&self) -> String {
        format!("file:{}", self.label())
    }

    fn load(&self) -> BoxFuture<'_, Result<Vec<DataRecord>, RecordsError>> {
        async move {
            match &self.path {
                Some(p) => {
                    let text = tokio::fs::read_to_string(p).await.map_err(|source| {
                        RecordsError::Read {
                            path: p.display().to_string(),
                            source,
                        }
                    })?;
                    parse_records(&self.label(), &text, Time::now())
                }
                None => embedded_records(self.started),
            }
        }
        .boxed()
    }

    fn refresh_interval(&self) -> Option<std::time::Duration> {
        self.refresh_interval
    }
}

/// A document that looks like JSON (it starts with `{` or `[`) and is valid JSON is read as
/// JSON, as k8s.io/apimachinery's YAMLOrJSONDecoder does; anything else as YAML. The YAML
/// parser is YAML 1.1 and folds a U+2028/U+2029 inside a quoted string as a line break (the
/// whitespace after it is dropped), which would change a JSON file's strings.
fn parse_document(text: &str) -> Result<Value, String> {
    let head = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if (head.starts_with('{') || head.starts_with('['))
        && let Ok(doc) = serde_json::from_str::<Value>(head)
    {
        return Ok(doc);
    }
    serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
}

/// The lab's seed records as served by a process started at `started`.
pub fn embedded_records(started: Time) -> Result<Vec<DataRecord>, RecordsError> {
    let mut records = parse_records("<embedded default records>", EMBEDDED_SEED, started)?;
    let stale_since = Time::from_millis(started.as_millis() - EMBEDDED_STALE_AGE_MS);
    for r in &mut records {
        if let Some(status) = &mut r.status
            && status.sync_status == "Stale"
        {
            status.last_sync_time = Some(stale_since);
        }
    }
    Ok(records)
}

/// Parses and validates a records document; `now` fills missing timestamps.
///
/// Errors name the file, the record (index and name) and the field.
pub fn parse_records(path: &str, text: &str, now: Time) -> Result<Vec<DataRecord>, RecordsError> {
    let invalid = |message: String| RecordsError::Invalid {
        path: path.to_string(),
        message,
    };
    let doc = parse_document(text).map_err(|e| invalid(format!("not valid YAML or JSON: {e}")))?;
    let items = match doc {
        Value::Array(items) => items,
        Value::Object(mut obj) => match obj.remove("items") {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(invalid(
                    "expected a list of DataRecords or an object with an \"items\" list".into(),
                ));
            }
        },
        Value::Null => Vec::new(),
        _ => {
            return Err(invalid(
                "expected a list of DataRecords or an object with an \"items\" list".into(),
            ));
        }
    };
    let mut records = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let name_hint = item
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(|n| format!(" ({n:?})"))
            .unwrap_or_default();
        let at = |field: &str, why: &str| {
            invalid(format!("record {index}{name_hint}: field {field}: {why}"))
        };
        let mut record: DataRecord = serde_path_to_error::deserialize(item).map_err(|e| {
            let field = e.path().to_string();
            at(&field, &e.into_inner().to_string())
        })?;
        if record.api_version != API_VERSION {
            return Err(at(
                "apiVersion",
                &format!("must be {API_VERSION:?}, got {:?}", record.api_version),
            ));
        }
        if record.kind != KIND {
            return Err(at(
                "kind",
                &format!("must be {KIND:?}, got {:?}", record.kind),
            ));
        }
        if !is_dns1123_subdomain(&record.metadata.name) {
            return Err(at(
                "metadata.name",
                "must be a lowercase RFC 1123 subdomain (a-z, 0-9, '-', '.'; at most 253 characters)",
            ));
        }
        let namespace = record
            .metadata
            .namespace
            .get_or_insert_with(|| "default".to_string());
        if !is_dns1123_label(namespace) {
            return Err(at(
                "metadata.namespace",
                "must be a lowercase RFC 1123 label (a-z, 0-9, '-'; at most 63 characters)",
            ));
        }
        if record.spec.source.trim().is_empty() {
            return Err(at("spec.source", "is required"));
        }
        let namespace = namespace.clone();
        let meta = &mut record.metadata;
        match &meta.uid {
            Some(uid) if uid.trim().is_empty() => {
                return Err(at("metadata.uid", "must not be empty when set"));
            }
            Some(_) => {}
            None => meta.uid = Some(record_uid(&namespace, &meta.name)),
        }
        meta.generation.get_or_insert(1);
        meta.creation_timestamp.get_or_insert(now);
        let status = record.status.get_or_insert_with(DataRecordStatus::default);
        status.last_sync_time.get_or_insert(now);
        if status.sync_status.is_empty() {
            status.sync_status = DEFAULT_SYNC_STATUS.into();
        }
        records.push(record);
    }
    let mut keys: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r.namespace(), r.metadata.name.as_str()))
        .collect();
    keys.sort_unstable();
    if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
        return Err(invalid(format!(
            "duplicate record {}/{}: names must be unique within a namespace",
            w[0].0, w[0].1
        )));
    }
    Ok(records)
}

/// The sync status of a record whose file gives none (the lab's word for "in sync").
pub const DEFAULT_SYNC_STATUS: &str = "Current";

/// A stable uid for a record, derived from its namespace and name.
pub fn record_uid(namespace: &str, name: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("data.kubedojo.io/datarecords/{namespace}/{name}").as_bytes(),
    )
    .to_string()
}

/// True for a lowercase RFC 1123 label (a namespace).
pub(crate) fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// True for a lowercase RFC 1123 subdomain (a record name).
pub(crate) fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_keep_a_line_separator_and_the_space_after_it() {
        // Found by fuzz/records_file: the YAML 1.1 parser folded "a\u{2028} b" to
        // "a\u{2028}b", so a JSON file's query changed (and a record written back as JSON
        // did not load as itself).
        let now = Time::from_millis(1_700_000_000_000);
        let json = r#"[{"apiVersion":"data.kubedojo.io/v1alpha1","kind":"DataRecord",
            "metadata":{"name":"x","namespace":"default"},
            "spec":{"source":"redis","query":"HGETALL\u2028 feature:flags"}}]"#
            .replace("\\u2028", "\u{2028}");
        let records = parse_records("r.json", &json, now).unwrap();
        assert_eq!(records[0].spec.query, "HGETALL\u{2028} feature:flags");
        let again =
            parse_records("again.json", &serde_json::to_string(&records).unwrap(), now).unwrap();
        assert_eq!(
            serde_json::to_string(&again).unwrap(),
            serde_json::to_string(&records).unwrap()
        );
        // YAML flow documents that are not JSON still load as YAML.
        let yaml = "[{apiVersion: data.kubedojo.io/v1alpha1, kind: DataRecord, metadata: {name: y, namespace: default}, spec: {source: file}}]";
        assert_eq!(
            parse_records("r.yaml", yaml, now).unwrap()[0].metadata.name,
            "y"
        );
    }

    fn now() -> Time {
        Time::from_millis(1_700_000_000_000)
    }

    #[test]
    fn embedded_seed_is_the_labs_file_verbatim() {
        // The lab's seed-records.yaml, copied byte for byte into src/records/seed.yaml.
        assert!(EMBEDDED_SEED.contains("exactly as its in-memory store seeds them"));
        let started = now();
        let records = embedded_records(started).unwrap();
        let summary: Vec<(&str, &str, &str, &str, &str, &str)> = records
            .iter()
            .map(|r| {
                (
                    r.namespace(),
                    r.metadata.name.as_str(),
                    r.metadata.uid.as_deref().unwrap(),
                    r.spec.source.as_str(),
                    r.spec.query.as_str(),
                    r.sync_status(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "default",
                    "user-config",
                    "a1b2c3d4-0001-0001-0001-000000000001",
                    "postgres",
                    "SELECT * FROM config WHERE env='production'",
                    "Current"
                ),
                (
                    "default",
                    "feature-flags",
                    "a1b2c3d4-0001-0001-0001-000000000002",
                    "redis",
                    "HGETALL feature:flags",
                    "Current"
                ),
                (
                    "monitoring",
                    "metrics-config",
                    "a1b2c3d4-0001-0001-0001-000000000003",
                    "consul",
                    "kv/monitoring/config",
                    "Stale"
                ),
            ]
        );
        let data = |i: usize| -> Vec<(String, String)> {
            records[i]
                .spec
                .data
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let kv = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            data(0),
            kv(&[
                ("log_level", "info"),
                ("max_connections", "100"),
                ("timeout_ms", "5000")
            ])
        );
        assert_eq!(
            data(1),
            kv(&[
                ("beta_api", "true"),
                ("dark_mode", "true"),
                ("new_dashboard", "false")
            ])
        );
        assert_eq!(
            data(2),
            kv(&[("retention_days", "30"), ("scrape_interval", "15s")])
        );
        let sync = |i: usize| records[i].status.as_ref().unwrap().last_sync_time.unwrap();
        assert_eq!(sync(0), started);
        assert_eq!(sync(1), started);
        assert_eq!(sync(2).as_millis(), started.as_millis() - 5 * 60 * 1000);
        assert!(
            records
                .iter()
                .all(|r| r.metadata.creation_timestamp == Some(started))
        );
        assert!(records.iter().all(|r| r.metadata.labels.is_empty()));
    }

    #[test]
    fn uids_come_from_the_file_or_are_derived() {
        let text = "- metadata: {name: a, uid: given}\n  spec: {source: s}\n- metadata: {name: b}\n  spec: {source: s}\n";
        let records = parse_records("r.yaml", text, now()).unwrap();
        assert_eq!(records[0].metadata.uid.as_deref(), Some("given"));
        assert_eq!(records[1].metadata.uid, Some(record_uid("default", "b")));
        assert_eq!(records[1].sync_status(), "Current");
        let text = "- metadata: {name: a, uid: ''}\n  spec: {source: s}\n";
        let e = parse_records("r.yaml", text, now())
            .unwrap_err()
            .to_string();
        assert!(e.contains("metadata.uid"), "{e}");
    }

    #[test]
    fn json_list_objects_are_accepted() {
        let text = r#"{"apiVersion":"v1","kind":"List","items":[{"metadata":{"name":"a"},"spec":{"source":"s"}}]}"#;
        let records = parse_records("f.json", text, now()).unwrap();
        assert_eq!(records[0].namespace(), "default");
        assert_eq!(
            records[0].status.as_ref().unwrap().last_sync_time,
            Some(now())
        );
    }

    #[test]
    fn errors_name_file_record_and_field() {
        let text = "- metadata: {name: a}\n  spec: {source: s, data: {k: [1]}}\n";
        let e = parse_records("/etc/r.yaml", text, now())
            .unwrap_err()
            .to_string();
        assert!(e.contains("/etc/r.yaml"), "{e}");
        assert!(e.contains("record 0 (\"a\")"), "{e}");
        assert!(e.contains("spec.data.k"), "{e}");

        let text = "- metadata: {name: a}\n  spec: {source: s}\n- metadata: {name: B}\n  spec: {source: s}\n";
        let e = parse_records("r.yaml", text, now())
            .unwrap_err()
            .to_string();
        assert!(e.contains("record 1 (\"B\"): field metadata.name"), "{e}");

        let text = "- metadata: {name: a}\n  spec: {query: q}\n";
        let e = parse_records("r.yaml", text, now())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("record 0 (\"a\")") && e.contains("source"),
            "{e}"
        );

        let text = "- metadata: {name: a}\n  spec: {source: s}\n  spek: {}\n";
        let e = parse_records("r.yaml", text, now())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `spek`"), "{e}");
    }

    #[test]
    fn duplicates_and_garbage_are_rejected() {
        let text = "- metadata: {name: a}\n  spec: {source: s}\n- metadata: {name: a}\n  spec: {source: t}\n";
        let e = parse_records("r.yaml", text, now())
            .unwrap_err()
            .to_string();
        assert!(e.contains("duplicate record default/a"), "{e}");
        assert!(parse_records("r.yaml", "{{{{", now()).is_err());
        assert!(parse_records("r.yaml", "42", now()).is_err());
        assert!(parse_records("r.yaml", "", now()).unwrap().is_empty());
    }
}
