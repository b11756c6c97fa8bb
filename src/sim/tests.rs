//! End-to-end tests of the simulator: real TLS on 127.x addresses, a reqwest client
//! trusting [`SimHandle::ca_pem`]. Each test uses its own `/16` and ephemeral ports, so
//! tests (and other processes) never collide.

use std::{
    collections::BTreeMap,
    io::BufRead,
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use prometheus_parse::{Scrape, Value};
use reqwest::{Client, StatusCode, Version};

use super::*;

const T0: i64 = 1_750_705_770_000;

fn spec(second_octet: u8, nodes: usize) -> FleetSpec {
    FleetSpec {
        nodes,
        first_address: Ipv4Addr::new(127, second_octet, 0, 1),
        port: 0,
        ..FleetSpec::default()
    }
}

async fn start(spec: &FleetSpec, options: ServeOptions) -> SimHandle {
    let fleet = Arc::new(Fleet::new(spec, T0 - 60_000).expect("valid spec"));
    serve(fleet, options).await.expect("simulator starts")
}

fn client(handle: &SimHandle, http1_only: bool) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(handle.ca_pem().as_bytes()).expect("CA PEM");
    let builder = Client::builder()
        .tls_certs_only([ca])
        .no_proxy()
        .timeout(Duration::from_secs(10));
    let builder = if http1_only {
        builder.http1_only()
    } else {
        builder
    };
    builder.build().expect("client")
}

async fn get(
    client: &Client,
    handle: &SimHandle,
    node: usize,
) -> reqwest::Result<reqwest::Response> {
    client
        .get(handle.url(node).expect("node exists"))
        .send()
        .await
}

fn parse(body: &str) -> Scrape {
    Scrape::parse(body.as_bytes().lines()).expect("Prometheus text")
}

/// container_cpu_usage_seconds_total as (value, ts) per (namespace, pod, container).
fn container_cpu(scrape: &Scrape) -> BTreeMap<(String, String, String), (f64, i64)> {
    let label =
        |s: &prometheus_parse::Sample, k: &str| s.labels.get(k).unwrap_or_default().to_owned();
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == "container_cpu_usage_seconds_total")
        .map(|s| {
            let Value::Counter(v) = s.value else {
                panic!("counter expected")
            };
            let key = (
                label(s, "namespace"),
                label(s, "pod"),
                label(s, "container"),
            );
            (key, (v, s.timestamp.timestamp_millis()))
        })
        .collect()
}

