//! `kd-load watchers` (the scale harness's watch client, bench/scale/watchers.sh) against the
//! in-process demo: every watcher receives every pod once per scrape tick, over HTTP/2 and
//! HTTP/1.1, all namespaces and one namespace with a label selector.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::Value;

const M: &str = "/apis/metrics.k8s.io/v1beta1";

async fn start() -> TestServer {
    let t = TestServer::start_with(None, |a| {
        a.metric_resolution = Duration::from_secs(2);
        a.sim_first_address = "127.1.5.1".parse().unwrap();
    })
    .await;
    let pods = t.server.sim.as_ref().unwrap().fleet().pod_count();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = t.get_json(&format!("{M}/pods"), None).await;
        if v["items"].as_array().map_or(0, Vec::len) == pods {
            return t;
        }
        assert!(Instant::now() < deadline, "metrics never complete");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs kd-load watchers with `args` against `t`; its JSON report.
async fn kd_load(t: &TestServer, args: &[&str]) -> Value {
    let url = format!("https://127.0.0.1:{}", t.server.addr.port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kd-load"));
    cmd.args(["--token", &t.server.token, "watchers", "--url", &url])
        .args([
            "--ticks",
            "3",
            "--quiet",
            "1",
            "--grace",
            "3",
            "--timeout",
            "60",
        ])
        .args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "kd-load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_clean(r: &Value, watchers: u64, pods: u64) {
    assert_eq!(r["errors"], 0, "{r:#}");
    assert_eq!(r["pods"], pods, "{r:#}");
    assert_eq!(r["resumed_between_scrapes"], true, "{r:#}");
    let ticks = r["per_tick"].as_array().unwrap();
    assert_eq!(ticks.len(), 3);
    for t in ticks {
        assert_eq!(t["complete"], watchers, "{r:#}");
        assert_eq!(t["events_per_watcher_min"], pods as f64, "{r:#}");
        assert_eq!(t["events_per_watcher_max"], pods as f64, "{r:#}");
        assert!(
            t["bytes"].as_u64().unwrap() > 100 * pods * watchers,
            "{r:#}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_watcher_gets_every_pod_once_per_tick() {
    let t = start().await;
    let pods = t.server.sim.as_ref().unwrap().fleet().pod_count() as u64;
    let pods_s = pods.to_string();
    // Eight watches on two HTTP/2 connections, all namespaces, the fleet's pod count checked.
    let r = kd_load(
        &t,
        &[
            "--watchers",
            "8",
            "--http",
            "h2",
            "--connections",
            "2",
            "--expect-pods",
            &pods_s,
        ],
    )
    .await;
    assert_clean(&r, 8, pods);
    assert_eq!(r["connections"], 2);
    // Four HTTP/1.1 watches of one namespace and one app: only those pods, every tick.
    let (_, list) = t.get_json(&format!("{M}/pods"), None).await;
    let first = &list["items"][0]["metadata"];
    let ns = first["namespace"].as_str().unwrap().to_string();
    let app = first["labels"]["app"].as_str().unwrap().to_string();
    let sel = format!("app={app}");
    let (_, scoped) = t
        .get_json(
            &format!("{M}/namespaces/{ns}/pods?labelSelector=app%3D{app}"),
            None,
        )
        .await;
    let n = scoped["items"].as_array().unwrap().len() as u64;
    assert!(n > 0 && n < pods, "{n} of {pods}");
    let r = kd_load(
        &t,
        &[
            "--watchers",
            "4",
            "--http",
            "h1",
            "--namespace",
            &ns,
            "--label-selector",
            &sel,
        ],
    )
    .await;
    assert_clean(&r, 4, n);
    assert_eq!(r["http"], "h1");
}
