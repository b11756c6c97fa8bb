//! The floor of the scrape job (issue #15 §5): fetch every kubelet's `/metrics/resource` over
//! persistent TLS connections (one kept-alive connection per node, `concurrency` at a time, as
//! our server's `--kubelet-max-concurrency` default) and decode every sample's value into one
//! flat `Vec<f64>`, nothing else: no names, no labels, no store, no API. What this costs in CPU
//! per cycle and in resident bytes per node is the least any server doing the job pays.
//!
//! Two clients: `reqwest` (what our scraper uses: pooled hyper-util connections, hyper's
//! default adaptive read buffer of up to ~400 KB) and `lean` (an experiment for issue #15 §4:
//! one hyper HTTP/1.1 connection per kubelet over tokio-rustls, kept between cycles, with
//! hyper's read buffer capped at `--max-buf` bytes).

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

/// Runs `cycles` measured cycles after one warm-up cycle (the TLS handshakes); prints JSON.
pub async fn run(
    urls: Vec<String>,
    ca: &std::path::Path,
    cycles: usize,
    concurrency: usize,
    lean_max_buf: Option<usize>,
) -> anyhow::Result<Value> {
    let rss_start = rss_kib();
    let fetcher = match lean_max_buf {
        None => {
            let certs = reqwest::Certificate::from_pem_bundle(&std::fs::read(ca)?)?;
            Fetcher::Reqwest(
                reqwest::Client::builder()
                    .tls_certs_only(certs)
                    .timeout(Duration::from_secs(30))
                    .pool_max_idle_per_host(1)
                    .pool_idle_timeout(Duration::from_secs(300))
                    .no_proxy()
                    .build()?,
            )
        }
        Some(max_buf) => Fetcher::Lean(std::sync::Arc::new(lean::Client::new(
            ca,
            max_buf,
            urls.len(),
        )?)),
    };
    let mut values: Vec<f64> = Vec::new();
    let mut cpu = Vec::new();
    let mut wall = Vec::new();
    for cycle in 0..=cycles {
        let c0 = cpu_seconds();
        let t0 = Instant::now();
        values.clear();
        let mut bodies = futures::stream::iter(urls.iter().cloned().enumerate())
            .map(|(i, u)| fetcher.get(i, u))
            .buffer_unordered(concurrency.max(1));
        while let Some(body) = bodies.next().await {
            decode(&body?, &mut values);
        }
        if cycle > 0 {
            cpu.push(cpu_seconds() - c0);
            wall.push(t0.elapsed().as_secs_f64());
        }
    }
    let rss_end = rss_kib();
    let nodes = urls.len().max(1);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    Ok(json!({
        "nodes": urls.len(),
        "cycles": cycles,
        "concurrency": concurrency,
        "client": match lean_max_buf {
            None => "reqwest".to_owned(),
            Some(b) => format!("lean (hyper http1, max_buf_size {b})"),
        },
        "values_per_cycle": values.len(),
        "cpu_seconds_per_cycle_median": median(&mut cpu),
        "cpu_seconds_per_cycle": cpu,
        "wall_seconds_per_cycle_median": median(&mut wall),
        "rss_kib_start": rss_start,
        "rss_kib_end": rss_end,
        "rss_bytes_per_node": (rss_end.saturating_sub(rss_start) * 1024) as f64 / nodes as f64,
    }))
}

enum Fetcher {
    Reqwest(reqwest::Client),
    Lean(std::sync::Arc<lean::Client>),
}

impl Fetcher {
    fn get(
        &self,
        node: usize,
        url: String,
    ) -> impl std::future::Future<Output = anyhow::Result<bytes::Bytes>> + use<> {
        let this = match self {
            Fetcher::Reqwest(c) => Fetcher::Reqwest(c.clone()),
            Fetcher::Lean(c) => Fetcher::Lean(c.clone()),
        };
        async move {
            match this {
                Fetcher::Reqwest(http) => Ok(http
                    .get(&url)
                    .send()
                    .await?
                    .error_for_status()?
                    .bytes()
                    .await?),
                Fetcher::Lean(c) => c.get(node, &url).await,
            }
        }
    }
}

