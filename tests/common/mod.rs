//! Shared helpers for the integration tests: start the demo server in-process and
//! talk HTTPS to it with a client that trusts its CA.
#![allow(dead_code)]

pub mod fake_apiserver;
pub mod harness;
pub mod kube_cluster;
pub mod pg_app;
pub mod postgres;
pub mod selectors;

use std::path::PathBuf;
use std::time::Duration;

use kubedojo_data_api::config::{CommonArgs, DemoArgs, LogFormat};
use kubedojo_data_api::demo::{self, DemoServer};
use kubedojo_data_api::server::tls::MinTlsVersion;
use kubedojo_data_api::sim::UsageModel;

/// Installs the ring provider once per test binary.
pub fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Demo arguments on an ephemeral port, writing the kubeconfig into `dir`.
pub fn demo_args(dir: &std::path::Path, records_file: Option<PathBuf>) -> DemoArgs {
    DemoArgs {
        secure_port: 0,
        bind_address: "127.0.0.1".parse().unwrap(),
        write_kubeconfig: dir.join("kubeconfig"),
        token: Some("test-token".into()),
        nodes: 3,
        pods_per_node: 5,
        metric_resolution: Duration::from_secs(1),
        sim_first_address: "127.1.0.1".parse().unwrap(),
        sim_port: 0,
        // Exact, time-independent usage: the tests compare against the fleet's figures.
        sim_usage: UsageModel::Constant,
        cert_auth: Default::default(),
        postgres: Default::default(),
        serving: Default::default(),
        audit: Default::default(),
        ha: Default::default(),
        common: CommonArgs {
            verbosity: 0,
            log_format: LogFormat::Text,
            records_file,
            sources_config: None,
            records_refresh_interval: Duration::from_millis(100),
            tls_min_version: MinTlsVersion::Tls12,
            profiling: true,
        },
    }
}

/// A running in-process demo server and a client for it.
pub struct TestServer {
    pub server: DemoServer,
    pub client: reqwest::Client,
    pub base: String,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts the demo with the embedded records (or `records` written to a file).
    pub async fn start(records: Option<&str>) -> Self {
        Self::start_with(records, |_| {}).await
    }

    /// As [`TestServer::start`], with the demo arguments changed by `edit` first.
    pub async fn start_with(records: Option<&str>, edit: impl FnOnce(&mut DemoArgs)) -> Self {
        crypto();
        let dir = tempfile::tempdir().unwrap();
        let file = records.map(|text| {
            let p = dir.path().join("records.yaml");
            std::fs::write(&p, text).unwrap();
            p
        });
        let mut args = demo_args(dir.path(), file);
        edit(&mut args);
        let server = demo::start(&args).await.unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(server.ca_pem.as_bytes()).unwrap()])
            .build()
            .unwrap();
        let base = format!("https://localhost:{}", server.addr.port());
        TestServer {
            server,
            client,
            base,
            dir,
        }
    }

    /// Stops this server and starts a new process-equivalent one (a new record set, so a
    /// new resourceVersion epoch) over the same directory and records file.
    pub async fn restart(self) -> Self {
        let TestServer { server, dir, .. } = self;
        server.stop().await;
        let file = dir.path().join("records.yaml");
        let file = file.exists().then_some(file);
        let server = demo::start(&demo_args(dir.path(), file)).await.unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(server.ca_pem.as_bytes()).unwrap()])
            .build()
            .unwrap();
        let base = format!("https://localhost:{}", server.addr.port());
        TestServer {
            server,
            client,
            base,
            dir,
        }
    }

    /// GET with the admin token and an optional Accept header.
    pub async fn get(&self, path: &str, accept: Option<&str>) -> reqwest::Response {
        let mut req = self
            .client
            .get(format!("{}{}", self.base, path))
            .bearer_auth(&self.server.token);
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        req.send().await.unwrap()
    }

    /// GET returning (status, JSON body).
    pub async fn get_json(&self, path: &str, accept: Option<&str>) -> (u16, serde_json::Value) {
        let resp = self.get(path, accept).await;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap();
        let json = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "{path}: body is not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        });
        (status, json)
    }
}

/// Kubectl's Table Accept header.
pub const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

/// Reads watch events (one JSON object per line) until `count` arrived or the stream ends;
/// each chunk must come within 10 s.
pub async fn read_events(resp: &mut reqwest::Response, count: usize) -> Vec<serde_json::Value> {
    let mut buf = Vec::new();
    let mut events = Vec::new();
    while events.len() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("watch event within 10s")
            .unwrap();
        let Some(chunk) = chunk else { break };
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            events.push(serde_json::from_slice(&line).unwrap());
        }
    }
    events
}

/// A simulated fleet of `nodes` × `pods_per_node` serving on loopback from `first`, and a
/// cluster view that knows its nodes at the simulator's addresses (not marked synced).
pub async fn sim_fleet_view(
    nodes: usize,
    pods_per_node: usize,
    first: &str,
) -> (
    std::sync::Arc<kubedojo_data_api::sim::Fleet>,
    kubedojo_data_api::sim::SimHandle,
    std::sync::Arc<kubedojo_data_api::cluster::ClusterView>,
) {
    use kubedojo_data_api::cluster::{ClusterView, NodeInfo};
    use kubedojo_data_api::sim::{self, Fleet, FleetSpec, ServeOptions};
    use std::sync::Arc;
    crypto();
    let spec = FleetSpec {
        nodes,
        pods_per_node,
        first_address: first.parse().unwrap(),
        port: 0,
        ..FleetSpec::default()
    };
    let fleet = Arc::new(Fleet::new(&spec, kubedojo_data_api::api::time::now_millis()).unwrap());
    let handle = sim::serve(fleet.clone(), ServeOptions::default())
        .await
        .unwrap();
    let view = ClusterView::new();
    for (i, node) in fleet.nodes.iter().enumerate() {
        let addr = handle.addr(i).unwrap();
        view.upsert_node(NodeInfo {
            name: node.name.clone(),
            labels: Arc::new(Default::default()),
            addresses: vec![("InternalIP".into(), addr.ip().to_string())],
            kubelet_port: addr.port(),
            metrics_path: None,
            ready: true,
            allocatable: None,
        });
    }
    (fleet, handle, view)
}
