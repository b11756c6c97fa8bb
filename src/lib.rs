//! kubedojo-data-api: a Kubernetes aggregated API server serving
//! `metrics.k8s.io/v1beta1` (a drop-in for metrics-server) and
//! `data.kubedojo.io/v1alpha1` DataRecords.
//!
//! Data flows one way: kubelets → scraper → store → API. The API layer only reads.
#![warn(missing_docs)]

#[cfg(feature = "server")]
pub mod api;
pub mod auth;
#[cfg(feature = "server")]
pub mod cluster;
#[cfg(feature = "server")]
pub mod compat;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod demo;
#[cfg(feature = "server")]
pub mod groups;
#[cfg(feature = "server")]
pub mod ha;
#[cfg(feature = "server")]
pub mod pipeline;
pub mod records;
#[cfg(feature = "server")]
pub mod runtime;
#[cfg(feature = "server")]
pub mod scrape;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod sim;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod telemetry;
#[cfg(feature = "server")]
pub mod tls;

// Without the `server` feature: only the parsers of outside input, at the same paths (the
// fuzz targets in fuzz/ build against this cut; see Cargo.toml's `[features]`).

/// Request parsing, selectors, content negotiation (parsers only).
#[cfg(not(feature = "server"))]
pub mod api {
    pub mod field_selector;
    pub mod label_selector;
    pub mod list_options;
    pub mod meta;
    pub mod negotiate;
    pub mod query;
    pub mod request_info;
    pub mod status;
    pub mod time;
}

/// The kubelet `/metrics/resource` decoder (parsers only).
#[cfg(not(feature = "server"))]
pub mod scrape {
    pub mod decode;
}

/// The decoder's output types (parsers only).
#[cfg(not(feature = "server"))]
pub mod store {
    pub mod batch;
}
