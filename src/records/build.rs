//! Turns a [`SourcesConfig`] into record sources, in order.

use super::sources_config::{SourceConfig, SourcesConfig};
use super::{FileSource, RecordSource};

/// What the computed source reads (the metrics pipeline); `None` where there is none.
pub use super::computed::MetricsInputs;

/// Builds every configured source, in order. `metrics` feeds a `computed` source.
///
/// Errors name the source (`sources[i]`) and never contain a secret.
pub fn build_sources(
    config: &SourcesConfig,
    metrics: Option<&MetricsInputs>,
) -> Result<Vec<Box<dyn RecordSource>>, String> {
    let mut out: Vec<Box<dyn RecordSource>> = Vec::with_capacity(config.sources.len());
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
            SourceConfig::Postgres(_) | SourceConfig::PostgresQuery(_) => {
                return Err(format!(
                    "sources[{i}]: kind {} is not available in this build yet (the PostgreSQL sources of issue 11)",
                    source.kind()
                ));
            }
        }
    }
    Ok(out)
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
