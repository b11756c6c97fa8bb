//! `kd-load watchers`: N concurrent watches on pods.metrics.k8s.io, every one resumed from the
//! resourceVersion of ONE list (so the server sends no initial lists), over HTTP/2 (a few
//! connections carrying many streams, as kube-apiserver's aggregator proxies) or HTTP/1.1
//! (one connection per watch). Every event is accounted per watcher as it arrives
//! ([`crate::tally`]); bodies are never kept. After `ticks` checked ticks (plus the one each
//! watch resumes into) it stops and reports per tick: events per watcher, bytes, how long the
//! tick took to reach every watcher, kd-load's own CPU; and every error (a short or missed tick,
//! an ERROR event such as 410, a watch cut off or refused).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::tally::{Pods, Tally, Verdict, check};

/// HTTP version of the watch connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Http {
    /// HTTP/2 (ALPN h2), `connections` connections, watches spread round robin.
    H2,
    /// HTTP/1.1, one connection per watch.
    H1,
}

/// What to run.
pub struct Plan {
    /// Server base URL.
    pub url: String,
    /// Concurrent watches.
    pub watchers: usize,
    /// Watch one namespace instead of all.
    pub namespace: Option<String>,
    /// `labelSelector` of the list and every watch.
    pub label_selector: Option<String>,
    /// HTTP version.
    pub http: Http,
    /// HTTP/2 connections (ignored for HTTP/1.1).
    pub connections: usize,
    /// Checked ticks.
    pub ticks: usize,
    /// After the first watcher finished the last checked tick, how long the others get.
    pub grace: Duration,
    /// Give up (everything not finished is an error) after this long.
    pub timeout: Duration,
    /// How long the list's resourceVersion must stay unchanged before the list is taken.
    pub quiet: Duration,
    /// Expected pods (checked against the list when given).
    pub expect: Option<usize>,
}

/// Builds one client; the caller's builder carries the identity.
pub type ClientFactory<'a> = &'a dyn Fn(Http) -> anyhow::Result<reqwest::Client>;

#[derive(Deserialize)]
struct List {
    metadata: ListMeta,
    items: Vec<Item>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    resource_version: String,
}

#[derive(Deserialize)]
struct Item {
    metadata: ItemMeta,
}

#[derive(Deserialize)]
struct ItemMeta {
    name: String,
    #[serde(default)]
    namespace: String,
}

