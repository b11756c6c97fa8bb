//! Query record definitions kept in a ConfigMap (a `postgresQuery` source's
//! `configMap: {namespace, name, key}`), watched through the Kubernetes API.
//!
//! The key holds the same YAML list as the source's inline `records`. Every version of
//! the ConfigMap replaces the ConfigMap's records (the set turns the difference into
//! ADDED / MODIFIED / DELETED events); a record whose definition is unchanged keeps its
//! cached result. A malformed version (bad YAML, an invalid record, a name used twice or
//! by an inline record, the key missing) is rejected as a whole: the last good
//! definitions stay, and a log line, `kubedojo_datarecord_query_configmap_rejected_total`
//! and [`ConfigMapDefinitions::error`] name the ConfigMap, the key and what is wrong. A
//! deleted (or missing) ConfigMap has no definitions. The watch lists and watches with
//! a `metadata.name` field selector, so a Role granting get/list/watch on that one
//! ConfigMap (`resourceNames`) is enough.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

use super::query::QueryRecord;
use super::query_metrics::config_map_read;
use crate::records::sources_config::{ConfigMapRef, QueryRecordConfig, validate_query_record};

/// The definitions of one ConfigMap key, as last read.
pub(super) struct ConfigMapDefinitions {
    reference: ConfigMapRef,
    /// (namespace, name) of the source's inline records (a ConfigMap may not reuse them).
    inline: BTreeSet<(String, String)>,
    default_timeout: Duration,
    state: Mutex<State>,
    /// Bumped whenever the definitions change (the record set reloads the source).
    version: watch::Sender<u64>,
    /// True once the ConfigMap has been read (or could not be: the error says why).
    ready: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    records: Vec<Arc<QueryRecord>>,
    error: Option<String>,
    /// The last watch failure logged (logged again only when it changes).
    watch_error: Option<String>,
}

impl ConfigMapDefinitions {
    pub(super) fn new(
        reference: ConfigMapRef,
        inline: BTreeSet<(String, String)>,
        default_timeout: Duration,
    ) -> Self {
        ConfigMapDefinitions {
            reference,
            inline,
            default_timeout,
            state: Mutex::new(State::default()),
            version: watch::channel(0).0,
            ready: watch::channel(false).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The records now.
    pub(super) fn records(&self) -> Vec<Arc<QueryRecord>> {
        self.lock().records.clone()
    }

    /// Why the current version is not in use (naming the ConfigMap and key).
    pub(super) fn error(&self) -> Option<String> {
        self.lock().error.clone()
    }

    /// A receiver that changes whenever the definitions do.
    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Waits (at most `limit`) for the first read of the ConfigMap.
    pub(super) async fn initialized(&self, limit: Duration) {
        let mut rx = self.ready.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|r| *r)).await;
    }

    /// Parses the key's text into definitions; errors say where (`records[i]...`).
    fn parse(&self, text: &str) -> Result<Vec<QueryRecordConfig>, String> {
        let defs: Vec<QueryRecordConfig> =
            serde_yaml_ng::from_str(text).map_err(|e| format!("not a list of records: {e}"))?;
        let mut seen = BTreeSet::new();
        for (j, r) in defs.iter().enumerate() {
            let at = format!("records[{j}]");
            validate_query_record(r, &at)?;
            let id = (r.namespace.clone(), r.name.clone());
            if self.inline.contains(&id) {
                return Err(format!(
                    "{at}: {}/{} is already an inline record of the source",
                    r.namespace, r.name
                ));
            }
            if !seen.insert(id) {
                return Err(format!("{at}: a second record {}/{}", r.namespace, r.name));
            }
        }
        Ok(defs)
    }

    /// Applies one version of the ConfigMap's data (`None`: there is no ConfigMap).
    pub(super) fn apply(&self, data: Option<&BTreeMap<String, String>>) {
        let r = &self.reference;
        let parsed = match data {
            None => Ok(Vec::new()),
            Some(data) => match data.get(&r.key) {
                None => Err("the key is missing".to_string()),
                Some(text) => self.parse(text),
            },
        };
        let mut state = self.lock();
        match parsed {
            Ok(defs) => {
                let old: BTreeMap<(String, String), Arc<QueryRecord>> = state
                    .records
                    .iter()
                    .map(|q| ((q.def.namespace.clone(), q.def.name.clone()), q.clone()))
                    .collect();
                let records: Vec<Arc<QueryRecord>> = defs
                    .into_iter()
                    .map(|def| {
                        match old.get(&(def.namespace.clone(), def.name.clone())) {
                            // Unchanged: keep its cached result.
                            Some(q) if q.def == def => q.clone(),
                            _ => Arc::new(QueryRecord::new(def, self.default_timeout)),
                        }
                    })
                    .collect();
                let changed = records.len() != state.records.len()
                    || records
                        .iter()
                        .zip(&state.records)
                        .any(|(a, b)| !Arc::ptr_eq(a, b));
                if data.is_none() {
                    tracing::warn!(configmap = %r, "the ConfigMap of DataRecord query definitions does not exist; serving none of its records");
                    state.error = Some(format!("{r}: the ConfigMap does not exist"));
                    config_map_read(&r.namespace, &r.name, &r.key, false);
                } else {
                    if changed || state.error.is_some() {
                        tracing::info!(configmap = %r, records = records.len(), "DataRecord query definitions read from the ConfigMap");
                    }
                    state.error = None;
                    config_map_read(&r.namespace, &r.name, &r.key, true);
                }
                state.records = records;
                drop(state);
                if changed {
                    self.version.send_modify(|v| *v += 1);
                }
            }
            Err(why) => {
                let message = format!("{r}: {why}");
                tracing::warn!(
                    configmap = %r,
                    error = %message,
                    kept = state.records.len(),
                    "DataRecord query definitions rejected; keeping the last good definitions"
                );
                state.error = Some(message);
                config_map_read(&r.namespace, &r.name, &r.key, false);
            }
        }
        self.ready.send_replace(true);
    }

