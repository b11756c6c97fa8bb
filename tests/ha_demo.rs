//! `demo --replicas 3` in-process: three replicas share the simulated kubelets, each node is
//! scraped by R of them per tick (counted by the simulator), every replica serves every pod,
//! a replica that dies leaves no pod missing for longer than one resolution, and when its
//! membership record expires the survivors rebalance back to R × nodes.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kubedojo_data_api::demo::{self, DemoServer};
use kubedojo_data_api::ha::membership::MemberSet;
use kubedojo_data_api::ha::rendezvous;

const NODES: usize = 6;
const PODS: usize = 3;
const RES: Duration = Duration::from_secs(2);

async fn start(replication: u16) -> (DemoServer, reqwest::Client, tempfile::TempDir) {
    common::crypto();
    let dir = tempfile::tempdir().unwrap();
    let mut args = common::demo_args(dir.path(), None);
    args.nodes = NODES;
    args.pods_per_node = PODS;
    args.metric_resolution = RES;
    args.sim_first_address = "127.3.0.1".parse().unwrap();
    args.ha.replicas = 3;
    args.ha.scrape_replication = replication;
    let server = demo::start(&args).await.unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(server.ca_pem.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    (server, client, dir)
}

/// Pod names a replica serves (None when the request failed).
async fn pods(client: &reqwest::Client, server: &DemoServer, i: usize) -> Option<BTreeSet<String>> {
    let url = format!(
        "https://localhost:{}/apis/metrics.k8s.io/v1beta1/pods",
        server.replicas[i].addr.port()
    );
    let resp = client
        .get(url)
        .bearer_auth(&server.token)
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let v: serde_json::Value = resp.json().await.ok()?;
    Some(
        v["items"]
            .as_array()?
            .iter()
            .map(|p| {
                format!(
                    "{}/{}",
                    p["metadata"]["namespace"].as_str().unwrap_or(""),
                    p["metadata"]["name"].as_str().unwrap_or("")
                )
            })
            .collect(),
    )
}

/// A counter of a replica's `/metrics` (the text exposition).
async fn self_metric(client: &reqwest::Client, server: &DemoServer, i: usize, name: &str) -> u64 {
    let url = format!(
        "https://localhost:{}/metrics",
        server.replicas[i].addr.port()
    );
    let text = client
        .get(url)
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("{name}_total ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name}_total in /metrics of replica {i}"))
        .trim()
        .parse()
        .unwrap()
}

fn total_requests(server: &DemoServer) -> u64 {
    let sim = server.sim.as_ref().unwrap();
    (0..NODES).map(|i| sim.requests(i)).sum()
}