fn query(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

async fn get_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> anyhow::Result<T> {
    let resp = client
        .get(url)
        .header("Accept", "application/json")
        .send()
        .await?;
    let status = resp.status();
    let body = resp.bytes().await?;
    if !status.is_success() {
        bail!("{status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(serde_json::from_slice(&body)?)
}

/// Polls the one-item list `probe` until its resourceVersion stayed the same for `quiet`;
/// that version, or `None` at `deadline`.
async fn wait_quiet(
    client: &reqwest::Client,
    probe: &str,
    quiet: Duration,
    deadline: Instant,
) -> anyhow::Result<Option<String>> {
    #[derive(Deserialize)]
    struct Head {
        metadata: ListMeta,
    }
    let mut last: Option<(String, Instant)> = None;
    while Instant::now() < deadline {
        let h: Head = get_json(client, probe).await.context("list probe")?;
        let rv = h.metadata.resource_version;
        match &last {
            Some((prev, since)) if *prev == rv => {
                if since.elapsed() >= quiet {
                    return Ok(Some(rv));
                }
            }
            _ => last = Some((rv, Instant::now())),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(None)
}

fn cpu_seconds() -> f64 {
    crate::floor::cpu_seconds()
}

/// Runs the plan; the JSON report.
pub async fn run(plan: Plan, clients: ClientFactory<'_>) -> anyhow::Result<Value> {
    let base = match &plan.namespace {
        Some(ns) => format!(
            "{}/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods",
            plan.url
        ),
        None => format!("{}/apis/metrics.k8s.io/v1beta1/pods", plan.url),
    };
    let sel = plan.label_selector.as_deref();
    let mut list_q = vec![];
    if let Some(s) = sel {
        list_q.push(("labelSelector", s));
    }
    let lister = clients(Http::H1)?;
    let list_url = if list_q.is_empty() {
        base.clone()
    } else {
        format!("{base}?{}", query(&list_q))
    };
    // Resume from a list taken between two scrapes: the store publishes every second during a
    // scrape, so a resourceVersion unchanged for `quiet` means the scrape is over.
    let probe = format!("{base}?{}", query(&[("limit", "1")]));
    let mut aligned = false;
    let mut list = None;
    let mut list_s = 0.0;
    let align_deadline = Instant::now() + plan.quiet * 20;
    while list.is_none() || (!aligned && Instant::now() < align_deadline) {
        let quiet_rv = wait_quiet(&lister, &probe, plan.quiet, align_deadline).await?;
        let t0 = Instant::now();
        let l: List = get_json(&lister, &list_url).await.context("list")?;
        list_s = t0.elapsed().as_secs_f64();
        aligned = quiet_rv.as_deref() == Some(l.metadata.resource_version.as_str());
        list = Some(l);
    }
    let list = list.expect("listed at least once");
    let pods =
        Arc::new(Pods::new(list.items.iter().map(|i| {
            (i.metadata.namespace.as_str(), i.metadata.name.as_str())
        })));
    let rv = list.metadata.resource_version;
    drop(list.items);
    if let Some(e) = plan.expect
        && e != pods.len()
    {
        bail!("the list has {} pods, expected {e}", pods.len());
    }
    if pods.len() == 0 {
        bail!("the list is empty: nothing to watch");
    }
    let timeout_s = plan.timeout.as_secs().max(1).to_string();
    let mut watch_q = vec![
        ("watch", "true"),
        ("resourceVersion", rv.as_str()),
        ("timeoutSeconds", timeout_s.as_str()),
    ];
    if let Some(s) = sel {
        watch_q.push(("labelSelector", s));
    }
    let watch_url = format!("{base}?{}", query(&watch_q));

    let conns = match plan.http {
        Http::H2 => plan.connections.clamp(1, plan.watchers.max(1)),
        Http::H1 => 1,
    };
    let pool: Vec<reqwest::Client> = (0..conns)
        .map(|_| clients(plan.http))
        .collect::<anyhow::Result<_>>()?;
    let tallies: Vec<Arc<Mutex<Tally>>> = (0..plan.watchers)
        .map(|_| Arc::new(Mutex::new(Tally::new(&pods))))
        .collect();
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let tasks: Vec<_> = tallies
        .iter()
        .enumerate()
        .map(|(i, tally)| {
            let client = pool[i % pool.len()].clone();
            tokio::spawn(watch(
                client,
                watch_url.clone(),
                pods.clone(),
                tally.clone(),
            ))
        })
        .collect();

    // Follow progress: CPU is sampled when the fastest watcher closes each tick.
    let want = plan.ticks + 1;
    let mut cpu_at: Vec<(f64, Instant)> = Vec::new();
    let mut all_done_at = None;
    let mut first_done: Option<Instant> = None;
    let lock = |t: &Arc<Mutex<Tally>>| {
        let g = t.lock().unwrap_or_else(|e| e.into_inner());
        (g.ticks.len(), g.ended.is_some())
    };
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let states: Vec<(usize, bool)> = tallies.iter().map(lock).collect();
        let best = states.iter().map(|s| s.0).max().unwrap_or(0);
        while cpu_at.len() < best.min(want) {
            cpu_at.push((cpu_seconds(), Instant::now()));
        }
        if best >= want && first_done.is_none() {
            first_done = Some(Instant::now());
        }
        if states.iter().all(|&(n, ended)| n >= want || ended) {
            all_done_at = Some(Instant::now());
            break;
        }
        if first_done.is_some_and(|t| t.elapsed() >= plan.grace)
            || started.elapsed() >= plan.timeout
        {
            break;
        }
    }
    let cpu1 = cpu_seconds();
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    let tallies: Vec<Tally> = tallies
        .into_iter()
        .map(|t| match Arc::try_unwrap(t) {
            Ok(m) => m.into_inner().unwrap_or_else(|e| e.into_inner()),
            Err(a) => std::mem::replace(
                &mut *a.lock().unwrap_or_else(|e| e.into_inner()),
                Tally::new(&pods),
            ),
        })
        .collect();
    let mut r = report(&tallies, pods.len(), plan.ticks, &cpu_at);
    r["watchers"] = json!(plan.watchers);
    r["http"] = json!(match plan.http {
        Http::H2 => "h2",
        Http::H1 => "h1",
    });
    r["connections"] = json!(match plan.http {
        Http::H2 => conns,
        Http::H1 => plan.watchers,
    });
    r["namespace"] = json!(plan.namespace);
    r["label_selector"] = json!(plan.label_selector);
    r["list_resource_version"] = json!(rv);
    r["list_seconds"] = json!(list_s);
    r["resumed_between_scrapes"] = json!(aligned);
    r["run_seconds"] = json!(started.elapsed().as_secs_f64());
    r["all_finished"] = json!(all_done_at.is_some());
    r["kd_load_cpu_seconds_total"] = json!(cpu1 - cpu0);
    r["kd_load_rss_peak_mib"] = json!(crate::floor::status_kib("VmHWM") as f64 / 1024.0);
    Ok(r)
}

/// One watch: opens it, accounts every chunk, records why it ended.
async fn watch(client: reqwest::Client, url: String, pods: Arc<Pods>, tally: Arc<Mutex<Tally>>) {
    let end = |why: String| tally.lock().unwrap_or_else(|e| e.into_inner()).finish(&why);
    let mut resp = match client
        .get(&url)
        .header("Accept", "application/json")
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            let s = r.status();
            let b = r.bytes().await.unwrap_or_default();
            let b = String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned();
            return end(format!("refused: {s}: {b}"));
        }
        Err(e) => return end(format!("refused: {e:#}")),
    };
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
                if t.feed(&pods, &c, Instant::now()).is_err() {
                    return;
                }
            }
            Ok(None) => return end("cut off: the server ended the watch".into()),
            Err(e) => return end(format!("cut off: {e:#}")),
        }
    }
}

