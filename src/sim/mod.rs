//! Kubelet simulator: a deterministic fleet of fake kubelets serving `/metrics/resource`.
//!
//! Used as the fixture of the scraper and end-to-end tests, as the simulated world of
//! `demo` mode, and by the benchmarks. It mirrors the kubelet's resource metrics
//! endpoint (kubernetes `pkg/kubelet/metrics/collectors/resource_metrics.go`): one TLS
//! listener per node on its own loopback address (Linux routes all of `127.0.0.0/8` to
//! `lo`), HTTP/1.1 and h2, an optional bearer-token check, and Prometheus text whose
//! CPU counters advance at a known rate per container: fixed ([`UsageModel::Constant`]),
//! or moving smoothly with time ([`UsageModel::Wave`], the counter being the rate's exact
//! integral).
//!
//! - [`fleet`]: the deterministic model ([`FleetSpec`] → [`Fleet`]); expected usage is
//!   read straight from [`SimContainer::cpu_nanocores`] and [`SimContainer::memory_bytes`]
//!   (constant usage), or from [`SimContainer::mean_cpu_nanocores`] and
//!   [`SimContainer::memory_bytes_at`] (waves).
//! - [`usage`]: the [`UsageModel`] and its per-container [`Wave`].
//! - [`payload`]: [`render`] writes one node's `/metrics/resource` body.
//! - [`server`]: [`serve`] starts the listeners; [`SimHandle`] injects faults per node.
//! - [`objects`]: the same fleet as Kubernetes v1 `Node`/`Pod` JSON.
//! - [`control`]: an HTTP endpoint on loopback that adds, re-sizes and removes pods at run time.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kubedojo_data_api::sim::SimError> {
//! use std::sync::Arc;
//! use kubedojo_data_api::sim::{self, Behaviour, Fleet, FleetSpec, ServeOptions};
//!
//! let spec = FleetSpec { nodes: 100, ..FleetSpec::default() };
//! let fleet = Arc::new(Fleet::new(&spec, sim::SimClock::system().now_ms())?);
//! let handle = sim::serve(fleet, ServeOptions::default()).await?;
//! handle.set_behaviour(3, Behaviour::Down).await?;
//! handle.shutdown().await;
//! # Ok(()) }
//! ```

pub mod command;
pub mod control;
pub mod fleet;
pub mod objects;
pub mod payload;
mod pki;
pub mod server;
#[cfg(test)]
mod tests;
pub mod usage;

use std::{io, net::SocketAddr, time::Duration};

pub use fleet::{Fleet, FleetSpec, Labels, SimContainer, SimNode, SimPod};
pub use objects::{fleet_objects_json, namespace_object, node_object, pod_object};
pub use payload::{CONTENT_TYPE, KubeletFormat, render};
pub use server::{Behaviour, ServeOptions, SimClock, SimControl, SimHandle, serve};
pub use usage::{UsageModel, Wave};

/// Errors of the simulator: an unusable [`FleetSpec`], certificate generation, or binding.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The fleet specification cannot be built (the message says which field and why).
    #[error("invalid fleet spec: {0}")]
    InvalidSpec(String),
    /// Generating the simulator's CA or a node's serving certificate failed.
    #[error("generating simulator certificates")]
    Certificate(#[source] rcgen::Error),
    /// Building a node's rustls server configuration failed.
    #[error("configuring TLS for the simulator")]
    Tls(#[source] rustls::Error),
    /// A node's listener could not be bound (address not local, in use, or out of fds).
    #[error("binding the simulated kubelet listener on {addr}")]
    Bind {
        /// The address that was being bound.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A node index passed to [`SimHandle`] does not exist in the fleet.
    #[error("no simulated node with index {0}")]
    NoSuchNode(usize),
    /// A behaviour change did not take effect in time (e.g. the port was taken meanwhile).
    #[error("node {node} did not reach the requested state within {waited:?}")]
    NotSettled {
        /// Index of the node.
        node: usize,
        /// How long [`SimHandle::set_behaviour`] waited.
        waited: Duration,
    },
}