fn rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_every_node_over_tls_with_h2_and_http1() {
    let handle = start(&spec(20, 3), ServeOptions::default()).await;
    let (h2, h1) = (client(&handle, false), client(&handle, true));
    for node in 0..3 {
        let addr = handle.addr(node).unwrap();
        assert_eq!(addr.ip(), Ipv4Addr::new(127, 20, 0, 1 + node as u8));
        let response = get(&h2, &handle, node).await.expect("h2 request");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), Version::HTTP_2, "ALPN picks h2");
        assert_eq!(response.headers()["content-type"], CONTENT_TYPE);
        let scrape = parse(&response.text().await.unwrap());
        let pods = &handle.fleet().nodes[node].pods;
        assert_eq!(container_cpu(&scrape).len(), pods.len() * 2);
        assert!(
            container_cpu(&scrape)
                .keys()
                .all(|(_, pod, _)| pods.iter().any(|p| &p.name == pod))
        );
        let response = get(&h1, &handle, node).await.expect("http/1.1 request");
        assert_eq!(
            (response.status(), response.version()),
            (StatusCode::OK, Version::HTTP_11)
        );
        assert_eq!(handle.requests(node), 2);
        let object = &handle.node_objects()[node];
        assert_eq!(
            object["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"],
            addr.port()
        );
        assert_eq!(
            object["status"]["addresses"][0]["address"],
            addr.ip().to_string()
        );
    }
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_paths_and_methods_are_404() {
    let handle = start(&spec(21, 1), ServeOptions::default()).await;
    let client = client(&handle, false);
    let base = format!("https://{}", handle.addr(0).unwrap());
    for path in [
        "/",
        "/metrics",
        "/metrics/resource/extra",
        "/stats/summary",
        "/metrics/cadvisor",
    ] {
        let response = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let post = client.post(handle.url(0).unwrap()).send().await.unwrap();
    assert_eq!(post.status(), StatusCode::NOT_FOUND);
    assert_eq!(handle.requests(0), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_is_required_when_configured() {
    let options = ServeOptions {
        bearer_token: Some("s3cret".into()),
        ..ServeOptions::default()
    };
    let handle = start(&spec(22, 1), options).await;
    let client = client(&handle, false);
    let url = handle.url(0).unwrap();
    let status = |auth: Option<&'static str>| {
        let request = client.get(&url);
        let request = match auth {
            Some(value) => request.header("authorization", value),
            None => request,
        };
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(status(None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(Some("Bearer wrong")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        status(Some("Basic czNjcmV0")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status(Some("Bearer s3cret")).await, StatusCode::OK);
    assert_eq!(status(Some("bearer s3cret")).await, StatusCode::OK);
    let other_path = client
        .get(url.replace("/metrics/resource", "/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        other_path.status(),
        StatusCode::UNAUTHORIZED,
        "authentication comes before routing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_garbage_behaviours() {
    let handle = start(&spec(23, 2), ServeOptions::default()).await;
    let client = client(&handle, false);
    handle
        .set_behaviour(0, Behaviour::Status(503))
        .await
        .unwrap();
    assert_eq!(
        get(&client, &handle, 0).await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    handle
        .set_behaviour(0, Behaviour::Status(42))
        .await
        .unwrap();
    assert_eq!(
        get(&client, &handle, 0).await.unwrap().status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        get(&client, &handle, 1).await.unwrap().status(),
        StatusCode::OK,
        "other nodes unaffected"
    );
    handle.set_behaviour(0, Behaviour::Garbage).await.unwrap();
    let garbage = get(&client, &handle, 0).await.unwrap();
    assert_eq!(garbage.status(), StatusCode::OK);
    let body = garbage.bytes().await.unwrap();
    assert!(std::str::from_utf8(&body).is_err(), "not even UTF-8");
    assert!(!body.windows(6).any(|w| w == b"# TYPE"));
    handle.set_behaviour(0, Behaviour::Normal).await.unwrap();
    let body = get(&client, &handle, 0)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(container_cpu(&parse(&body)).len(), 60);
    assert_eq!(handle.behaviour(0), Some(Behaviour::Normal));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_delays_and_hang_never_answers() {
    let handle = start(&spec(24, 1), ServeOptions::default()).await;
    let client = client(&handle, false);
    handle
        .set_behaviour(0, Behaviour::Slow(Duration::from_millis(400)))
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        get(&client, &handle, 0).await.unwrap().status(),
        StatusCode::OK
    );
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );

    handle.set_behaviour(0, Behaviour::Hang).await.unwrap();
    let url = handle.url(0).unwrap();
    let hung = client
        .get(&url)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(
        hung.is_err_and(|e| e.is_timeout()),
        "a hung kubelet times the client out"
    );
    assert_eq!(handle.requests(0), 2, "the hung request did arrive");

    handle.set_behaviour(0, Behaviour::Normal).await.unwrap();
    assert_eq!(
        get(&client, &handle, 0).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_refuses_connections_and_comes_back_on_the_same_address() {
    let handle = start(&spec(25, 2), ServeOptions::default()).await;
    let client = client(&handle, true);
    assert_eq!(
        get(&client, &handle, 0).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        handle.connections(0),
        1,
        "the client keeps its connection alive"
    );
    let addr = handle.addr(0).unwrap();

    handle.set_behaviour(0, Behaviour::Down).await.unwrap();
    assert_eq!(handle.connections(0), 0, "open connections are closed too");
    let refused = tokio::net::TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(
        get(&client, &handle, 0)
            .await
            .is_err_and(|e| e.is_connect())
    );
    assert_eq!(
        get(&client, &handle, 1).await.unwrap().status(),
        StatusCode::OK
    );

    handle.set_behaviour(0, Behaviour::Normal).await.unwrap();
    assert_eq!(handle.addr(0), Some(addr));
    assert_eq!(
        get(&client, &handle, 0).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_clock_gives_exact_rates_over_the_wire() {
    let options = ServeOptions {
        clock: SimClock::manual(T0),
        ..ServeOptions::default()
    };
    let handle = start(&spec(26, 2), options).await;
    let client = client(&handle, false);
    for node in 0..2 {
        let first = container_cpu(&parse(
            &get(&client, &handle, node)
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        ));
        handle.clock().advance(Duration::from_secs(15));
        let now = handle.clock().now_ms();
        let second = container_cpu(&parse(
            &get(&client, &handle, node)
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        ));
        for pod in &handle.fleet().nodes[node].pods {
            for c in &pod.containers {
                let key = (
                    pod.namespace.to_string(),
                    pod.name.clone(),
                    c.name.to_string(),
                );
                let ((v0, t0), (v1, t1)) = (first[&key], second[&key]);
                let ns = (v1 * 1e9).round() - (v0 * 1e9).round();
                assert_eq!(
                    ns * 1000.0 / (t1 - t0) as f64,
                    c.cpu_nanocores as f64,
                    "{key:?}"
                );
                assert!(
                    (now - 24..=now).contains(&t1),
                    "timestamps follow the manual clock"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_for_unknown_nodes_and_taken_addresses() {
    let handle = start(&spec(27, 1), ServeOptions::default()).await;
    let err = handle.set_behaviour(7, Behaviour::Down).await.unwrap_err();
    assert!(matches!(err, SimError::NoSuchNode(7)));
    assert_eq!(
        (handle.requests(7), handle.addr(7), handle.behaviour(7)),
        (0, None, None)
    );
    let taken = handle.addr(0).unwrap();
    let clash = FleetSpec {
        port: taken.port(),
        ..spec(27, 1)
    };
    let fleet = Arc::new(Fleet::new(&clash, T0).unwrap());
    let err = serve(fleet, ServeOptions::default()).await.unwrap_err();
    assert!(
        matches!(err, SimError::Bind { addr, .. } if addr == taken),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_and_drop_close_the_listeners() {
    let handle = start(&spec(28, 2), ServeOptions::default()).await;
    let client = client(&handle, true);
    assert_eq!(
        get(&client, &handle, 0).await.unwrap().status(),
        StatusCode::OK
    );
    let addrs = [handle.addr(0).unwrap(), handle.addr(1).unwrap()];
    handle.shutdown().await;
    for addr in addrs {
        let refused = tokio::net::TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    let dropped = start(&spec(28, 1), ServeOptions::default()).await;
    let addr = dropped.addr(0).unwrap();
    drop(dropped);
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "dropping the handle stops the listener");
}

/// Start-up of 2,000 nodes × 30 pods, then one scrape of a sample of them (64 at a time).
/// Prints the timings and the process RSS (`cargo test -- --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_nodes_start_and_answer() {
    let before = rss();
    let started = Instant::now();
    let fleet = Arc::new(Fleet::new(&spec(29, 2_000), T0).unwrap());
    let built = started.elapsed();
    let handle = serve(fleet, ServeOptions::default())
        .await
        .expect("2,000 listeners");
    let serving = started.elapsed();
    let after_start = rss();
    let client = client(&handle, false);
    let scraped = Instant::now();
    // Every 20th node and the last: enough to prove they all listen, quick in debug.
    let sample: Vec<usize> = (0..2_000).step_by(20).chain([1_999]).collect();
    let bytes: Vec<usize> = stream::iter(sample.clone())
        .map(|node| {
            let client = &client;
            let handle = &handle;
            async move {
                let response = get(client, handle, node).await.expect("scrape");
                assert_eq!(response.status(), StatusCode::OK);
                response.bytes().await.unwrap().len()
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let scrape_time = scraped.elapsed();
    assert_eq!(bytes.len(), sample.len());
    assert!(sample.iter().all(|&node| handle.requests(node) == 1));
    assert_eq!(
        handle.addr(1_999).unwrap().ip(),
        Ipv4Addr::new(127, 29, 7, 222)
    );
    eprintln!(
        "2,000 nodes: fleet built in {built:?}, serving after {serving:?}; one scrape of {} nodes \
         (64 concurrent, new TLS connections) in {scrape_time:?}, {} KiB per body; RSS before: [{before}], \
         after start: [{after_start}], after scrape: [{}]",
        sample.len(),
        bytes.iter().sum::<usize>() / bytes.len() / 1024,
        rss()
    );
    handle.shutdown().await;
}

#[test]
fn public_types_can_cross_tasks() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<SimHandle>();
    send_sync::<Fleet>();
    send_sync::<SimClock>();
    send_sync::<SimError>();
}

/// container_memory_working_set_bytes per (namespace, pod, container).
fn container_memory(scrape: &Scrape) -> BTreeMap<(String, String, String), f64> {
    let label =
        |s: &prometheus_parse::Sample, k: &str| s.labels.get(k).unwrap_or_default().to_owned();
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == "container_memory_working_set_bytes")
        .map(|s| {
            let Value::Gauge(v) = s.value else {
                panic!("gauge expected")
            };
            let key = (
                label(s, "namespace"),
                label(s, "pod"),
                label(s, "container"),
            );
            (key, v)
        })
        .collect()
}

async fn scrape_text(client: &Client, handle: &SimHandle, node: usize) -> Scrape {
    parse(
        &get(client, handle, node)
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
}

/// With [`UsageModel::Wave`] the rate between two scrapes is the container's mean rate
/// over exactly that time (the counter is the integral), the working set is the one at
/// the sample's timestamp, and both move from one interval to the next.
#[tokio::test]
async fn wave_usage_over_the_wire_is_the_mean_rate_and_moves() {
    let options = ServeOptions {
        clock: SimClock::manual(T0),
        ..ServeOptions::default()
    };
    let spec = FleetSpec {
        usage: UsageModel::Wave,
        idle_percent: 0,
        ..spec(41, 1)
    };
    let handle = start(&spec, options).await;
    let client = client(&handle, false);
    let fleet = handle.fleet();
    let mut samples = vec![(
        container_cpu(&scrape_text(&client, &handle, 0).await),
        BTreeMap::new(),
    )];
    for _ in 0..2 {
        handle.clock().advance(Duration::from_secs(10));
        let s = scrape_text(&client, &handle, 0).await;
        samples.push((container_cpu(&s), container_memory(&s)));
    }
    let mut rates_moved = 0;
    let mut memory_moved = 0;
    let mut n = 0;
    for pod in &fleet.nodes[0].pods {
        for c in &pod.containers {
            let key = (
                pod.namespace.to_string(),
                pod.name.clone(),
                c.name.to_string(),
            );
            let mut rates = Vec::new();
            for w in samples.windows(2) {
                let ((v0, t0), (v1, t1)) = (w[0].0[&key], w[1].0[&key]);
                let ns = (v1 * 1e9).round() - (v0 * 1e9).round();
                let rate = ns * 1000.0 / (t1 - t0) as f64;
                let want = c.mean_cpu_nanocores(t0, t1) as f64;
                assert!((rate - want).abs() <= 1.0, "{key:?}: {rate} vs {want}");
                rates.push(rate);
                assert_eq!(w[1].1[&key], c.memory_bytes_at(t1) as f64, "{key:?}");
            }
            n += 1;
            rates_moved += usize::from((rates[0] - rates[1]).abs() > 1000.0);
            let mem = |i: usize| samples[i].1[&key];
            memory_moved += usize::from(mem(1) != mem(2));
        }
    }
    assert!(
        rates_moved * 10 >= n * 8,
        "{rates_moved} of {n} rates moved"
    );
    assert!(
        memory_moved * 10 >= n * 8,
        "{memory_moved} of {n} working sets moved"
    );
}

/// The control endpoint adds a pod (served from the next scrape at the rate asked for),
/// changes its usage with the counter continuing (so the next rate is the new one, exactly),
/// removes it, and answers bad requests with 400/404 and a reason.
#[tokio::test]
async fn control_endpoint_adds_resizes_and_removes_pods() {
    let options = ServeOptions {
        clock: SimClock::manual(T0),
        ..ServeOptions::default()
    };
    let spec = FleetSpec {
        pods_per_node: 0,
        ..spec(42, 2)
    };
    let handle = start(&spec, options).await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let addr = control::serve_control(
        handle.control(),
        "127.0.0.1:0".parse().unwrap(),
        cancel.clone(),
    )
    .await
    .unwrap();
    let sim = client(&handle, false); // installs the rustls provider
    let http = Client::builder().no_proxy().build().unwrap();
    let url = |p: &str| format!("http://{addr}{p}");
    let put = |cpu: &str, mem: &str| {
        http.put(url("/pods/hpa/web-1"))
            .body(format!(
                r#"{{"node":"sim-node-0002","labels":{{"app":"web"}},"containers":[{{"name":"app","cpu":"{cpu}","memory":"{mem}"}}]}}"#
            ))
            .send()
    };
    let resp = put("400m", "300Mi").await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let pod: control::PodUsage = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(
        (pod.node.as_str(), pod.cpu_nanocores, pod.memory_bytes),
        ("sim-node-0002", 400_000_000, 300 << 20)
    );
    let key = ("hpa".to_string(), "web-1".to_string(), "app".to_string());
    // Past the start (a sample's timestamp may be a few ms before "now").
    handle.clock().advance(Duration::from_secs(1));
    let s0 = scrape_text(&sim, &handle, 1).await;
    handle.clock().advance(Duration::from_secs(10));
    let s1 = scrape_text(&sim, &handle, 1).await;
    let rate = |a: &Scrape, b: &Scrape| {
        let ((v0, t0), (v1, t1)) = (container_cpu(a)[&key], container_cpu(b)[&key]);
        ((v1 * 1e9).round() - (v0 * 1e9).round()) * 1000.0 / (t1 - t0) as f64
    };
    assert_eq!(rate(&s0, &s1), 400e6);
    assert_eq!(container_memory(&s1)[&key], (300u64 << 20) as f64);
    assert!(container_cpu(&scrape_text(&sim, &handle, 0).await).is_empty());

    // New usage: the counter continues from where it was.
    assert_eq!(put("100m", "50Mi").await.unwrap().status(), StatusCode::OK);
    handle.clock().advance(Duration::from_secs(10));
    let s2 = scrape_text(&sim, &handle, 1).await;
    let r = rate(&s1, &s2);
    // The window starts a few ms before the change (timestamp jitter): within 1%.
    assert!((r - 100e6).abs() < 1e6, "{r}");
    assert!(container_cpu(&s2)[&key].0 > container_cpu(&s1)[&key].0);
    handle.clock().advance(Duration::from_secs(10));
    let s3 = scrape_text(&sim, &handle, 1).await;
    assert_eq!(rate(&s2, &s3), 100e6);
    assert_eq!(container_memory(&s3)[&key], (50u64 << 20) as f64);
    let list: Vec<control::PodUsage> = serde_json::from_str(
        &http
            .get(url("/pods"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(list.len(), 1);

    // Bad requests.
    for (body, want) in [
        ("{", StatusCode::BAD_REQUEST),
        (
            r#"{"node":"sim-node-0002","containers":[]}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            r#"{"node":"sim-node-0002","containers":[{"name":"a","cpu":"lots","memory":"1Mi"}]}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            r#"{"node":"sim-node-0099","containers":[{"name":"a","cpu":"1m","memory":"1Mi"}]}"#,
            StatusCode::NOT_FOUND,
        ),
    ] {
        let resp = http
            .put(url("/pods/hpa/x"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), want, "{body}");
        assert!(
            !resp.text().await.unwrap().trim().is_empty(),
            "a reason for {body}"
        );
    }
    let status = |r: reqwest::Response| r.status();
    assert_eq!(
        status(http.get(url("/nope")).send().await.unwrap()),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(http.post(url("/pods")).send().await.unwrap()),
        StatusCode::METHOD_NOT_ALLOWED
    );

    // Removed: gone from the next scrape.
    let del = |p: &'static str| http.delete(url(p)).send();
    assert_eq!(
        status(del("/pods/hpa/web-1").await.unwrap()),
        StatusCode::OK
    );
    assert_eq!(
        status(del("/pods/hpa/web-1").await.unwrap()),
        StatusCode::NOT_FOUND
    );
    assert!(container_cpu(&scrape_text(&sim, &handle, 1).await).is_empty());
    assert!(
        control::serve_control(
            handle.control(),
            "0.0.0.0:0".parse().unwrap(),
            cancel.clone()
        )
        .await
        .is_err(),
        "no control endpoint off loopback"
    );
    cancel.cancel();
}