fn median(v: &mut [f64]) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| v[v.len() / 2])
}

/// The report of `tallies` for `ticks` checked ticks over `pods` pods; `cpu_at[k]` is
/// kd-load's CPU and the time when the fastest watcher closed tick k.
pub fn report(tallies: &[Tally], pods: usize, ticks: usize, cpu_at: &[(f64, Instant)]) -> Value {
    let verdicts: Vec<Vec<Verdict>> = tallies.iter().map(|t| check(t, pods, ticks)).collect();
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    let mut examples: Vec<String> = Vec::new();
    let mut note = |reason: &str, example: String| {
        *by_reason.entry(reason.to_string()).or_default() += 1;
        if examples.len() < 10 {
            examples.push(example);
        }
    };
    let mut per_tick = Vec::new();
    for k in 1..=ticks {
        let mut events: Vec<f64> = Vec::new();
        let (mut bytes, mut complete, mut errors) = (0u64, 0usize, 0usize);
        let (mut first, mut last): (Option<Instant>, Option<Instant>) = (None, None);
        for (w, t) in tallies.iter().enumerate() {
            match &verdicts[w][k - 1] {
                Verdict::Complete => complete += 1,
                Verdict::Wrong(n) => {
                    errors += 1;
                    note(
                        "wrong event count",
                        format!("watcher {w} tick {k}: {n} events, {pods} pods"),
                    );
                }
                Verdict::Missed => {
                    errors += 1;
                    note(
                        "missed tick",
                        format!(
                            "watcher {w} tick {k}: not received ({})",
                            t.ended.as_deref().unwrap_or("behind when kd-load stopped")
                        ),
                    );
                }
            }
            if let Some(s) = t.ticks.get(k) {
                events.push(f64::from(s.events));
                bytes += s.bytes;
                first = Some(first.map_or(s.first, |f| f.min(s.first)));
                last = Some(last.map_or(s.last, |l| l.max(s.last)));
            }
        }
        let received = events.len();
        let (min, max) = (
            events.iter().copied().reduce(f64::min),
            events.iter().copied().reduce(f64::max),
        );
        let cpu = match (cpu_at.get(k), cpu_at.get(k - 1)) {
            (Some(b), Some(a)) => Some(b.0 - a.0),
            _ => None,
        };
        per_tick.push(json!({
            "tick": k,
            "complete": complete,
            "errors": errors,
            "events_per_watcher_min": min,
            "events_per_watcher_median": median(&mut events),
            "events_per_watcher_max": max,
            "bytes": bytes,
            "bytes_per_watcher": if received > 0 { Some(bytes / received as u64) } else { None },
            "delivery_seconds": first.zip(last).map(|(f, l)| l.duration_since(f).as_secs_f64()),
            "kd_load_cpu_seconds": cpu,
        }));
    }
    for (w, t) in tallies.iter().enumerate() {
        if let Some(e) = &t.ended {
            let reason = e.split(':').next().unwrap_or(e).to_string();
            note(&reason, format!("watcher {w}: {e}"));
        }
        if t.unknown > 0 {
            note(
                "unknown pod",
                format!(
                    "watcher {w}: {} events for pods not in the list (e.g. {})",
                    t.unknown,
                    t.unknown_example.as_deref().unwrap_or("?")
                ),
            );
        }
    }
    let cpu_per_tick = match (cpu_at.first(), cpu_at.get(ticks)) {
        (Some(a), Some(b)) if ticks > 0 => Some((b.0 - a.0) / ticks as f64),
        _ => None,
    };
    let window = match (cpu_at.first(), cpu_at.get(ticks)) {
        (Some(a), Some(b)) => Some(b.1.duration_since(a.1).as_secs_f64()),
        _ => None,
    };
    let errors: u64 = by_reason.values().sum();
    json!({
        "pods": pods,
        "ticks_checked": ticks,
        "errors": errors,
        "errors_by_reason": by_reason,
        "error_examples": examples,
        "kd_load_cpu_seconds_per_tick": cpu_per_tick,
        "kd_load_cpu_cores": cpu_per_tick.zip(window).map(|(c, w)| c * ticks as f64 / w),
        "bytes_received": tallies.iter().map(|t| t.bytes).sum::<u64>(),
        "per_tick": per_tick,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(ns: &str, name: &str) -> String {
        format!(
            r#"{{"type":"MODIFIED","object":{{"kind":"PodMetrics","metadata":{{"name":"{name}","namespace":"{ns}"}},"containers":[]}}}}"#
        ) + "\n"
    }

    #[test]
    fn a_tick_missed_by_one_watcher_is_an_error() {
        let pods = Pods::new([("n", "a"), ("n", "b")]);
        let tick = || line("n", "a") + &line("n", "b");
        // Ticks 0..=3 and the first event of tick 4 (which closes tick 3).
        let full = [tick(), tick(), tick(), tick(), line("n", "a")].concat();
        // The same stream without tick 2.
        let gap = [tick(), tick(), tick(), line("n", "a")].concat();
        let now = Instant::now();
        let feed = |body: &str| {
            let mut t = Tally::new(&pods);
            t.feed(&pods, body.as_bytes(), now).unwrap();
            t
        };
        let tallies = [feed(&full), feed(&gap), feed(&full)];
        let cpu: Vec<(f64, Instant)> = (0..4).map(|k| (k as f64, now)).collect();
        let r = report(&tallies, 2, 3, &cpu);
        assert_eq!(r["errors"], 1, "{r:#}");
        assert_eq!(r["errors_by_reason"]["missed tick"], 1);
        assert_eq!(r["per_tick"][2]["errors"], 1);
        assert_eq!(r["per_tick"][2]["complete"], 2);
        assert_eq!(r["per_tick"][0]["errors"], 0);
        assert_eq!(r["per_tick"][0]["events_per_watcher_median"], 2.0);
        assert_eq!(r["per_tick"][0]["bytes"], 3 * tick().len());
        assert_eq!(r["kd_load_cpu_seconds_per_tick"], 1.0);
        // Without the gap, no error at all.
        let r = report(&[feed(&full), feed(&full)], 2, 3, &cpu);
        assert_eq!(r["errors"], 0, "{r:#}");
        // A watch that ended with an ERROR event is an error of its own, beside its ticks.
        let mut t = feed(&full);
        t.finish("ERROR event: 410");
        let r = report(&[t], 2, 3, &cpu);
        assert_eq!(r["errors_by_reason"]["ERROR event"], 1, "{r:#}");
    }
}
