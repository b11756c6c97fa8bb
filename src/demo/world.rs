//! Demo mode's simulated world: kubelet simulator, a cluster view built from it,
//! and the metrics pipeline scraping it exactly as it scrapes real kubelets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::core_api::DemoCoreApi;
use crate::api::label_selector::LabelSelector;
use crate::cluster::address::KubeletAddressing;
use crate::cluster::{ClusterView, NodeInfo, PodInfo};
use crate::config::DemoArgs;
use crate::pipeline::Pipeline;
use crate::scrape::{KubeletClient, KubeletClientConfig, ScraperConfig};
use crate::sim::{self, Fleet, FleetSpec, ServeOptions, SimHandle};

/// The simulator and the pipeline that scrapes it.
pub struct SimulatedWorld {
    /// The simulated kubelets.
    pub sim: SimHandle,
    /// Store, scraper and self-metrics.
    pub pipeline: Pipeline,
    nodes: Vec<serde_json::Value>,
    pods: Vec<serde_json::Value>,
    replica: (
        ScraperConfig,
        KubeletClientConfig,
        Arc<ClusterView>,
        Duration,
    ),
}

fn labels(l: &sim::Labels) -> Arc<BTreeMap<String, String>> {
    Arc::new(
        l.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

impl SimulatedWorld {
    /// Starts `--nodes` simulated kubelets and a pipeline scraping them.
    pub async fn start(args: &DemoArgs) -> anyhow::Result<Self> {
        let spec = FleetSpec {
            nodes: args.nodes,
            pods_per_node: args.pods_per_node,
            first_address: args.sim_first_address,
            port: args.sim_port,
            usage: args.sim_usage,
            ..FleetSpec::default()
        };
        let fleet =
            Arc::new(Fleet::new(&spec, crate::api::time::now_millis()).context("simulated fleet")?);
        let token = super::random_token();
        let sim = sim::serve(
            fleet.clone(),
            ServeOptions {
                bearer_token: Some(token.clone()),
                ..ServeOptions::default()
            },
        )
        .await
        .context("starting the simulated kubelets")?;

        let view = ClusterView::new();
        for (i, node) in fleet.nodes.iter().enumerate() {
            let addr = sim.addr(i).context("simulated node address")?;
            view.upsert_node(NodeInfo {
                name: node.name.clone(),
                labels: labels(&node.labels),
                addresses: vec![
                    ("InternalIP".into(), addr.ip().to_string()),
                    ("Hostname".into(), node.name.clone()),
                ],
                kubelet_port: addr.port(),
                metrics_path: None,
                ready: true,
                allocatable: Some(crate::cluster::Allocatable {
                    cpu_nanocores: node.capacity_cpu_millicores * 1_000_000,
                    memory_bytes: node
                        .capacity_memory_bytes
                        .saturating_sub(sim::objects::EVICTION_RESERVE),
                }),
            });
        }
        let mut pods = Vec::new();
        for (node, pod) in fleet.pods() {
            view.upsert_pod(
                &pod.namespace,
                &pod.name,
                PodInfo {
                    labels: labels(&pod.labels),
                    created_ms: pod.created_at_ms,
                },
            );
            pods.push(sim::pod_object(node, pod));
        }
        view.set_nodes_synced();
        view.set_pods_synced();

        let timeout = Duration::from_secs(5).min(args.metric_resolution);
        let client_config = KubeletClientConfig {
            ca_pem: Some(sim.ca_pem().as_bytes().to_vec()),
            auth: crate::scrape::KubeletAuth::Bearer(token),
            timeout,
            max_body_bytes: 32 * 1024 * 1024,
            ..KubeletClientConfig::default()
        };
        let client = KubeletClient::new(client_config.clone()).map_err(anyhow::Error::msg)?;
        let config = ScraperConfig {
            resolution: args.metric_resolution,
            concurrency: 64,
            node_selector: LabelSelector::everything(),
            addressing: KubeletAddressing {
                use_node_status_port: true,
                ..KubeletAddressing::default()
            },
            publish_interval: Duration::from_secs(1),
        };
        let replica = (config.clone(), client_config, view.clone(), timeout);
        let pipeline = Pipeline::new(config, client, view, timeout);
        Ok(SimulatedWorld {
            nodes: sim.node_objects(),
            pods,
            replica,
            sim,
            pipeline,
        })
    }

    /// Another pipeline over the same simulated kubelets (`demo --replicas`).
    pub fn replica_pipeline(&self) -> anyhow::Result<Pipeline> {
        let (config, client_config, view, timeout) = &self.replica;
        let client = KubeletClient::new(client_config.clone()).map_err(anyhow::Error::msg)?;
        Ok(Pipeline::new(
            config.clone(),
            client,
            view.clone(),
            *timeout,
        ))
    }

    /// The nodes and pods the pipelines scrape and serve.
    pub fn view(&self) -> Arc<ClusterView> {
        self.replica.2.clone()
    }

    /// The demo-only core API over the simulated nodes and pods.
    pub fn core_api(&self) -> DemoCoreApi {
        DemoCoreApi::new(self.nodes.clone(), self.pods.clone())
    }
}