    /// Watches the ConfigMap until the task is aborted (the kube crate's watcher: it
    /// relists after a broken watch, with backoff).
    pub(super) async fn run(self: Arc<Self>, client: kube::Client) {
        let r = &self.reference;
        let api: Api<ConfigMap> = Api::namespaced(client, &r.namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={}", r.name));
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        let mut listed: Option<ConfigMap> = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Init) => listed = None,
                Ok(Event::InitApply(cm)) => listed = Some(cm),
                Ok(Event::InitDone) => {
                    self.lock().watch_error = None;
                    let cm = listed.take();
                    self.apply(cm.as_ref().map(data).as_ref());
                }
                Ok(Event::Apply(cm)) => self.apply(Some(&data(&cm))),
                Ok(Event::Delete(_)) => self.apply(None),
                Err(e) => {
                    let message = format!("{r}: cannot watch it: {e}");
                    let mut state = self.lock();
                    if state.watch_error.as_deref() != Some(message.as_str()) {
                        tracing::warn!(configmap = %r, error = %e, "cannot watch the ConfigMap of DataRecord query definitions; keeping the last good definitions");
                        state.watch_error = Some(message.clone());
                    }
                    if !*self.ready.borrow() {
                        // Never read: say why instead of waiting at start-up.
                        state.error = Some(message);
                        config_map_read(&r.namespace, &r.name, &r.key, false);
                        drop(state);
                        self.ready.send_replace(true);
                    }
                }
            }
        }
    }
}

fn data(cm: &ConfigMap) -> BTreeMap<String, String> {
    cm.data.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs() -> ConfigMapDefinitions {
        ConfigMapDefinitions::new(
            ConfigMapRef {
                namespace: "ops".into(),
                name: "queries".into(),
                key: "records.yaml".into(),
            },
            [("default".to_string(), "inline".to_string())].into(),
            Duration::from_secs(1),
        )
    }

    fn with(text: &str) -> BTreeMap<String, String> {
        [("records.yaml".to_string(), text.to_string())].into()
    }

    fn names(d: &ConfigMapDefinitions) -> Vec<String> {
        d.records().iter().map(|r| r.def.name.clone()).collect()
    }

    #[test]
    fn versions_replace_the_records_and_bad_ones_keep_the_last_good() {
        let d = defs();
        let rx = d.subscribe();
        d.apply(Some(&with(
            "- {name: a, query: 'SELECT 1, 2'}\n- {name: b, query: 'SELECT 3, 4'}",
        )));
        assert_eq!(names(&d), ["a", "b"]);
        assert_eq!(d.error(), None);
        assert_eq!(*rx.borrow(), 1);
        let a = d.records()[0].clone();

        // b changes, a is kept (same cache), c is new.
        d.apply(Some(&with(
            "- {name: a, query: 'SELECT 1, 2'}\n- {name: b, query: 'SELECT 5, 6'}\n- {name: c, query: 'SELECT 7, 8'}",
        )));
        assert_eq!(names(&d), ["a", "b", "c"]);
        assert!(Arc::ptr_eq(&a, &d.records()[0]));
        assert_eq!(d.records()[1].def.query, "SELECT 5, 6");

        for (bad, says) in [
            ("- {name: a, query: [}", "not a list of records"),
            (
                "- {name: Bad_Name, query: 'SELECT 1, 2'}",
                "records[0].name",
            ),
            (
                "- {name: a, query: 'SELECT 1, 2', colour: red}",
                "unknown field",
            ),
            (
                "- {name: a, query: 'x'}\n- {name: a, query: 'y'}",
                "records[1]: a second record default/a",
            ),
            ("- {name: inline, query: 'x'}", "already an inline record"),
        ] {
            d.apply(Some(&with(bad)));
            let e = d.error().expect("an error");
            assert!(
                e.starts_with("ConfigMap ops/queries key \"records.yaml\": "),
                "{e}"
            );
            assert!(e.contains(says), "{bad}: {e}");
            assert_eq!(names(&d), ["a", "b", "c"], "{bad}");
        }
        d.apply(Some(&BTreeMap::new()));
        assert!(d.error().unwrap().contains("the key is missing"));
        assert_eq!(names(&d), ["a", "b", "c"]);

        // Good again; then deleted: no records.
        d.apply(Some(&with("- {name: a, query: 'SELECT 1, 2'}")));
        assert_eq!((names(&d), d.error()), (vec!["a".to_string()], None));
        d.apply(None);
        assert!(names(&d).is_empty());
        assert!(d.error().unwrap().contains("does not exist"));
    }
}