/// One kept-alive HTTP/1.1 connection per kubelet with a small read buffer.
mod lean {
    use std::sync::Arc;

    use anyhow::Context;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper::client::conn::http1::{self, SendRequest};
    use hyper_util::rt::TokioIo;

    /// The per-node connections.
    pub struct Client {
        tls: tokio_rustls::TlsConnector,
        max_buf: usize,
        conns: Vec<tokio::sync::Mutex<Option<SendRequest<Empty<Bytes>>>>>,
    }

    impl Client {
        pub fn new(ca: &std::path::Path, max_buf: usize, nodes: usize) -> anyhow::Result<Self> {
            let mut roots = rustls::RootCertStore::empty();
            let pem = std::fs::read(ca)?;
            for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
                let cert: rustls_pki_types::CertificateDer<'static> = cert?;
                roots.add(cert)?;
            }
            let config = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Self {
                tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
                max_buf: max_buf.max(8192),
                conns: (0..nodes).map(|_| tokio::sync::Mutex::new(None)).collect(),
            })
        }

        pub async fn get(&self, node: usize, url: &str) -> anyhow::Result<Bytes> {
            let uri: http::Uri = url.parse()?;
            let mut slot = self.conns[node].lock().await;
            let reusable = slot.as_ref().is_some_and(|s| !s.is_closed());
            if !reusable {
                let host = uri.host().context("no host")?.to_owned();
                let port = uri.port_u16().unwrap_or(443);
                let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                let name = rustls_pki_types::ServerName::try_from(host)?;
                let tls = self.tls.connect(name, tcp).await?;
                let (send, conn) = http1::Builder::new()
                    .max_buf_size(self.max_buf)
                    .handshake(TokioIo::new(tls))
                    .await?;
                tokio::spawn(conn);
                *slot = Some(send);
            }
            let send = slot.as_mut().context("connection")?;
            send.ready().await?;
            let req = http::Request::get(uri.path())
                .header(
                    http::header::HOST,
                    uri.authority().map_or("", |a| a.as_str()),
                )
                .body(Empty::new())?;
            let resp = send.send_request(req).await?;
            anyhow::ensure!(resp.status().is_success(), "status {}", resp.status());
            Ok(resp.into_body().collect().await?.to_bytes())
        }
    }
}

/// Appends the value of every sample line (`name{labels} value [timestamp]`) to `out`.
fn decode(body: &[u8], out: &mut Vec<f64>) {
    for line in body.split(|&b| b == b'\n') {
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        // The value follows the last '}' (or the name) and precedes an optional timestamp.
        let rest = match memchr::memrchr(b'}', line) {
            Some(i) => &line[i + 1..],
            None => line,
        };
        let mut fields = rest
            .split(|&b| b == b' ')
            .filter(|f| !f.is_empty())
            .skip(usize::from(memchr::memrchr(b'}', line).is_none()));
        if let Some(v) = fields
            .next()
            .and_then(|f| std::str::from_utf8(f).ok())
            .and_then(|s| s.parse::<f64>().ok())
        {
            out.push(v);
        }
    }
}

/// This process's CPU time (utime + stime, as getrusage's RUSAGE_SELF) in seconds.
pub(crate) fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name in parentheses: utime is the 14th, stime the 15th field.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // `after` starts at field 3 (state): utime = field 14 → index 11.
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux architecture this runs on.
    100.0
}

fn rss_kib() -> u64 {
    status_kib("VmRSS")
}

/// A kB field of /proc/self/status (`VmRSS`, `VmHWM`), 0 when unreadable.
pub(crate) fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn decodes_every_sample_value() {
        let body = b"# HELP x\n# TYPE x counter\nnode_cpu_usage_seconds_total 12.5 1700000000000\n\
container_memory_working_set_bytes{container=\"a b\",namespace=\"n\",pod=\"p\"} 4096 1700000000000\n\
scrape_error 0\n";
        let mut out = Vec::new();
        super::decode(body, &mut out);
        assert_eq!(out, [12.5, 4096.0, 0.0]);
        assert!(super::cpu_seconds() >= 0.0);
        assert!(super::rss_kib() > 0);
    }
}
