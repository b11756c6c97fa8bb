//! `get`, label-selected lists and `-A` paging through the server, one request at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rand::Rng;
use serde_json::{Value, json};

use crate::data::{BUCKETS, bucket_size, name, namespace};
use crate::{Shape, summary};

const GROUP: &str = "/apis/data.kubedojo.io/v1alpha1";

/// GETs `path`; the body and the time to its last byte (µs).
async fn timed(c: &reqwest::Client, url: &str) -> anyhow::Result<(bytes::Bytes, u64)> {
    let t = Instant::now();
    let resp = c
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let body = resp.bytes().await?;
    let us = t.elapsed().as_micros() as u64;
    if !status.is_success() {
        bail!("GET {url}: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok((body, us))
}

/// Random records by namespace and name.
pub async fn get(
    c: &reqwest::Client,
    base: &str,
    shape: Shape,
    samples: usize,
) -> anyhow::Result<Value> {
    let mut rng = rand::rng();
    let mut us = Vec::with_capacity(samples);
    for _ in 0..samples + samples / 10 {
        let (ns, j) = (
            rng.random_range(0..shape.namespaces),
            rng.random_range(0..shape.per_namespace),
        );
        let (ns, n) = (namespace(ns), name(j));
        let url = format!("{base}{GROUP}/namespaces/{ns}/datarecords/{n}");
        let (body, t) = timed(c, &url).await?;
        let v: Value = serde_json::from_slice(&body)?;
        ensure!(
            v["metadata"]["name"] == n.as_str() && v["metadata"]["namespace"] == ns.as_str(),
            "{url}: wrong record"
        );
        us.push(t);
    }
    // The first tenth warms connections and caches; not recorded.
    let us = us.split_off(samples / 10);
    Ok(json!({ "get": summary(&us) }))
}

/// Cluster-wide lists selected by `bucket=b-K` (each matches `bucket_size` records).
pub async fn labels(
    c: &reqwest::Client,
    base: &str,
    shape: Shape,
    samples: usize,
) -> anyhow::Result<Value> {
    let mut rng = rand::rng();
    let mut us = Vec::with_capacity(samples);
    let mut items = 0;
    for _ in 0..samples + samples / 10 {
        let k = rng.random_range(0..BUCKETS);
        let url = format!("{base}{GROUP}/datarecords?labelSelector=bucket%3Db-{k:04}");
        let (body, t) = timed(c, &url).await?;
        let v: Value = serde_json::from_slice(&body)?;
        let n = v["items"].as_array().map_or(0, Vec::len);
        ensure!(
            n == bucket_size(shape, k),
            "{url}: {n} items, expected {}",
            bucket_size(shape, k)
        );
        items = n;
        us.push(t);
    }
    let us = us.split_off(samples / 10);
    Ok(
        json!({ "label_selected_list": summary(&us), "items_per_list": items,
               "selector": "labelSelector=bucket=b-K (random K), all namespaces" }),
    )
}

/// Resident set size of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// One page: its keys, continue token and time.
struct PageResult {
    keys: Vec<(String, String)>,
    token: Option<String>,
    us: u64,
}

async fn page(
    c: &reqwest::Client,
    base: &str,
    limit: usize,
    token: Option<&str>,
) -> anyhow::Result<PageResult> {
    let mut url = format!("{base}{GROUP}/datarecords?limit={limit}");
    if let Some(t) = token {
        url.push_str("&continue=");
        url.push_str(&form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>());
    }
    let (body, us) = timed(c, &url).await?;
    let v: Value = serde_json::from_slice(&body)?;
    let keys = v["items"]
        .as_array()
        .context("no items")?
        .iter()
        .map(|i| {
            (
                i["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                i["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let token = v["metadata"]["continue"]
        .as_str()
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    Ok(PageResult { keys, token, us })
}

/// Full passes page by page (RSS sampled every 100 ms), then the first page and the last
/// pages again, `samples` times each.
pub async fn pages(
    c: &reqwest::Client,
    base: &str,
    shape: Shape,
    limit: usize,
    passes: usize,
    samples: usize,
    pid: u32,
) -> anyhow::Result<Value> {
    let expected = shape.namespaces as usize * shape.per_namespace as usize;
    let rss_before = rss_kib(pid).context("server process not found")?;
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let mut s = Vec::new();
            while !done.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    s.push((start.elapsed().as_secs_f64(), kib));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            s
        })
    };
    let mut all_us: Vec<u64> = Vec::new();
    let mut by_page: Vec<Vec<u64>> = Vec::new();
    let mut tokens: Vec<Option<String>> = Vec::new();
    let mut pass_seconds = Vec::new();
    for _ in 0..passes {
        let t = Instant::now();
        let mut token: Option<String> = None;
        let mut last: Option<(String, String)> = None;
        let mut count = 0;
        let mut i = 0;
        tokens.clear();
        loop {
            tokens.push(token.clone());
            let p = page(c, base, limit, token.as_deref()).await?;
            for k in &p.keys {
                ensure!(
                    last.as_ref().is_none_or(|l| l < k),
                    "keys out of order at {k:?}"
                );
                last = Some(k.clone());
            }
            count += p.keys.len();
            all_us.push(p.us);
            if by_page.len() <= i {
                by_page.push(Vec::new());
            }
            by_page[i].push(p.us);
            i += 1;
            match p.token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        ensure!(
            count == expected,
            "a full list returned {count} records, expected {expected}"
        );
        pass_seconds.push(t.elapsed().as_secs_f64());
    }
    done.store(true, Ordering::Relaxed);
    let rss = sampler.await?;
    let n_pages = by_page.len();
    // Depth profile: pages grouped in tenths of the table.
    let deciles: Vec<Value> = (0..10)
        .map(|d| {
            let from = d * n_pages / 10;
            let to = ((d + 1) * n_pages / 10).max(from + 1).min(n_pages);
            let us: Vec<u64> = by_page[from..to].iter().flatten().copied().collect();
            json!({ "pages": format!("{}-{}", from + 1, to), "latency": summary(&us) })
        })
        .collect();
    // The first page, the middle page and the last 5 pages, repeated.
    let repeat = |idx: Vec<usize>| {
        idx.into_iter()
            .map(|i| tokens[i].clone())
            .collect::<Vec<_>>()
    };
    let first = repeat(vec![0]);
    let middle = repeat(vec![n_pages / 2]);
    let end = repeat(((n_pages.saturating_sub(6))..n_pages - 1).collect());
    let mut results = serde_json::Map::new();
    for (label, toks) in [
        ("first_page", first),
        ("middle_page", middle),
        ("pages_near_end", end),
    ] {
        let mut us = Vec::with_capacity(samples);
        for s in 0..samples {
            let t = &toks[s % toks.len()];
            let p = page(c, base, limit, t.as_deref()).await?;
            ensure!(p.keys.len() == limit, "{label}: {} items", p.keys.len());
            us.push(p.us);
        }
        results.insert(label.into(), summary(&us));
    }
    let rss_values: Vec<u64> = rss.iter().map(|&(_, k)| k).collect();
    let rss_tenths: Vec<u64> = (0..10)
        .filter_map(|d| {
            let from = d * rss_values.len() / 10;
            let to = (d + 1) * rss_values.len() / 10;
            let mut w = rss_values.get(from..to)?.to_vec();
            w.sort_unstable();
            w.get(w.len() / 2).copied()
        })
        .collect();
    Ok(json!({
        "limit": limit,
        "records": expected,
        "pages_per_pass": n_pages,
        "passes": passes,
        "pass_seconds": pass_seconds,
        "every_page_of_full_passes": summary(&all_us),
        "by_depth": deciles,
        "repeated": results,
        "repeated_pages": { "first_page": "page 1", "middle_page": format!("page {}", n_pages / 2 + 1),
                            "pages_near_end": format!("pages {}-{} of {n_pages}", n_pages.saturating_sub(5), n_pages - 1) },
        "rss_kib": {
            "before": rss_before,
            "samples": rss_values.len(),
            "min": rss_values.iter().min(),
            "max": rss_values.iter().max(),
            "first": rss_values.first(),
            "last": rss_values.last(),
            "median_by_tenth_of_the_passes": rss_tenths,
            "after": rss_kib(pid),
        },
    }))
}
