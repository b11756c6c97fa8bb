//! `kd-load`: the scale harness's client (issue #7), used by `bench/scale/run.sh`.
//!
//! - `create`: registers kubelet-sim's Namespaces, Nodes and Pods (`--objects-out`) in a real
//!   kube-apiserver with a client certificate, concurrently, and makes every Pod Running through
//!   its `/status` subresource (both servers only serve Running pods' metrics).
//! - `wait`: polls a metrics server until it lists the expected numbers of nodes and pods.
//! - `targets`: the answers a correct server gives (node and pod counts, every deployment's
//!   namespace, `app` label and pod count), from the same List.
//! - `run`: HPA queries (namespace + `labelSelector=app=<app>` for every deployment once per
//!   `--hpa-period`, spread open loop or in bursts, straight to the server and/or through
//!   kube-apiserver's aggregator), `kubectl top pod -A` and `kubectl top node` lists, each kind
//!   on its own client; every response checked against the targets (see `load.rs`). Prints one
//!   JSON object: per kind the successful latencies (n, mean, max, and only the percentiles the
//!   sample supports), errors by reason with their own latencies, bytes, content types.
//!   With `--churn-rate`, pods are created and deleted during the load (see `churn.rs`);
//!   `churn-pool` creates the churned pods' pool beforehand.
//! - `first-metric`: starts pods during the run (kube-apiserver + kubelet-sim's control
//!   endpoint) and times each one's first served usage on every server (see `first_metric.rs`).
//! - `watchers`: N concurrent watches on pods.metrics.k8s.io resumed from one list, every
//!   event of every watcher accounted per scrape tick (see `watchers.rs`, `tally.rs`).
//! - `payload`, `socket`: physical limits (one cycle of kubelet bodies; a loopback write).
//!
//! Loopback only: it talks to the URLs it is given (the harness passes 127.0.0.1 ones).

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

mod churn;
mod count;
mod first_metric;
mod floor;
mod load;
mod pods;
mod summary;
mod tally;
mod targets;
mod watchers;
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
    /// Bearer token sent with every request (e.g. the demo's `--token`).
    #[arg(long, global = true)]
    token: Option<String>,
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
    /// The floor of the scrape job: every kubelet body over persistent TLS connections,
    /// values decoded into a flat Vec, nothing else; CPU per cycle and RSS per node as JSON.
    Floor {
        /// Lines "IP PORT", one per node.
        #[arg(long)]
        addrs: PathBuf,
        /// CA of the kubelets' serving certificates.
        #[arg(long)]
        ca: PathBuf,
        /// Measured cycles (after one warm-up cycle that makes the connections).
        #[arg(long, default_value_t = 5)]
        cycles: usize,
        /// Kubelets fetched at once (our server's --kubelet-max-concurrency default).
        #[arg(long, default_value_t = 128)]
        concurrency: usize,
        /// Use the lean client (one hyper HTTP/1.1 connection per kubelet) with this read
        /// buffer limit in bytes (at least 8192) instead of reqwest.
        #[arg(long)]
        lean_max_buf: Option<usize>,
    },
    /// Time writing N bytes to a loopback TCP socket (read and discarded by a local reader).
    Socket {
        #[arg(long)]
        bytes: usize,
    },
    /// Write the expected answers (node and pod counts, deployments) of a kubelet-sim
    /// `--objects-out` List as JSON, for `run --targets`.
    Targets {
        /// The List written by `kubelet-sim --objects-out`.
        #[arg(long)]
        objects: PathBuf,
        /// Nodes whose kubelet fails on purpose: neither they nor their pods are expected.
        #[arg(long, value_delimiter = ',')]
        exclude_nodes: Vec<String>,
    },
    /// Load with a check of every response (see `load.rs`); prints a JSON summary.
    Run(Box<RunArgs>),
    /// Start pods during the run and time each one's first served metric on every server
    /// (see `first_metric.rs`); prints a JSON summary.
    FirstMetric(Box<FirstMetricArgs>),
    /// N concurrent watches on pods.metrics.k8s.io resumed from one list; every watcher's
    /// events checked per tick (see `watchers.rs`); prints a JSON report.
    Watchers(Box<WatchersArgs>),
    /// Create the pool of churned pods (`run --churn-rate`) in kube-apiserver and
    /// kubelet-sim, before the servers start (see `churn.rs`).
    ChurnPool {
        /// kube-apiserver URL.
        #[arg(long)]
        apiserver: String,
        /// kubelet-sim's control endpoint (`http://127.0.0.1:PORT`).
        #[arg(long)]
        control: String,
        /// The kubelet-sim `--objects-out` List (its Nodes get the pods, round robin).
        #[arg(long)]
        objects: PathBuf,
        /// Namespace of the churned pods.
        #[arg(long, default_value = "kd-churn")]
        namespace: String,
        /// Pods in the pool.
        #[arg(long)]
        pods: usize,
    },
}

