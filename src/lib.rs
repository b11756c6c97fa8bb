//! kubedojo-data-api: a Kubernetes aggregated API server serving
//! `metrics.k8s.io/v1beta1` (a drop-in for metrics-server) and
//! `data.kubedojo.io/v1alpha1` DataRecords.
//!
//! Data flows one way: kubelets → scraper → store → API. The API layer only reads.
#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod cluster;
pub mod compat;
pub mod config;
pub mod demo;
pub mod groups;
pub mod ha;
pub mod pipeline;
pub mod records;
pub mod runtime;
pub mod scrape;
pub mod server;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod tls;
