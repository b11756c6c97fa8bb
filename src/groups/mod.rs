//! The API groups we serve. Each supplies descriptors, objects, Table columns and
//! OpenAPI schemas; the shared machinery lives in [`crate::api`].

pub mod metrics;
pub mod metrics_watch;
pub mod records;