#[derive(clap::Args)]
struct WatchersArgs {
    /// Server base URL (https://127.0.0.1:PORT).
    #[arg(long)]
    url: String,
    /// Concurrent watches.
    #[arg(long, default_value_t = 10)]
    watchers: usize,
    /// Watch (and list) this namespace only; default all namespaces.
    #[arg(long)]
    namespace: Option<String>,
    /// labelSelector of the list and every watch.
    #[arg(long)]
    label_selector: Option<String>,
    /// HTTP version of the watches: h2 (kube-apiserver's aggregator) or h1.
    #[arg(long, value_enum, default_value = "h2")]
    http: watchers::Http,
    /// HTTP/2 connections the watches are spread over (the server allows 1,000 streams on
    /// each); HTTP/1.1 uses one per watch.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Scrape ticks checked (after the one each watch resumes into).
    #[arg(long, default_value_t = 4)]
    ticks: usize,
    /// Seconds the other watchers get after the fastest finished the last tick.
    #[arg(long, default_value_t = 15.0)]
    grace: f64,
    /// Seconds before giving up (unfinished ticks are errors); also the watches' timeoutSeconds.
    #[arg(long, default_value_t = 600.0)]
    timeout: f64,
    /// Seconds the list's resourceVersion must stay unchanged (the scrape is over) before the
    /// list the watches resume from is taken.
    #[arg(long, default_value_t = 2.5)]
    quiet: f64,
    /// Pods the list must hold (the fleet's); default: whatever it holds.
    #[arg(long)]
    expect_pods: Option<usize>,
}

/// Pod churn during `run` (see `churn.rs`).
#[derive(clap::Args)]
struct ChurnArgs {
    /// Pods created and as many deleted per second during the whole load (warm-up
    /// included), in kube-apiserver and kubelet-sim; 0: none. Needs --churn-control,
    /// --churn-objects, --aggregator-url (kube-apiserver) and --resolution.
    #[arg(long, default_value_t = 0.0)]
    churn_rate: f64,
    /// Churned pods kept alive (the pool `churn-pool` created: each lives pool / rate s).
    #[arg(long, default_value_t = 0)]
    churn_pool: usize,
    /// kubelet-sim's control endpoint (`http://127.0.0.1:PORT`).
    #[arg(long)]
    churn_control: Option<String>,
    /// The kubelet-sim `--objects-out` List (its Nodes get the new pods, round robin).
    #[arg(long)]
    churn_objects: Option<PathBuf>,
    /// Namespace of the churned pods.
    #[arg(long, default_value = "kd-churn")]
    churn_namespace: String,
    /// Poll period of the server's churn-namespace list, seconds.
    #[arg(long, default_value_t = 1.0)]
    churn_poll: f64,
    /// The servers' scrape resolution in seconds (the churn tolerance of full pod lists
    /// is derived from it and the rate: `churn.rs`).
    #[arg(long)]
    resolution: Option<f64>,
}