/// Waits until every listed replica serves all pods.
async fn until_full(client: &reqwest::Client, server: &DemoServer, replicas: &[usize]) {
    let deadline = Instant::now() + RES * 6;
    loop {
        let mut full = true;
        for &i in replicas {
            if pods(client, server, i).await.map_or(0, |p| p.len()) != NODES * PODS {
                full = false;
            }
        }
        if full {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replicas {replicas:?} never served every pod"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Kubelet requests over `ticks` whole ticks, sampled mid-tick (ticks are wall-clock aligned).
async fn requests_over(server: &DemoServer, ticks: u32) -> u64 {
    let res_ms = RES.as_millis() as i64;
    let now = kubedojo_data_api::api::time::now_millis();
    // Sample 3/4 into a tick: own scrapes start at 0, peer fetch and fallbacks end by 3/4.
    let wait = (res_ms * 3 / 4 - now.rem_euclid(res_ms)).rem_euclid(res_ms);
    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    let before = total_requests(server);
    tokio::time::sleep(RES * ticks).await;
    total_requests(server) - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_kubelets_and_each_serves_every_pod() {
    let (server, client, _dir) = start(1).await;
    until_full(&client, &server, &[0, 1, 2]).await;
    // R = 1: each node scraped once per tick in total, not three times.
    let n = requests_over(&server, 3).await;
    assert_eq!(
        n,
        3 * NODES as u64,
        "kubelet requests over 3 ticks with R=1"
    );
    // Every replica serves the same pods with the same readings (the owner's).
    let a = pods(&client, &server, 0).await.unwrap();
    for i in 1..3 {
        assert_eq!(pods(&client, &server, i).await.unwrap(), a);
    }
    for r in &server.replicas {
        let c = r.coordinator.as_ref().unwrap();
        assert!(c.stats().nodes_from_peers.get() > 0);
    }
    // The exchange on /metrics: each replica fetched shard bytes (one that owns no node
    // serves none), and the bytes served add up to the bytes received (read 3/4 into a tick: fetches happen at 1/2).
    let res_ms = RES.as_millis() as i64;
    let now = kubedojo_data_api::api::time::now_millis();
    let wait = (res_ms * 3 / 4 - now.rem_euclid(res_ms)).rem_euclid(res_ms);
    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    let (mut served, mut received) = (0, 0);
    for i in 0..3 {
        let r = self_metric(&client, &server, i, "kubedojo_peer_received_bytes").await;
        let s = self_metric(&client, &server, i, "kubedojo_peer_served_bytes").await;
        assert!(r > 0, "replica {i}: received {r} bytes");
        assert!(self_metric(&client, &server, i, "kubedojo_peer_received_nodes").await > 0);
        served += s;
        received += r;
    }
    assert!(served > 0);
    assert_eq!(served, received, "peer bytes served and received");

    // SIGKILL-like: replica 2 stops at once (API, scraper, peer listener). The survivors
    // still list it as a member (its record has not expired): they fall back to scraping its
    // nodes themselves. Poll both survivors: no pod may be missing longer than a resolution.
    let ids: Vec<String> = (0..3).map(|i| format!("replica-{i}")).collect();
    let names: Vec<String> = server
        .sim
        .as_ref()
        .unwrap()
        .fleet()
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .collect();
    let owned = |r: usize| {
        names
            .iter()
            .filter(|n| rendezvous::owns(&ids, &ids[r], n, 1))
            .count()
    };
    let dead = (0..3).max_by_key(|&r| owned(r)).unwrap();
    assert!(owned(dead) > 0);
    let alive: Vec<usize> = (0..3).filter(|&r| r != dead).collect();
    server.replicas[dead].stop.cancel();
    let killed = Instant::now();
    let mut missing_since: std::collections::HashMap<(usize, String), Instant> = Default::default();
    let mut worst = Duration::ZERO;
    let all: BTreeSet<String> = a.clone();
    while killed.elapsed() < RES * 4 {
        for &i in &alive {
            let got = pods(&client, &server, i)
                .await
                .unwrap_or_else(|| panic!("replica {i} failed a request after the kill"));
            for p in &all {
                let key = (i, p.clone());
                if got.contains(p) {
                    if let Some(since) = missing_since.remove(&key) {
                        worst = worst.max(since.elapsed());
                    }
                } else {
                    missing_since.entry(key).or_insert_with(Instant::now);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for since in missing_since.values() {
        worst = worst.max(since.elapsed());
    }
    assert!(worst <= RES, "a pod was missing for {worst:?}");
    let fallbacks: u64 = alive
        .iter()
        .map(|&i| &server.replicas[i])
        .map(|r| {
            r.coordinator
                .as_ref()
                .unwrap()
                .stats()
                .fallback_scrapes
                .get()
        })
        .sum();
    assert!(
        fallbacks > 0,
        "the survivors scraped the dead replica's nodes"
    );

    // Its record expires (what the Lease loop does): the survivors rebalance and the count
    // is back to R × nodes.
    for &i in &alive {
        let m = server.replicas[i].membership.as_ref().unwrap();
        let cur = m.current();
        let me = cur.get(&cur.me).unwrap().clone();
        let others = cur
            .members
            .iter()
            .filter(|x| x.id != ids[dead])
            .cloned()
            .collect::<Vec<_>>();
        m.set(MemberSet::new(me, others));
    }
    tokio::time::sleep(RES).await;
    let n = requests_over(&server, 2).await;
    assert_eq!(n, 2 * NODES as u64, "after rebalancing, R=1");
    until_full(&client, &server, &alive).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_r2_each_node_is_scraped_twice_and_a_death_costs_nothing() {
    let (server, client, _dir) = start(2).await;
    until_full(&client, &server, &[0, 1, 2]).await;
    let n = requests_over(&server, 3).await;
    assert_eq!(
        n,
        3 * 2 * NODES as u64,
        "kubelet requests over 3 ticks with R=2"
    );
    server.replicas[0].stop.cancel();
    // No fallback is needed: every node has a second owner alive.
    let before: u64 = server.replicas[1..]
        .iter()
        .map(|r| {
            r.coordinator
                .as_ref()
                .unwrap()
                .stats()
                .fallback_scrapes
                .get()
        })
        .sum();
    let started = Instant::now();
    while started.elapsed() < RES * 3 {
        for i in 1..3 {
            let got = pods(&client, &server, i).await.expect("survivor answers");
            assert_eq!(got.len(), NODES * PODS, "replica {i} missed a pod");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let after: u64 = server.replicas[1..]
        .iter()
        .map(|r| {
            r.coordinator
                .as_ref()
                .unwrap()
                .stats()
                .fallback_scrapes
                .get()
        })
        .sum();
    assert_eq!(
        after, before,
        "R=2 needs no fallback scrape when one owner dies"
    );
    server.stop().await;
}
