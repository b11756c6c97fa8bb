//! `kd-load`: the scale harness's client (issue #7), used by `bench/scale/run.sh`.
//!
//! - `create`: registers kubelet-sim's Namespaces, Nodes and Pods (`--objects-out`) in a real
//!   kube-apiserver with a client certificate, concurrently, and makes every Pod Running through
//!   its `/status` subresource (both servers only serve Running pods' metrics).
//! - `wait`: polls a metrics server until it lists the expected numbers of nodes and pods.
//! - `run`: open-loop load at fixed rates (each request is sent at its scheduled time whether
//!   or not earlier ones finished; latency is measured from the scheduled time, so a stalled
//!   server cannot hide queueing — no coordinated omission). Three request kinds, shaped like
//!   real users: `hpa` (one namespace, `labelSelector=app=<app>`: the HPA's query, cycling over
//!   every (namespace, app) deployment), `top-pods` (`kubectl top pod -A`: every pod) and
//!   `top-nodes` (every node). Prints one JSON object (p50/p99/max per kind, errors, bytes).
//!
//! Loopback only: it talks to the URLs it is given (the harness passes 127.0.0.1 ones).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "kd-load",
    about = "Scale-harness client: object creation and open-loop API load"
)]
struct Cli {
    /// PEM client certificate (e.g. the cluster's admin.crt: CN=admin, O=system:masters).
    #[arg(long, global = true)]
    cert: Option<PathBuf>,
    /// PEM key of --cert.
    #[arg(long, global = true)]
    key: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the objects of a kubelet-sim `--objects-out` List in kube-apiserver.
    Create {
        /// kube-apiserver URL.
        #[arg(long)]
        apiserver: String,
        /// The List written by `kubelet-sim --objects-out`.
        #[arg(long)]
        objects: PathBuf,
        /// Requests in flight.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// Wait until a metrics server lists `--nodes` NodeMetrics and `--pods` PodMetrics.
    Wait {
        /// Server base URL (https://127.0.0.1:PORT).
        #[arg(long)]
        url: String,
        #[arg(long)]
        nodes: usize,
        #[arg(long)]
        pods: usize,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Give up as soon as this process has exited (the server under test).
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Fetch one cycle of kubelet payloads (`/metrics/resource` of every node, 64 at a time)
    /// and time a plain byte scan (line count with memchr) over them; prints JSON.
    Payload {
        /// Lines "IP PORT", one per node.
        #[arg(long)]
        addrs: PathBuf,
        /// CA of the kubelets' serving certificates.
        #[arg(long)]
        ca: PathBuf,
    },
    /// Time writing N bytes to a loopback TCP socket (read and discarded by a local reader).
    Socket {
        #[arg(long)]
        bytes: usize,
    },
    /// Open-loop load at fixed rates; prints a JSON summary.
    Run {
        /// Server base URL (https://127.0.0.1:PORT).
        #[arg(long)]
        url: String,
        /// Seconds of load.
        #[arg(long, default_value_t = 20.0)]
        duration: f64,
        /// HPA-style namespaced label-selector lists per second.
        #[arg(long, default_value_t = 20.0)]
        hpa_rate: f64,
        /// Full pod lists (`kubectl top pod -A`) per second.
        #[arg(long, default_value_t = 0.5)]
        top_pods_rate: f64,
        /// Node lists (`kubectl top node`) per second.
        #[arg(long, default_value_t = 1.0)]
        top_nodes_rate: f64,
        /// Namespaces of the HPA queries (kubelet-sim's defaults).
        #[arg(long, value_delimiter = ',', default_value = "default,team-a,team-b")]
        namespaces: Vec<String>,
        /// `app` label values of the HPA queries (kubelet-sim's defaults).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "web,api,worker,cache,auth,search,billing,frontend"
        )]
        apps: Vec<String>,
        /// Accept header (kubectl top and the HPA both accept JSON).
        #[arg(long, default_value = "application/json")]
        accept: String,
        /// Per-request timeout in seconds (an expired request is an error).
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
}

fn client(cli: &Cli, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .timeout(timeout)
        .pool_max_idle_per_host(64)
        .no_proxy();
    if let (Some(c), Some(k)) = (&cli.cert, &cli.key) {
        let mut pem = std::fs::read(c).with_context(|| format!("reading {}", c.display()))?;
        pem.push(b'\n');
        pem.extend(std::fs::read(k).with_context(|| format!("reading {}", k.display()))?);
        b = b.identity(reqwest::Identity::from_pem(&pem).context("client identity")?);
    }
    Ok(b.build()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match &cli.command {
        Cmd::Create {
            apiserver,
            objects,
            concurrency,
        } => create(&cli, apiserver, objects, *concurrency).await,
        Cmd::Wait {
            url,
            nodes,
            pods,
            timeout,
            pid,
        } => wait(&cli, url, *nodes, *pods, *timeout, *pid).await,
        Cmd::Payload { addrs, ca } => payload(addrs, ca).await,
        Cmd::Socket { bytes } => socket(*bytes).await,
        Cmd::Run {
            url,
            duration,
            hpa_rate,
            top_pods_rate,
            top_nodes_rate,
            namespaces,
            apps,
            accept,
            timeout,
        } => {
            let http = client(&cli, Duration::from_secs_f64(*timeout))?;
            let mut hpa_paths = Vec::new();
            for ns in namespaces {
                for app in apps {
                    hpa_paths.push(format!(
                        "{url}/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods?labelSelector=app%3D{app}"
                    ));
                }
            }
            let streams = vec![
                Stream {
                    kind: "hpa",
                    rate: *hpa_rate,
                    urls: hpa_paths,
                },
                Stream {
                    kind: "top-pods",
                    rate: *top_pods_rate,
                    urls: vec![format!("{url}/apis/metrics.k8s.io/v1beta1/pods")],
                },
                Stream {
                    kind: "top-nodes",
                    rate: *top_nodes_rate,
                    urls: vec![format!("{url}/apis/metrics.k8s.io/v1beta1/nodes")],
                },
            ];
            let summary = run(http, streams, Duration::from_secs_f64(*duration), accept).await;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(())
        }
    }
}

async fn create(
    cli: &Cli,
    apiserver: &str,
    objects: &PathBuf,
    concurrency: usize,
) -> anyhow::Result<()> {
    let http = client(cli, Duration::from_secs(60))?;
    let list: Value = serde_json::from_slice(
        &std::fs::read(objects).with_context(|| format!("reading {}", objects.display()))?,
    )?;
    let items = list["items"].as_array().context("no items")?.clone();
    let by_kind = |kind: &str| -> Vec<Value> {
        items
            .iter()
            .filter(|o| o["kind"] == kind)
            .cloned()
            .collect()
    };
    let started = Instant::now();
    let namespaces = by_kind("Namespace");
    let nodes = by_kind("Node");
    let pods = by_kind("Pod");
    // Namespaces first (pods need them); nodes and pods can then go together.
    let ns_reqs = namespaces
        .into_iter()
        .map(|o| Req::post(format!("{apiserver}/api/v1/namespaces"), o))
        .collect();
    run_all(&http, ns_reqs, concurrency).await?;
    let mut reqs: Vec<Req> = nodes
        .into_iter()
        .map(|o| Req::post(format!("{apiserver}/api/v1/nodes"), o))
        .collect();
    let mut patches = Vec::new();
    for mut p in pods {
        let ns = p["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let name = p["metadata"]["name"]
            .as_str()
            .context("pod without name")?
            .to_owned();
        let mut status = p
            .as_object_mut()
            .and_then(|m| m.remove("status"))
            .unwrap_or_else(|| json!({}));
        status["phase"] = json!("Running");
        if status.get("conditions").is_none() {
            status["conditions"] = json!([{"type": "Ready", "status": "True"}]);
        }
        reqs.push(Req::post(
            format!("{apiserver}/api/v1/namespaces/{ns}/pods"),
            p,
        ));
        patches.push(Req {
            url: format!("{apiserver}/api/v1/namespaces/{ns}/pods/{name}/status"),
            body: json!({"status": status}),
            patch: true,
        });
    }
    let n = reqs.len() + patches.len();
    run_all(&http, reqs, concurrency).await?;
    run_all(&http, patches, concurrency).await?;
    eprintln!(
        "kd-load create: {n} requests in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

struct Req {
    url: String,
    body: Value,
    patch: bool,
}

impl Req {
    fn post(url: String, body: Value) -> Self {
        Req {
            url,
            body,
            patch: false,
        }
    }
}

async fn run_all(http: &reqwest::Client, reqs: Vec<Req>, concurrency: usize) -> anyhow::Result<()> {
    use futures::StreamExt;
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(reqs)
        .map(|r| async move {
            let body = serde_json::to_vec(&r.body)?;
            for attempt in 0..5 {
                let req = if r.patch {
                    http.patch(&r.url)
                        .header("Content-Type", "application/merge-patch+json")
                } else {
                    http.post(&r.url).header("Content-Type", "application/json")
                };
                match req.body(body.clone()).send().await {
                    Ok(resp) if resp.status().is_success() || resp.status().as_u16() == 409 => {
                        return Ok(());
                    }
                    Ok(resp) if attempt == 4 => {
                        let s = resp.status();
                        bail!("{} {}: {}", s, r.url, resp.text().await.unwrap_or_default());
                    }
                    Err(e) if attempt == 4 => bail!("{}: {e}", r.url),
                    _ => tokio::time::sleep(Duration::from_millis(200 << attempt)).await,
                }
            }
            unreachable!()
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

async fn wait(
    cli: &Cli,
    url: &str,
    nodes: usize,
    pods: usize,
    timeout: u64,
    pid: Option<u32>,
) -> anyhow::Result<()> {
    let http = client(cli, Duration::from_secs(30))?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let count = |path: String| {
        let http = http.clone();
        async move {
            let r = http
                .get(path)
                .header("Accept", "application/json")
                .send()
                .await
                .ok()?;
            if !r.status().is_success() {
                return None;
            }
            let v: Value = r.json_or_bytes().await?;
            v["items"].as_array().map(Vec::len)
        }
    };
    let (mut n, mut p) = (None, None);
    while Instant::now() < deadline {
        n = count(format!("{url}/apis/metrics.k8s.io/v1beta1/nodes")).await;
        p = count(format!("{url}/apis/metrics.k8s.io/v1beta1/pods")).await;
        if n == Some(nodes) && p == Some(pods) {
            println!("ready: {nodes} nodes, {pods} pods");
            return Ok(());
        }
        if let Some(pid) = pid
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            bail!("process {pid} exited");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("timed out: nodes {n:?}/{nodes}, pods {p:?}/{pods}")
}

trait JsonOrBytes {
    async fn json_or_bytes(self) -> Option<Value>;
}

impl JsonOrBytes for reqwest::Response {
    async fn json_or_bytes(self) -> Option<Value> {
        let b = self.bytes().await.ok()?;
        serde_json::from_slice(&b).ok()
    }
}

struct Stream {
    kind: &'static str,
    rate: f64,
    urls: Vec<String>,
}

#[derive(Default)]
struct Samples {
    latencies_us: Vec<u64>,
    errors: u64,
    empty: u64,
    bytes: u64,
    max_bytes: u64,
    error_examples: Vec<String>,
}

async fn run(
    http: reqwest::Client,
    streams: Vec<Stream>,
    duration: Duration,
    accept: &str,
) -> Value {
    let results: Arc<Mutex<BTreeMap<&'static str, Samples>>> = Arc::default();
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::new();
    for s in streams {
        if s.rate <= 0.0 || s.urls.is_empty() {
            continue;
        }
        let n = (duration.as_secs_f64() * s.rate).floor() as u64;
        let period = Duration::from_secs_f64(1.0 / s.rate);
        let (http, results, accept) = (http.clone(), results.clone(), accept.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut inflight = Vec::with_capacity(n as usize);
            for i in 0..n {
                let at = start + period.mul_f64(i as f64);
                tokio::time::sleep_until(at).await;
                let url = s.urls[i as usize % s.urls.len()].clone();
                let (http, results, accept) = (http.clone(), results.clone(), accept.clone());
                let kind = s.kind;
                inflight.push(tokio::spawn(async move {
                    let outcome = async {
                        let r = http.get(&url).header("Accept", &accept).send().await?;
                        let status = r.status();
                        let body = r.bytes().await?;
                        Ok::<_, reqwest::Error>((status, body))
                    }
                    .await;
                    let us = at.elapsed().as_micros() as u64;
                    let mut all = results.lock().unwrap();
                    let e = all.entry(kind).or_default();
                    e.latencies_us.push(us);
                    match outcome {
                        Ok((status, body)) if status.is_success() => {
                            e.bytes += body.len() as u64;
                            e.max_bytes = e.max_bytes.max(body.len() as u64);
                            if memchr_empty(&body) {
                                e.empty += 1;
                            }
                        }
                        Ok((status, body)) => {
                            e.errors += 1;
                            if e.error_examples.len() < 3 {
                                let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
                                e.error_examples.push(format!("{status}: {text}"));
                            }
                        }
                        Err(err) => {
                            e.errors += 1;
                            if e.error_examples.len() < 3 {
                                e.error_examples.push(err.to_string());
                            }
                        }
                    }
                }));
            }
            for t in inflight {
                let _ = t.await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let wall = start.elapsed().as_secs_f64();
    let all = results.lock().unwrap();
    let mut out = serde_json::Map::new();
    for (kind, s) in all.iter() {
        let mut l = s.latencies_us.clone();
        l.sort_unstable();
        let q = |p: f64| -> f64 {
            if l.is_empty() {
                return 0.0;
            }
            let i = ((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1;
            l[i] as f64 / 1000.0
        };
        out.insert(
            (*kind).into(),
            json!({
                "requests": l.len(),
                "errors": s.errors,
                "empty_lists": s.empty,
                "p50_ms": q(0.50),
                "p90_ms": q(0.90),
                "p99_ms": q(0.99),
                "max_ms": l.last().map_or(0.0, |&v| v as f64 / 1000.0),
                "mean_bytes": if l.is_empty() { 0 } else { s.bytes / l.len() as u64 },
                "max_bytes": s.max_bytes,
                "error_examples": s.error_examples,
            }),
        );
    }
    out.insert("wall_seconds".into(), json!(wall));
    Value::Object(out)
}

/// Whether a list body has no items (`"items":[]`; the HPA fails on those).
fn memchr_empty(body: &[u8]) -> bool {
    memchr::memmem::find(body, b"\"items\":[]").is_some()
}

async fn payload(addrs: &PathBuf, ca: &PathBuf) -> anyhow::Result<()> {
    use futures::StreamExt;
    let certs = reqwest::Certificate::from_pem_bundle(&std::fs::read(ca)?)?;
    let http = reqwest::Client::builder()
        .tls_certs_only(certs)
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()?;
    let urls: Vec<String> = std::fs::read_to_string(addrs)?
        .lines()
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            Some(format!(
                "https://{}:{}/metrics/resource",
                p.next()?,
                p.next()?
            ))
        })
        .collect();
    let started = Instant::now();
    let bodies: Vec<anyhow::Result<bytes::Bytes>> = futures::stream::iter(urls)
        .map(|u| {
            let http = http.clone();
            async move {
                Ok(http
                    .get(&u)
                    .send()
                    .await?
                    .error_for_status()?
                    .bytes()
                    .await?)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let fetch_s = started.elapsed().as_secs_f64();
    let bodies: Vec<bytes::Bytes> = bodies.into_iter().collect::<anyhow::Result<_>>()?;
    let total: usize = bodies.iter().map(|b| b.len()).sum();
    // A plain byte scan: count lines with memchr, best of 5.
    let mut best = f64::MAX;
    let mut lines = 0usize;
    for _ in 0..5 {
        let t = Instant::now();
        lines = bodies
            .iter()
            .map(|b| memchr::memchr_iter(b'\n', std::hint::black_box(b)).count())
            .sum();
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{}",
        json!({
            "nodes": bodies.len(),
            "bytes_per_cycle": total,
            "max_node_bytes": bodies.iter().map(|b| b.len()).max().unwrap_or(0),
            "lines_per_cycle": lines,
            "byte_scan_seconds": best,
            "byte_scan_gb_per_s": total as f64 / best / 1e9,
            "fetch_seconds_64_concurrent": fetch_s,
        })
    );
    Ok(())
}

async fn socket(bytes: usize) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0usize;
        loop {
            let k = s.read(&mut buf).await?;
            if k == 0 {
                return Ok::<_, std::io::Error>(n);
            }
            n += k;
        }
    });
    let data = vec![b'x'; bytes];
    let mut best = f64::MAX;
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    for _ in 0..5 {
        let t = Instant::now();
        s.write_all(&data).await?;
        s.flush().await?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    drop(s);
    let got = reader.await??;
    println!(
        "{}",
        json!({"bytes": bytes, "write_seconds": best, "received": got, "gb_per_s": bytes as f64 / best / 1e9})
    );
    Ok(())
}
