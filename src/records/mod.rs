//! DataRecords and where they come from. Sources sit behind one trait so that new
//! ones (computed from metrics, an external database) plug in without touching the
//! API layer; a [`RecordSet`] merges their output into one served snapshot.

#[cfg(feature = "server")]
pub mod build;
#[cfg(feature = "server")]
pub mod computed;
mod file;
#[cfg(feature = "server")]
mod merge;
#[cfg(feature = "server")]
pub mod postgres;
#[cfg(feature = "server")]
pub mod set;
#[cfg(feature = "server")]
pub mod sources_config;
mod types;
#[cfg(feature = "server")]
pub mod union;
#[cfg(feature = "server")]
pub mod version;

#[cfg(feature = "server")]
pub use build::{build_sources, default_sources};
#[cfg(feature = "server")]
pub use computed::{ComputedSource, MetricsInputs};
pub use file::{DEFAULT_SYNC_STATUS, FileSource, embedded_records, parse_records};
#[cfg(feature = "server")]
pub use set::{RecordSet, RecordsSnapshot};
#[cfg(feature = "server")]
pub use sources_config::SourcesConfig;
pub use types::{Condition, DataRecord, DataRecordSpec, DataRecordStatus};

use futures::future::BoxFuture;

/// Why a source could not produce its records.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// A file could not be read.
    #[error("cannot read records file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file or document is not a valid list of DataRecords.
    #[error("invalid records file {path}: {message}")]
    Invalid {
        /// The file (or `<embedded>`).
        path: String,
        /// What is wrong, naming the record and the field.
        message: String,
    },
    /// Any other source failure (network, database).
    #[error("records source {source_name}: {message}")]
    Source {
        /// The source's name.
        source_name: String,
        /// What went wrong.
        message: String,
    },
}

/// A producer of DataRecords.
///
/// The [`RecordSet`] loads every source at start-up, then again every
/// [`refresh_interval`](RecordSource::refresh_interval) and, for a push source, whenever
/// its [`changes`](RecordSource::changes) receiver sees a new value. A load returns the
/// source's whole current set of records; the set works out what changed, so a source
/// never deals with resourceVersions or events.
pub trait RecordSource: Send + Sync {
    /// A short name for logs and health checks (e.g. `file:/etc/records.yaml`); never a
    /// secret.
    fn name(&self) -> String;
    /// Loads the current records of this source.
    fn load(&self) -> BoxFuture<'_, Result<Vec<DataRecord>, RecordsError>>;
    /// How often to re-load; `None` means the set's default (`--records-refresh-interval`).
    fn refresh_interval(&self) -> Option<std::time::Duration> {
        None
    }
    /// For a push source: a receiver whose value changes whenever the source has new data
    /// (the computed source follows the metrics store's scrape cycles). Called once.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
    /// True when a new `status.lastSyncTime` alone is a change (a MODIFIED event): a
    /// source whose sync time is the last successful read of an outside system (a
    /// `postgresQuery` record). Sources that stamp every load with the current time
    /// (files, computed records) keep the default `false`, so only a changed value is
    /// an event.
    fn sync_time_is_content(&self) -> bool {
        false
    }
}
