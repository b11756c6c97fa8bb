//! Start-up (issue 15 §7): scraping starts as soon as the node list has synced, without
//! waiting for the pod list, so the two readings a rate needs are taken while a large pod
//! list is still arriving; and before the node list has synced no kubelet is asked.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kubedojo_data_api::api::label_selector::LabelSelector;
use kubedojo_data_api::cluster::ClusterView;
use kubedojo_data_api::cluster::address::KubeletAddressing;
use kubedojo_data_api::pipeline::Pipeline;
use kubedojo_data_api::scrape::{KubeletClient, KubeletClientConfig, ScraperConfig};
use kubedojo_data_api::sim::{Fleet, SimHandle};
use tokio_util::sync::CancellationToken;

const NODES: usize = 3;

/// A simulated fleet, a view that knows its nodes (not marked synced) and a pipeline over it.
async fn setup(first: &str) -> (Arc<Fleet>, SimHandle, Arc<ClusterView>, Pipeline) {
    let (fleet, handle, view) = common::sim_fleet_view(NODES, 2, first).await;
    let client = KubeletClient::new(KubeletClientConfig {
        ca_pem: Some(handle.ca_pem().as_bytes().to_vec()),
        timeout: Duration::from_secs(2),
        max_body_bytes: 1 << 20,
        ..KubeletClientConfig::default()
    })
    .unwrap();
    let config = ScraperConfig {
        resolution: Duration::from_secs(1),
        concurrency: 4,
        node_selector: LabelSelector::everything(),
        addressing: KubeletAddressing {
            use_node_status_port: true,
            ..KubeletAddressing::default()
        },
        publish_interval: Duration::from_millis(200),
    };
    let pipeline = Pipeline::new(config, client, view.clone(), Duration::from_secs(2));
    (fleet, handle, view, pipeline)
}

/// Runs the pipeline's scraper as `serve` does, until `stop` is cancelled.
fn spawn_scraper(
    pipeline: &Pipeline,
    max_wait: Duration,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(
        pipeline
            .scraper
            .clone()
            .run_once_nodes_synced(max_wait, stop.clone()),
    )
}

/// Cancels `stop` and requires the scraper task to end within 5 s.
async fn stop_scraper(stop: CancellationToken, task: tokio::task::JoinHandle<()>) {
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the scraper stops when cancelled")
        .unwrap();
}

fn requests(handle: &SimHandle) -> u64 {
    (0..NODES).map(|i| handle.requests(i)).sum()
}

/// Waits (up to `limit`) until every node of the fleet has usage in the store.
async fn all_nodes_served(fleet: &Fleet, pipeline: &Pipeline, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let snap = pipeline.store.snapshot();
        if fleet.nodes.iter().all(|n| snap.node(&n.name).is_some()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraping_starts_when_the_nodes_have_synced_not_the_pods() {
    let (fleet, handle, view, pipeline) = setup("127.1.30.1").await;
    let stop = CancellationToken::new();
    let task = spawn_scraper(&pipeline, Duration::from_secs(30), &stop);
    // Before the node list has synced, no kubelet is asked (a partial list would start
    // the first cycle on some of the nodes only).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(requests(&handle), 0, "scraped before the node list synced");

    view.set_nodes_synced();
    // The pod list never syncs in this test; with a 1 s resolution every node has a rate
    // (two readings) within about one resolution.
    assert!(
        all_nodes_served(&fleet, &pipeline, Duration::from_secs(5)).await,
        "the scraper waited for the pod list"
    );
    assert!(!view.synced(), "the pod list was not meant to sync");
    assert!(requests(&handle) >= 2 * NODES as u64);
    stop_scraper(stop, task).await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_list_that_never_syncs_delays_scraping_by_the_limit_only() {
    let (fleet, handle, _view, pipeline) = setup("127.1.31.1").await;
    let stop = CancellationToken::new();
    let started = Instant::now();
    let task = spawn_scraper(&pipeline, Duration::from_millis(700), &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(requests(&handle), 0, "scraped before the limit");
    assert!(
        all_nodes_served(&fleet, &pipeline, Duration::from_secs(5)).await,
        "never scraped although the limit passed"
    );
    assert!(started.elapsed() >= Duration::from_millis(700));
    stop_scraper(stop, task).await;
    handle.shutdown().await;
}

#[tokio::test]
async fn cancelling_before_the_nodes_sync_stops_the_wait() {
    let (_fleet, handle, _view, pipeline) = setup("127.1.32.1").await;
    let stop = CancellationToken::new();
    let task = spawn_scraper(&pipeline, Duration::from_secs(30), &stop);
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop_scraper(stop, task).await;
    assert_eq!(requests(&handle), 0);
    handle.shutdown().await;
}
