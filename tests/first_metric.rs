//! First metrics within one resolution (issue 12 §4), end to end: the in-process demo server
//! scraping kubelet-sim at a 15 s resolution, two pods started while it runs.
//!
//! - `early`, started right after a tick: first seen at the next tick, 10 s or more after its
//!   start, so metrics-server's fresh-container rule serves it after that one scrape.
//! - `late`, started 3 s before a tick: that tick's scrape sees it too young for the rule
//!   (< 10 s). Without more it would wait for the tick after (~18 s); the follow-up scrape of
//!   its node at start + 10 s serves it before that tick.
//!
//! Both rates are over the container's whole life, so with constant usage they are exact.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::TestServer;
use kubedojo_data_api::cluster::PodInfo;
use kubedojo_data_api::sim::{Labels, SimPod};

const M: &str = "/apis/metrics.k8s.io/v1beta1";
const RESOLUTION: Duration = Duration::from_secs(15);
const NS: &str = "first-metric";
/// The new container's usage: 250m, 64 MiB.
const CPU: u64 = 250_000_000;
const MEMORY: u64 = 64 << 20;

/// Served usage of `NS/name`: (cpu nanocores, memory bytes, window), once it is listed.
async fn served(t: &TestServer, name: &str) -> Option<(u64, u64, String)> {
    let (code, list) = t.get_json(&format!("{M}/namespaces/{NS}/pods"), None).await;
    assert_eq!(code, 200, "{list}");
    let item = list["items"]
        .as_array()?
        .iter()
        .find(|i| i["metadata"]["name"] == name)?
        .clone();
    let c = &item["containers"][0]["usage"];
    Some((
        nanocores(c["cpu"].as_str()?),
        bytes(c["memory"].as_str()?),
        item["window"].as_str()?.to_owned(),
    ))
}

fn nanocores(q: &str) -> u64 {
    let (digits, unit) = q.split_at(q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len()));
    let n: u64 = digits.parse().expect("cpu quantity");
    n * match unit {
        "n" => 1,
        "u" => 1_000,
        "m" => 1_000_000,
        "" => 1_000_000_000,
        u => panic!("cpu unit {u} in {q}"),
    }
}

fn bytes(q: &str) -> u64 {
    let (digits, unit) = q.split_at(q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len()));
    let n: u64 = digits.parse().expect("memory quantity");
    n * match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        u => panic!("memory unit {u} in {q}"),
    }
}

/// Starts pod `NS/name` on the first node now (simulator and cluster view, as the informer
/// would see it Running).
fn start_pod(t: &TestServer, name: &str) -> Instant {
    let sim = t.server.sim.as_ref().unwrap().control();
    let started = Instant::now();
    sim.update_fleet(|f| {
        let pod = SimPod::with_usage(
            NS,
            name,
            Labels::new([("app".into(), "fresh".into())]),
            &[("app".to_owned(), CPU, MEMORY)],
            sim.now_ms(),
        );
        f.put_pod(0, pod, sim.now_ms()).unwrap();
    });
    let labels = BTreeMap::from([("app".to_owned(), "fresh".to_owned())]);
    t.server.view.upsert_pod(
        NS,
        name,
        PodInfo {
            labels: t.server.view.pod_labels(labels),
            created_ms: sim.now_ms(),
        },
    );
    started
}

/// Checks a first served usage: exact, over a window of at least 10 s (the rule's minimum).
fn check_usage(name: &str, (cpu, memory, window): (u64, u64, String)) {
    assert!(cpu.abs_diff(CPU) <= CPU / 100, "{name}: cpu {cpu} vs {CPU}");
    assert_eq!(memory, MEMORY, "{name}");
    let window_s: f64 = window.trim_end_matches('s').parse().unwrap();
    assert!(
        (10.0..RESOLUTION.as_secs_f64()).contains(&window_s),
        "{name}: window {window}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_pods_are_served_within_one_resolution_of_their_start() {
    // Ticks start when the scraper starts (after this instant) and every resolution after it,
    // so tick k starts no earlier than `begun + k × resolution`.
    let begun = Instant::now();
    let tick = |k: u32| begun + k * RESOLUTION;
    let t = TestServer::start_with(None, |a| a.metric_resolution = RESOLUTION).await;
    // The fleet's containers are old: they are served after two scrapes, at tick 1.
    loop {
        let (_, list) = t.get_json(&format!("{M}/pods"), None).await;
        if list["items"].as_array().is_some_and(|i| !i.is_empty()) {
            break;
        }
        assert!(Instant::now() < tick(3), "the fleet was never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(Instant::now() >= tick(1), "served after one tick");
    // 1.5 s after tick 1 was seen, so that at tick 2 it is ~13 s old: inside the rule's window
    // [10 s, 15 s) with margin for a late poll or a late tick on a loaded machine.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let early = start_pod(&t, "early");
    tokio::time::sleep_until((tick(2) - Duration::from_secs(3)).into()).await;
    let late = start_pod(&t, "late");

    let mut first: BTreeMap<&str, Duration> = BTreeMap::new();
    while first.len() < 2 {
        for (name, started) in [("early", early), ("late", late)] {
            if first.contains_key(name) {
                continue;
            }
            if let Some(u) = served(&t, name).await {
                first.insert(name, started.elapsed());
                check_usage(name, u);
            }
        }
        assert!(
            Instant::now() < tick(3),
            "not served before tick 3: {first:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Never earlier than the rule allows, and within one resolution of the start.
    for (name, after) in &first {
        assert!(
            (Duration::from_secs(10)..RESOLUTION + Duration::from_secs(1)).contains(after),
            "{name} served {after:?} after its start"
        );
    }
    // The late pod did not wait for tick 3 (checked in the loop): about 10 s, not ~18 s.
    assert!(first["late"] < Duration::from_secs(12), "{first:?}");
    t.server.stop().await;
}
