//! Watches through the server while changes are committed straight to the table: the
//! delay from COMMIT to each watcher's event (fan-out), and the changes per second the
//! server's one listening connection carries (throughput).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use tokio::sync::{Mutex, Semaphore};

use crate::sql::connect;
use crate::summary;

const ALL: &str = "/apis/data.kubedojo.io/v1alpha1/datarecords";

/// The newest resourceVersion (a list of one item).
async fn current_rv(c: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let body = c
        .get(format!("{base}{ALL}?limit=1"))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let v: Value = serde_json::from_slice(&body)?;
    v["metadata"]["resourceVersion"]
        .as_str()
        .map(str::to_string)
        .context("list without resourceVersion")
}

/// Opens a cluster-wide watch from `rv`; returns once the server has answered (it has
/// subscribed to its feed before it answers).
async fn open(c: &reqwest::Client, base: &str, rv: &str) -> anyhow::Result<reqwest::Response> {
    let resp = c
        .get(format!(
            "{base}{ALL}?watch=1&resourceVersion={rv}&timeoutSeconds=900"
        ))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!(
            "watch: {}: {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    Ok(resp)
}

/// Reads a watch stream, calling `seen(marker, arrival)` for each event whose object has
/// `spec.data.bench`; stops when `seen` returns false or the stream ends.
async fn follow(
    mut resp: reqwest::Response,
    mut seen: impl FnMut(&str, Instant) -> bool,
) -> anyhow::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let at = Instant::now();
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let ev: Value = serde_json::from_slice(&line).context("watch event")?;
            ensure!(ev["type"] != "ERROR", "watch error: {ev}");
            if let Some(m) = ev["object"]["spec"]["data"]["bench"].as_str()
                && !seen(m, at)
            {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// `n` keys of the table (the first in key order).
async fn keys(
    db: &tokio_postgres::Client,
    table: &str,
    n: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    let rows = db
        .query(
            &format!("SELECT namespace, name FROM {table} ORDER BY namespace, name LIMIT $1"),
            &[&(n as i64)],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

fn set_marker(table: &str) -> String {
    format!(
        "UPDATE {table} SET data = data || jsonb_build_object('bench', $1::text) WHERE namespace = $2 AND name = $3"
    )
}

/// `watchers` watches; `changes` single-row commits, `gap` apart; every watcher's delay.
pub async fn fan_out(
    c: &reqwest::Client,
    base: &str,
    dsn: &str,
    schema: &str,
    watchers: usize,
    changes: usize,
    gap: Duration,
) -> anyhow::Result<Value> {
    let table = format!("{schema}.datarecords");
    let db = connect(dsn).await?;
    let rv = current_rv(c, base).await?;
    let opening = Instant::now();
    let gate = Arc::new(Semaphore::new(64));
    let mut opened = Vec::with_capacity(watchers);
    for _ in 0..watchers {
        let (c, base, rv, gate) = (c.clone(), base.to_string(), rv.clone(), gate.clone());
        opened.push(tokio::spawn(async move {
            let _p = gate.acquire().await?;
            open(&c, &base, &rv).await
        }));
    }
    let mut tasks = Vec::with_capacity(watchers);
    for o in opened {
        let resp = o.await??;
        tasks.push(tokio::spawn(async move {
            let mut arrivals: Vec<Option<Instant>> = vec![None; changes];
            let mut left = changes;
            let r = follow(resp, |m, at| {
                if let Some(i) = m.strip_prefix("f-").and_then(|i| i.parse::<usize>().ok())
                    && i < changes
                    && arrivals[i].is_none()
                {
                    arrivals[i] = Some(at);
                    left -= 1;
                }
                left > 0
            });
            match tokio::time::timeout(
                Duration::from_secs(60) + Duration::from_secs(1) * changes as u32,
                r,
            )
            .await
            {
                Ok(Err(e)) => eprintln!("kd-pgbench: watcher: {e}"),
                Err(_) => eprintln!("kd-pgbench: watcher timed out"),
                Ok(Ok(())) => {}
            }
            arrivals
        }));
    }
    let open_seconds = opening.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stmt = db.prepare(&set_marker(&table)).await?;
    let targets = keys(&db, &table, changes).await?;
    let mut sent = Vec::with_capacity(changes);
    let mut commit_us = Vec::with_capacity(changes);
    for (i, (ns, name)) in targets.iter().enumerate() {
        let t = Instant::now();
        let n = db.execute(&stmt, &[&format!("f-{i}"), ns, name]).await?;
        ensure!(n == 1, "update of {ns}/{name} changed {n} rows");
        commit_us.push(t.elapsed().as_micros() as u64);
        sent.push(t);
        tokio::time::sleep(gap).await;
    }
    let mut delays = Vec::with_capacity(watchers * changes);
    let mut slowest = vec![0u64; changes];
    let mut missing = 0usize;
    for t in tasks {
        for (i, a) in t.await?.into_iter().enumerate() {
            match a {
                Some(at) => {
                    let us = at.saturating_duration_since(sent[i]).as_micros() as u64;
                    delays.push(us);
                    slowest[i] = slowest[i].max(us);
                }
                None => missing += 1,
            }
        }
    }
    Ok(json!({
        "watchers": watchers,
        "changes": changes,
        "gap_ms": gap.as_millis() as u64,
        "seconds_to_open_all_watches": open_seconds,
        "events_expected": watchers * changes,
        "events_missing": missing,
        "commit_to_watcher": summary(&delays),
        "commit_to_last_watcher_per_change": summary(&slowest),
        "commit_round_trip": summary(&commit_us),
        "origin": "delay measured from sending the autocommit UPDATE (its COMMIT included) to the arrival of the event's bytes at each watcher",
    }))
}

/// Single-row commits from `writers` connections as fast as they go, then one bulk
/// transaction of `bulk` rows; one watcher counts the events.
pub async fn throughput(
    c: &reqwest::Client,
    base: &str,
    dsn: &str,
    schema: &str,
    changes: usize,
    writers: usize,
    bulk: usize,
) -> anyhow::Result<Value> {
    let table = format!("{schema}.datarecords");
    let db = connect(dsn).await?;
    let targets = keys(&db, &table, changes.max(bulk)).await?;
    let mut out = serde_json::Map::new();
    for phase in ["single", "bulk"] {
        let n = if phase == "single" { changes } else { bulk }.min(targets.len());
        let rv = current_rv(c, base).await?;
        let resp = open(c, base, &rv).await?;
        let arrivals = Arc::new(Mutex::new(Vec::with_capacity(n)));
        let prefix = format!("{phase}-");
        let watcher = {
            let arrivals = arrivals.clone();
            tokio::spawn(async move {
                let mut seen = 0;
                let mut last = None;
                let r = follow(resp, |m, at| {
                    if m.starts_with(&prefix) {
                        seen += 1;
                        last = Some(at);
                    }
                    seen < n
                });
                let r = tokio::time::timeout(Duration::from_secs(300), r).await;
                arrivals.lock().await.push(last);
                (seen, r.is_ok())
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t0 = Instant::now();
        let commits_done;
        if phase == "single" {
            let mut ws = Vec::new();
            for w in 0..writers {
                let (dsn, table) = (dsn.to_string(), table.clone());
                let mine: Vec<(usize, (String, String))> = targets
                    .iter()
                    .take(n)
                    .cloned()
                    .enumerate()
                    .filter(|(i, _)| i % writers == w)
                    .collect();
                ws.push(tokio::spawn(async move {
                    let db = connect(&dsn).await?;
                    let stmt = db.prepare(&set_marker(&table)).await?;
                    for (i, (ns, name)) in mine {
                        db.execute(&stmt, &[&format!("single-{i}"), &ns, &name])
                            .await?;
                    }
                    Ok::<_, anyhow::Error>(())
                }));
            }
            for w in ws {
                w.await??;
            }
            commits_done = t0.elapsed();
        } else {
            let (first, last) = (&targets[0], &targets[n - 1]);
            let m = db
                .execute(
                    &format!(
                        "UPDATE {table} SET data = data || jsonb_build_object('bench', 'bulk-' || name) \
                         WHERE (namespace, name) >= ($1, $2) AND (namespace, name) <= ($3, $4)"
                    ),
                    &[&first.0, &first.1, &last.0, &last.1],
                )
                .await?;
            ensure!(
                m as usize == n,
                "bulk update changed {m} rows, expected {n}"
            );
            commits_done = t0.elapsed();
        }
        let (seen, in_time) = watcher.await?;
        let last = arrivals.lock().await.first().copied().flatten();
        let delivered = last.map(|l| l.saturating_duration_since(t0));
        out.insert(
            phase.into(),
            json!({
                "changes": n,
                "writers": if phase == "single" { writers } else { 1 },
                "events_seen": seen,
                "complete": in_time && seen == n,
                "commit_seconds": commits_done.as_secs_f64(),
                "commits_per_second": n as f64 / commits_done.as_secs_f64(),
                "all_delivered_seconds": delivered.map(|d| d.as_secs_f64()),
                "delivered_per_second": delivered.map(|d| n as f64 / d.as_secs_f64()),
                "last_event_after_last_commit_ms": delivered.map(|d| d.saturating_sub(commits_done).as_secs_f64() * 1000.0),
            }),
        );
    }
    Ok(Value::Object(out))
}
