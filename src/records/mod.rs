//! DataRecords and where they come from. Sources sit behind one trait so that new
//! ones (computed from metrics, an external database) plug in without touching the
//! API layer; a [`RecordSet`] merges their output into one served snapshot.

mod file;
pub mod postgres;
pub mod set;
mod types;

pub use file::{FileSource, parse_records};
pub use set::{RecordSet, RecordsSnapshot};
pub use types::{DataRecord, DataRecordSpec, DataRecordStatus};

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
pub trait RecordSource: Send + Sync {
    /// A short name for logs and health checks (e.g. `file:/etc/records.yaml`).
    fn name(&self) -> String;
    /// Loads the current records of this source.
    fn load(&self) -> BoxFuture<'_, Result<Vec<DataRecord>, RecordsError>>;
}
