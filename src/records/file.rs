//! The records file source: a YAML or JSON list of DataRecords (or a `List` /
//! `DataRecordList` object), with the lab's three records embedded as the default.

use std::path::PathBuf;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;

use super::types::{API_VERSION, DataRecord, DataRecordStatus, KIND};
use super::{RecordSource, RecordsError};
use crate::api::time::Time;

/// The embedded default records (`user-config`, `feature-flags`, `metrics-config`).
pub const EMBEDDED_SEED: &str = include_str!("seed.yaml");

/// Reads DataRecords from a file (re-read on every load), or the embedded default.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: Option<PathBuf>,
}

impl FileSource {
    /// A source reading `path`.
    pub fn new(path: PathBuf) -> Self {
        FileSource { path: Some(path) }
    }

    /// The embedded default records.
    pub fn embedded() -> Self {
        FileSource { path: None }
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
            let text = match &self.path {
                Some(p) => {
                    tokio::fs::read_to_string(p)
                        .await
                        .map_err(|source| RecordsError::Read {
                            path: p.display().to_string(),
                            source,
                        })?
                }
                None => EMBEDDED_SEED.to_string(),
            };
            parse_records(&self.label(), &text, Time::now())
        }
        .boxed()
    }
}

/// Parses and validates a records document; `now` fills missing timestamps.
///
/// Errors name the file, the record (index and name) and the field.
pub fn parse_records(path: &str, text: &str, now: Time) -> Result<Vec<DataRecord>, RecordsError> {
    let invalid = |message: String| RecordsError::Invalid {
        path: path.to_string(),
        message,
    };
    let doc: Value = serde_yaml_ng::from_str(text)
        .map_err(|e| invalid(format!("not valid YAML or JSON: {e}")))?;
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
        meta.uid = Some(record_uid(&namespace, &meta.name));
        meta.generation.get_or_insert(1);
        meta.creation_timestamp.get_or_insert(now);
        let status = record.status.get_or_insert_with(DataRecordStatus::default);
        status.last_sync_time.get_or_insert(now);
        if status.sync_status.is_empty() {
            status.sync_status = "Synced".into();
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

/// A stable uid for a record, derived from its namespace and name.
pub fn record_uid(namespace: &str, name: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("data.kubedojo.io/datarecords/{namespace}/{name}").as_bytes(),
    )
    .to_string()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Time {
        Time::from_millis(1_700_000_000_000)
    }

    #[test]
    fn embedded_seed_has_the_lab_records() {
        let records = parse_records("seed", EMBEDDED_SEED, now()).unwrap();
        let keys: Vec<(String, String)> = records
            .iter()
            .map(|r| (r.namespace().to_string(), r.metadata.name.clone()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("default".to_string(), "user-config".to_string()),
                ("default".to_string(), "feature-flags".to_string()),
                ("monitoring".to_string(), "metrics-config".to_string()),
            ]
        );
        assert!(records.iter().all(|r| r.sync_status() == "Synced"));
        assert_eq!(records[0].spec.data["theme"], "dark");
        assert_eq!(
            records[0].metadata.uid,
            Some(record_uid("default", "user-config"))
        );
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