#[derive(clap::Args)]
struct FirstMetricArgs {
    /// kube-apiserver URL.
    #[arg(long)]
    apiserver: String,
    /// kubelet-sim's control endpoint (`http://127.0.0.1:PORT`).
    #[arg(long)]
    control: String,
    /// A metrics server as NAME=URL (repeat for each; all are polled at once).
    #[arg(long = "server", required = true)]
    servers: Vec<String>,
    /// The kubelet-sim `--objects-out` List (its Nodes get the new pods, round robin).
    #[arg(long)]
    objects: PathBuf,
    /// Namespace of the new pods.
    #[arg(long, default_value = "first-metric")]
    namespace: String,
    /// Pods started in all.
    #[arg(long, default_value_t = 1200)]
    pods: usize,
    /// Pods started per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Namespace list poll period, seconds.
    #[arg(long, default_value_t = 0.25)]
    poll: f64,
    /// Seconds after its start before a pod not yet served counts as missing.
    #[arg(long, default_value_t = 90.0)]
    timeout: f64,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Server base URL (https://127.0.0.1:PORT).
    #[arg(long)]
    url: String,
    /// kube-apiserver URL: with `--hpa-via aggregator|both`, HPA queries go through the
    /// aggregation layer as the HPA controller's do.
    #[arg(long)]
    aggregator_url: Option<String>,
    /// The expected answers (`kd-load targets`).
    #[arg(long)]
    targets: PathBuf,
    /// Seconds of recorded load.
    #[arg(long, default_value_t = 120.0)]
    duration: f64,
    /// Seconds of load before it, sent but not recorded.
    #[arg(long, default_value_t = 10.0)]
    warmup: f64,
    /// Every deployment is queried once per this many seconds (the HPA's sync period).
    #[arg(long, default_value_t = 15.0)]
    hpa_period: f64,
    /// `spread`: open loop at deployments / period per second; `burst`: every period all
    /// deployments at once, drained by `--hpa-workers` workers.
    #[arg(long, default_value = "spread")]
    hpa_mode: HpaMode,
    /// Workers of `--hpa-mode burst` (kube-controller-manager's default: 5).
    #[arg(long, default_value_t = 5)]
    hpa_workers: usize,
    /// Where HPA queries go: `direct` (the server's port), `aggregator` (kube-apiserver) or
    /// `both` (alternate deployments).
    #[arg(long, default_value = "direct")]
    hpa_via: HpaVia,
    /// Accept header of the HPA queries (the HPA sends protobuf first).
    #[arg(long, default_value = "application/json")]
    hpa_accept: String,
    /// Full pod lists (`kubectl top pod -A`) per second.
    #[arg(long, default_value_t = 0.5)]
    top_pods_rate: f64,
    /// Node lists (`kubectl top node`) per second.
    #[arg(long, default_value_t = 1.0)]
    top_nodes_rate: f64,
    /// Accept header of the full lists.
    #[arg(long, default_value = "application/json")]
    top_accept: String,
    /// Allowed difference between a list's items and the fleet's either way, on every
    /// stream (e.g. flaky pods); 0 otherwise. Churn adds its own to full pod lists.
    #[arg(long, default_value_t = 0)]
    slack: usize,
    #[command(flatten)]
    churn: ChurnArgs,
    /// Per-request timeout in seconds (an expired request is an error).
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum HpaMode {
    Spread,
    Burst,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum HpaVia {
    Direct,
    Aggregator,
    Both,
}

fn client(cli: &Cli, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let b = reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(64);
    Ok(with_identity(cli, b)?.build()?)
}

/// A client for long watches: no overall timeout; HTTP/2 with flow-control windows that let a
/// tick stream without stalls (the connection window bounds what a slow reader buffers).
fn watch_client(cli: &Cli, http: watchers::Http) -> anyhow::Result<reqwest::Client> {
    let b = reqwest::Client::builder().connect_timeout(Duration::from_secs(30));
    let b = match http {
        watchers::Http::H1 => b.http1_only(),
        watchers::Http::H2 => b
            .http2_prior_knowledge()
            .http2_initial_stream_window_size(1 << 20)
            .http2_initial_connection_window_size(32 << 20),
    };
    Ok(with_identity(cli, b)?.build()?)
}

/// Loopback test servers' self-signed certificates, no proxy, and `--cert`/`--key` if given.
fn with_identity(cli: &Cli, b: reqwest::ClientBuilder) -> anyhow::Result<reqwest::ClientBuilder> {
    let mut b = b.tls_danger_accept_invalid_certs(true).no_proxy();
    if let Some(t) = &cli.token {
        let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
            .context("--token: not a valid header value")?;
        v.set_sensitive(true);
        b = b.default_headers([(reqwest::header::AUTHORIZATION, v)].into_iter().collect());
    }
    if let (Some(c), Some(k)) = (&cli.cert, &cli.key) {
        let mut pem = std::fs::read(c).with_context(|| format!("reading {}", c.display()))?;
        pem.push(b'\n');
        pem.extend(std::fs::read(k).with_context(|| format!("reading {}", k.display()))?);
        b = b.identity(reqwest::Identity::from_pem(&pem).context("client identity")?);
    }
    Ok(b)
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
        Cmd::Floor {
            addrs,
            ca,
            cycles,
            concurrency,
            lean_max_buf,
        } => {
            let v = floor::run(
                kubelet_urls(addrs)?,
                ca,
                *cycles,
                *concurrency,
                *lean_max_buf,
            )
            .await?;
            println!("{v}");
            Ok(())
        }
        Cmd::Socket { bytes } => socket(*bytes).await,
        Cmd::Targets {
            objects,
            exclude_nodes,
        } => {
            let t = targets::Targets::from_objects(objects, exclude_nodes)?;
            println!("{}", serde_json::to_string(&t)?);
            Ok(())
        }
        Cmd::Run(args) => run_load(&cli, args).await,
        Cmd::Watchers(a) => {
            let plan = watchers::Plan {
                url: a.url.clone(),
                watchers: a.watchers,
                namespace: a.namespace.clone(),
                label_selector: a.label_selector.clone(),
                http: a.http,
                connections: a.connections,
                ticks: a.ticks,
                grace: Duration::from_secs_f64(a.grace),
                timeout: Duration::from_secs_f64(a.timeout),
                quiet: Duration::from_secs_f64(a.quiet),
                expect: a.expect_pods,
            };
            let v = watchers::run(plan, &|h| watch_client(&cli, h)).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        Cmd::FirstMetric(a) => {
            let servers = a
                .servers
                .iter()
                .map(|s| {
                    s.split_once('=')
                        .map(|(n, u)| (n.to_owned(), u.to_owned()))
                        .with_context(|| format!("--server {s}: expected NAME=URL"))
                })
                .collect::<anyhow::Result<_>>()?;
            let plan = first_metric::Plan {
                apiserver: a.apiserver.clone(),
                control: a.control.clone(),
                servers,
                nodes: first_metric::node_names(&a.objects)?,
                namespace: a.namespace.clone(),
                pods: a.pods,
                rate: a.rate,
                poll: Duration::from_secs_f64(a.poll),
                timeout: Duration::from_secs_f64(a.timeout),
            };
            let v = first_metric::run(client(&cli, Duration::from_secs(30))?, plan).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        Cmd::ChurnPool {
            apiserver,
            control,
            objects,
            namespace,
            pods,
        } => {
            let api =
                pods::PodApi::new(client(&cli, Duration::from_secs(30))?, apiserver, control)?;
            let nodes = first_metric::node_names(objects)?;
            let v = churn::fill(&api, namespace, &nodes, *pods).await?;
            println!("{v}");
            Ok(())
        }
    }
}

async fn run_load(cli: &Cli, a: &RunArgs) -> anyhow::Result<()> {
    use load::{Request, Schedule, Stream};
    let t: targets::Targets = serde_json::from_slice(
        &std::fs::read(&a.targets).with_context(|| format!("reading {}", a.targets.display()))?,
    )
    .context("targets JSON")?;
    let timeout = Duration::from_secs_f64(a.timeout);
    let api = "apis/metrics.k8s.io/v1beta1";
    let hpa_url = |base: &str, ns: &str, app: &str| Request {
        url: format!("{base}/{api}/namespaces/{ns}/pods?labelSelector=app%3D{app}"),
        expect: 0,
    };
    let (mut direct, mut aggregated) = (Vec::new(), Vec::new());
    // A fixed shuffle so that consecutive queries hit different namespaces.
    let mut order: Vec<usize> = (0..t.deployments.len()).collect();
    order.sort_by_key(|&i| {
        (i as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(17)
    });
    for (k, &i) in order.iter().enumerate() {
        let (ns, app, pods) = &t.deployments[i];
        let via_agg = match a.hpa_via {
            HpaVia::Direct => false,
            HpaVia::Aggregator => true,
            HpaVia::Both => k % 2 == 1,
        };
        if via_agg {
            let base = a
                .aggregator_url
                .as_deref()
                .context("--hpa-via aggregator|both needs --aggregator-url")?;
            aggregated.push(Request {
                expect: *pods,
                ..hpa_url(base, ns, app)
            });
        } else {
            direct.push(Request {
                expect: *pods,
                ..hpa_url(&a.url, ns, app)
            });
        }
    }
    let hpa_schedule = |n: usize| match a.hpa_mode {
        HpaMode::Spread => Schedule::Rate(n as f64 / a.hpa_period),
        HpaMode::Burst => Schedule::Burst {
            period: a.hpa_period,
            workers: a.hpa_workers,
        },
    };
    let slack = churn::Tolerance::either_way(a.slack);
    let mut streams = Vec::new();
    for (kind, reqs) in [("hpa", direct), ("hpa-aggregated", aggregated)] {
        if !reqs.is_empty() {
            streams.push(Stream {
                kind: kind.into(),
                schedule: hpa_schedule(reqs.len()),
                requests: reqs,
                accept: a.hpa_accept.clone(),
                client: client(cli, timeout)?,
                tolerance: slack,
            });
        }
    }
    let churn = churn_plan(cli, a)?;
    // The churned pods' pool is part of the fleet; churn moves the full pod list's count.
    let (pool, churn_tolerance) = match &churn {
        Some(p) => (p.pool, churn::Tolerance::for_churn(p.rate, p.resolution)),
        None => (0, churn::Tolerance::default()),
    };
    for (kind, rate, path, expect, tolerance) in [
        (
            "top-pods",
            a.top_pods_rate,
            "pods",
            t.pods + pool,
            slack.plus(churn_tolerance),
        ),
        ("top-nodes", a.top_nodes_rate, "nodes", t.nodes, slack),
    ] {
        streams.push(Stream {
            kind: kind.into(),
            schedule: Schedule::Rate(rate),
            requests: vec![Request {
                url: format!("{}/{api}/{path}", a.url),
                expect,
            }],
            accept: a.top_accept.clone(),
            client: client(cli, timeout)?,
            tolerance,
        });
    }
    let window = load::Window {
        warmup: Duration::from_secs_f64(a.warmup),
        duration: Duration::from_secs_f64(a.duration),
    };
    let length = window.warmup + window.duration;
    let (mut summary, churned) = tokio::join!(load::run(streams, window), async {
        match churn {
            Some(plan) => Some(churn::run(plan, length).await),
            None => None,
        }
    });
    if let Some(c) = churned {
        summary["churn"] = c;
        summary["churn"]["tolerance_top_pods"] = json!({
            "short": churn_tolerance.short,
            "long": churn_tolerance.long,
            "formula": "short = ceil(rate x 3 x resolution), long = ceil(rate x resolution) + 1 (src/bin/kd-load/churn.rs)",
        });
    }
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// The churn of `run --churn-rate`, or `None` without it; a clear error when a flag it
/// needs is missing.
fn churn_plan(cli: &Cli, a: &RunArgs) -> anyhow::Result<Option<churn::Plan>> {
    let c = &a.churn;
    if c.churn_rate == 0.0 {
        return Ok(None);
    }
    if !(c.churn_rate > 0.0 && c.churn_rate.is_finite()) {
        bail!("--churn-rate {}: expected a positive number", c.churn_rate);
    }
    let control = c
        .churn_control
        .as_deref()
        .context("--churn-rate needs --churn-control")?;
    let objects = c
        .churn_objects
        .as_ref()
        .context("--churn-rate needs --churn-objects")?;
    let apiserver = a
        .aggregator_url
        .as_deref()
        .context("--churn-rate needs --aggregator-url (kube-apiserver, where pods are created)")?;
    let res = c.resolution.context("--churn-rate needs --resolution")?;
    if !(res > 0.0 && res.is_finite()) {
        bail!("--resolution {res}: expected a positive number of seconds");
    }
    if c.churn_pool == 0 {
        bail!("--churn-rate needs --churn-pool (the pods `kd-load churn-pool` created)");
    }
    if !(c.churn_poll > 0.0 && c.churn_poll.is_finite()) {
        bail!(
            "--churn-poll {}: expected a positive number of seconds",
            c.churn_poll
        );
    }
    let res = Duration::from_secs_f64(res);
    Ok(Some(churn::Plan {
        pods: pods::PodApi::new(client(cli, Duration::from_secs(30))?, apiserver, control)?,
        server: a.url.clone(),
        nodes: first_metric::node_names(objects)?,
        namespace: c.churn_namespace.clone(),
        rate: c.churn_rate,
        pool: c.churn_pool,
        poll: Duration::from_secs_f64(c.churn_poll),
        resolution: res,
    }))
}

async fn create(
    cli: &Cli,
    apiserver: &str,
    objects: &PathBuf,
    concurrency: usize,
) -> anyhow::Result<()> {
    let http = client(cli, Duration::from_secs(60))?;
    let mut list: Value = serde_json::from_slice(
        &std::fs::read(objects).with_context(|| format!("reading {}", objects.display()))?,
    )?;
    let Some(Value::Array(items)) = list.get_mut("items").map(Value::take) else {
        bail!("{}: no items", objects.display());
    };
    drop(list);
    let started = Instant::now();
    // One pass that moves each object out of the List and keeps only its encoded body, so the
    // parsed tree is freed item by item (copying it per kind held about 9 GB at 5,000 x 30).
    let (mut ns_reqs, mut node_reqs, mut pod_reqs, mut patches) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for mut o in items {
        match o["kind"].as_str() {
            Some("Namespace") => {
                ns_reqs.push(Req::post(format!("{apiserver}/api/v1/namespaces"), &o)?)
            }
            Some("Node") => node_reqs.push(Req::post(format!("{apiserver}/api/v1/nodes"), &o)?),
            Some("Pod") => {
                let ns = o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_owned();
                let name = o["metadata"]["name"]
                    .as_str()
                    .context("pod without name")?
                    .to_owned();
                let mut status = o
                    .as_object_mut()
                    .and_then(|m| m.remove("status"))
                    .unwrap_or_else(|| json!({}));
                status["phase"] = json!("Running");
                if status.get("conditions").is_none() {
                    status["conditions"] = json!([{"type": "Ready", "status": "True"}]);
                }
                pod_reqs.push(Req::post(
                    format!("{apiserver}/api/v1/namespaces/{ns}/pods"),
                    &o,
                )?);
                patches.push(Req {
                    url: format!("{apiserver}/api/v1/namespaces/{ns}/pods/{name}/status"),
                    body: serde_json::to_vec(&json!({"status": status}))?.into(),
                    patch: true,
                });
            }
            _ => {}
        }
    }
    // Namespaces first (pods need them); nodes and pods can then go together.
    run_all(&http, ns_reqs, concurrency).await?;
    let mut reqs = node_reqs;
    reqs.append(&mut pod_reqs);
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
    /// The encoded JSON body (bytes clone by reference count on a retry).
    body: bytes::Bytes,
    patch: bool,
}

impl Req {
    fn post(url: String, body: &Value) -> anyhow::Result<Self> {
        Ok(Req {
            url,
            body: serde_json::to_vec(body)?.into(),
            patch: false,
        })
    }
}

async fn run_all(http: &reqwest::Client, reqs: Vec<Req>, concurrency: usize) -> anyhow::Result<()> {
    use futures::StreamExt;
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(reqs)
        .map(|r| async move {
            let body = r.body;
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

async fn payload(addrs: &PathBuf, ca: &PathBuf) -> anyhow::Result<()> {
    use futures::StreamExt;
    let certs = reqwest::Certificate::from_pem_bundle(&std::fs::read(ca)?)?;
    let http = reqwest::Client::builder()
        .tls_certs_only(certs)
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()?;
    let urls = kubelet_urls(addrs)?;
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

/// `https://IP:PORT/metrics/resource` for every "IP PORT" line of `addrs`.
fn kubelet_urls(addrs: &PathBuf) -> anyhow::Result<Vec<String>> {
    Ok(std::fs::read_to_string(addrs)
        .with_context(|| format!("reading {}", addrs.display()))?
        .lines()
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            Some(format!(
                "https://{}:{}/metrics/resource",
                p.next()?,
                p.next()?
            ))
        })
        .collect())
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
