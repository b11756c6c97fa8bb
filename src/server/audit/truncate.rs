//! `--audit-<plugin>-truncate-*` (upstream's `plugin/pkg/audit/truncate`): an event
//! larger than `max_event_size` bytes (its JSON) loses `requestObject` and
//! `responseObject` and gets the annotation `audit.k8s.io/truncated: "true"`; still too
//! large, it is dropped (`apiserver_audit_error_total{plugin="truncate"}`). Batches are
//! split so none is larger than `max_batch_size`.

use std::sync::Arc;

use serde_json::{Value, json};

use super::backend::{Backend, Event};

/// The plugin name in error metrics.
const PLUGIN: &str = "truncate";

/// The limits, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TruncateConfig {
    /// Largest event passed on.
    pub max_event_size: u64,
    /// Largest batch passed on.
    pub max_batch_size: u64,
}

impl TruncateConfig {
    /// Checks the values as upstream's `AuditTruncateOptions.Validate`.
    pub fn validate(&self, plugin: &str) -> Result<(), String> {
        if self.max_event_size == 0 {
            return Err(format!(
                "--audit-{plugin}-truncate-max-event-size: must be a positive number"
            ));
        }
        if self.max_batch_size < self.max_event_size {
            return Err(format!(
                "--audit-{plugin}-truncate-max-batch-size {}: must be greater than max event size ({})",
                self.max_batch_size, self.max_event_size
            ));
        }
        Ok(())
    }
}

/// The truncating backend in front of a plugin.
pub struct Truncate {
    delegate: Box<dyn Backend>,
    config: TruncateConfig,
}

impl Truncate {
    /// Wraps `delegate`.
    pub fn new(delegate: Box<dyn Backend>, config: TruncateConfig) -> Self {
        Truncate { delegate, config }
    }
}

/// The event's size as the plugin writes it (its JSON and a newline).
fn size(e: &Value) -> u64 {
    serde_json::to_vec(e).map_or(u64::MAX, |v| v.len() as u64 + 1)
}

/// The event without its request and response objects, annotated as truncated.
fn truncated(e: &Value) -> Value {
    let mut out = e.clone();
    if let Some(map) = out.as_object_mut() {
        map.remove("requestObject");
        map.remove("responseObject");
        let annotations = map.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = annotations.as_object_mut() {
            a.insert("audit.k8s.io/truncated".into(), json!("true"));
        }
    }
    out
}

impl Backend for Truncate {
    fn process(&self, events: &[Event]) -> bool {
        let mut ok = true;
        let mut batch: Vec<Event> = Vec::new();
        let mut batch_size = 0u64;
        let mut too_large: Vec<Event> = Vec::new();
        for e in events {
            let mut e = e.clone();
            let mut n = size(&e);
            let has_bodies = matches!(e["level"].as_str(), Some("Request" | "RequestResponse"));
            if n > self.config.max_event_size && has_bodies {
                e = Arc::new(truncated(&e));
                n = size(&e);
            }
            if n > self.config.max_event_size {
                too_large.push(e);
                continue;
            }
            if !batch.is_empty() && batch_size + n > self.config.max_batch_size {
                ok &= self.delegate.process(&batch);
                batch.clear();
                batch_size = 0;
            }
            batch_size += n;
            batch.push(e);
        }
        if !batch.is_empty() {
            ok &= self.delegate.process(&batch);
        }
        if !too_large.is_empty() {
            super::metrics::plugin_error(
                PLUGIN,
                &"event is too large even after truncating",
                &too_large,
            );
        }
        ok
    }

    fn shutdown(&self) {
        self.delegate.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::super::backend::testing::Recorder;
    use super::*;

    fn big(id: &str, level: &str, body: usize) -> Event {
        Arc::new(json!({
            "kind": "Event", "auditID": id, "level": level,
            "responseObject": {"data": "x".repeat(body)},
        }))
    }

    #[test]
    fn a_large_event_loses_its_objects_and_is_annotated() {
        let rec = Arc::new(Recorder::default());
        let t = Truncate::new(
            Box::new(rec.clone()),
            TruncateConfig {
                max_event_size: 200,
                max_batch_size: 1000,
            },
        );
        assert!(t.process(&[
            big("small", "RequestResponse", 10),
            big("large", "RequestResponse", 500)
        ]));
        let batches = rec.batches.lock().unwrap();
        let events: Vec<&Event> = batches.iter().flatten().collect();
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[0]["responseObject"]["data"],
            "x".repeat(10),
            "small events are untouched"
        );
        assert!(events[0].get("annotations").is_none());
        assert!(events[1].get("responseObject").is_none());
        assert_eq!(events[1]["annotations"]["audit.k8s.io/truncated"], "true");
    }

    #[test]
    fn an_event_still_too_large_is_dropped_and_counted() {
        let rec = Arc::new(Recorder::default());
        let t = Truncate::new(
            Box::new(rec.clone()),
            TruncateConfig {
                max_event_size: 100,
                max_batch_size: 1000,
            },
        );
        let before = super::super::metrics::errors_of(PLUGIN);
        // Metadata events keep everything: no objects to remove, so too large is dropped.
        let meta = Arc::new(
            json!({"kind": "Event", "auditID": "m", "level": "Metadata", "requestURI": "/".repeat(100)}),
        );
        assert!(t.process(&[meta, big("ok", "Metadata", 1)]));
        assert_eq!(rec.ids(), ["ok"]);
        assert_eq!(super::super::metrics::errors_of(PLUGIN) - before, 1);
    }

    #[test]
    fn batches_are_split_by_bytes() {
        let rec = Arc::new(Recorder::default());
        let t = Truncate::new(
            Box::new(rec.clone()),
            TruncateConfig {
                max_event_size: 1000,
                max_batch_size: 250,
            },
        );
        let events: Vec<Event> = (0..6)
            .map(|i| big(&i.to_string(), "Metadata", 50))
            .collect();
        let one = size(&events[0]);
        assert!(t.process(&events));
        let batches = rec.batches.lock().unwrap();
        assert!(batches.len() > 1, "{one} bytes each, 250 per batch");
        for b in batches.iter() {
            assert!(b.len() as u64 * one <= 250, "{}", b.len());
        }
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 6);
        let bad = TruncateConfig {
            max_event_size: 10,
            max_batch_size: 5,
        };
        assert!(bad.validate("log").unwrap_err().contains("max-batch-size"));
    }
}
