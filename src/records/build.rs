//! Turns a [`SourcesConfig`] into record sources, in order.

use std::collections::HashMap;
use std::sync::Arc;

use super::postgres::config::resolve_connection;
use super::postgres::{ConnectionConfig, Database, QuerySource, TableSourceConfig};
use super::sources_config::{SourceConfig, SourcesConfig};
use super::{FileSource, RecordSource};

/// What the computed source reads (the metrics pipeline); `None` where there is none.
pub use super::computed::MetricsInputs;

/// Builds every in-memory source (file, postgresQuery, computed), in order; the
/// `postgres` table source is started separately ([`table_source`]). `metrics` feeds a
/// `computed` source.
///
/// Errors name the source (`sources[i]`) and never contain a secret.
pub fn build_sources(
    config: &SourcesConfig,
    metrics: Option<&MetricsInputs>,
) -> Result<Vec<Box<dyn RecordSource>>, String> {
    build_sources_with_kube(config, metrics, None)
}

/// As [`build_sources`], with a Kubernetes client for a `postgresQuery` source's
/// `configMap` (an error without one). Call inside a Tokio runtime (it starts the
/// ConfigMap watches).
pub fn build_sources_with_kube(
    config: &SourcesConfig,
    metrics: Option<&MetricsInputs>,
    kube: Option<&kube::Client>,
) -> Result<Vec<Box<dyn RecordSource>>, String> {
    let mut out: Vec<Box<dyn RecordSource>> = Vec::with_capacity(config.sources.len());
    // Query sources on the same connection share its pool.
    let mut databases: HashMap<String, Arc<Database>> = HashMap::new();
    for (i, source) in config.sources.iter().enumerate() {
        match source {
            SourceConfig::File(f) => {
                let file = match &f.path {
                    Some(path) => FileSource::new(path.clone()),
                    None => FileSource::embedded(),
                };
                out.push(Box::new(file.with_refresh_interval(f.refresh_interval)));
            }
            SourceConfig::Computed(c) => {
                let Some(metrics) = metrics else {
                    return Err(format!(
                        "sources[{i}]: a computed source needs the metrics pipeline, which this mode does not run"
                    ));
                };
                out.push(Box::new(super::computed::ComputedSource::new(
                    c.clone(),
                    metrics.clone(),
                )));
            }
            // The table source answers from SQL, not from memory: see `table_source`.
            SourceConfig::Postgres(_) => {}
            SourceConfig::PostgresQuery(q) => {
                let db = match databases.get(&q.connection) {
                    Some(db) => db.clone(),
                    None => {
                        let db = database(config, &q.connection)
                            .map_err(|e| format!("sources[{i}]: {e}"))?;
                        databases.insert(q.connection.clone(), db.clone());
                        db
                    }
                };
                let mut source = QuerySource::new(&q.connection, db, q.records.clone());
                if let Some(cm) = &q.config_map {
                    let Some(client) = kube else {
                        return Err(format!(
                            "sources[{i}].configMap: record definitions in a ConfigMap need the Kubernetes API, which this mode does not use (serve mode has it; use inline records here)"
                        ));
                    };
                    source = source.with_config_map(cm.clone(), client.clone());
                }
                out.push(Box::new(source));
            }
        }
    }
    Ok(out)
}

/// The `kind: postgres` table source of a configuration, resolved (its DSN read):
/// `None` when the configuration has none.
pub struct TableSourceSpec {
    /// The source's position in the configuration (`sources[i]`).
    pub index: usize,
    /// The connection, its DSN read.
    pub connection: ConnectionConfig,
    /// Schema and change-log retention.
    pub source: TableSourceConfig,
    /// Create or upgrade the schema at start-up.
    pub migrate: bool,
    /// How many in-memory sources (of the record set) come before the table: their
    /// records win a name over its rows, the rows win over the later ones'.
    pub sources_before: usize,
    /// True when other sources are configured too (served as a union with the set).
    pub combined: bool,
}

/// Resolves the table source of `config` (at most one; see [`SourcesConfig`]).
pub fn table_source(config: &SourcesConfig) -> Result<Option<TableSourceSpec>, String> {
    for (index, source) in config.sources.iter().enumerate() {
        if let SourceConfig::Postgres(p) = source {
            let c = config.connection(&p.connection).ok_or_else(|| {
                format!(
                    "sources[{index}].connection: no connection named {:?}",
                    p.connection
                )
            })?;
            let connection = resolve_connection(c).map_err(|e| format!("sources[{index}]: {e}"))?;
            let mut table = TableSourceConfig::new(p.schema.as_deref().unwrap_or("kubedojo"));
            if let Some(keep) = p.keep_changes {
                table.keep_changes = keep;
            }
            return Ok(Some(TableSourceSpec {
                index,
                connection,
                source: table,
                migrate: p.migrate,
                // Every other source is one in-memory source of the set, in order.
                sources_before: index,
                combined: config.sources.len() > 1,
            }));
        }
    }
    Ok(None)
}

fn database(config: &SourcesConfig, name: &str) -> Result<Arc<Database>, String> {
    let c = config
        .connection(name)
        .ok_or_else(|| format!("no connection named {name:?}"))?;
    Database::new(&resolve_connection(c)?)
}

/// The sources served when neither `--sources-config` nor `--records-file` is given:
/// the lab's embedded records, then the computed records.
pub fn default_sources(metrics: Option<&MetricsInputs>) -> Vec<Box<dyn RecordSource>> {
    let mut out: Vec<Box<dyn RecordSource>> = vec![Box::new(FileSource::embedded())];
    if let Some(metrics) = metrics {
        out.push(Box::new(super::computed::ComputedSource::new(
            Default::default(),
            metrics.clone(),
        )));
    }
    out
}
