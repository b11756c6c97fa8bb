//! Keyset versus OFFSET paging straight on the table, the same columns our server reads
//! (`to_jsonb(d)`), at the start, the middle and the end of the table.

use std::time::Instant;

use anyhow::Context;
use serde_json::{Value, json};
use tokio_postgres::NoTls;

use crate::summary;

/// Connects (the connection task runs in the background).
pub async fn connect(dsn: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(dsn, NoTls)
        .await
        .context("connecting")?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("kd-pgbench: connection: {e}");
        }
    });
    Ok(client)
}

/// Times both methods at three depths; with the plans of the deepest page.
pub async fn paging(
    dsn: &str,
    schema: &str,
    limit: i64,
    samples: usize,
    offset_budget: std::time::Duration,
) -> anyhow::Result<Value> {
    let c = connect(dsn).await?;
    let t = format!("{schema}.datarecords");
    let n: i64 = c
        .query_one(&format!("SELECT count(*) FROM {t}"), &[])
        .await?
        .get(0);
    let keyset = c
        .prepare(&format!(
            "SELECT namespace, name, to_jsonb(d) FROM {t} d WHERE (namespace, name) > ($1, $2) ORDER BY namespace, name LIMIT $3"
        ))
        .await?;
    let offset = c
        .prepare(&format!(
            "SELECT namespace, name, to_jsonb(d) FROM {t} d ORDER BY namespace, name LIMIT $1 OFFSET $2"
        ))
        .await?;
    let mut out = serde_json::Map::new();
    for (label, depth) in [("start", 1i64), ("middle", n / 2), ("end", n - limit)] {
        // The key just before `depth` (keyset resumes after it).
        let row = c
            .query_one(
                &format!(
                    "SELECT namespace, name FROM {t} ORDER BY namespace, name OFFSET $1 LIMIT 1"
                ),
                &[&(depth - 1)],
            )
            .await?;
        let (ns, name): (String, String) = (row.get(0), row.get(1));
        let mut ks = Vec::with_capacity(samples);
        let mut os = Vec::with_capacity(samples);
        let started = Instant::now();
        for i in 0..samples + 10 {
            let t0 = Instant::now();
            let a = c.query(&keyset, &[&ns, &name, &limit]).await?;
            let t1 = Instant::now();
            if i >= 10 {
                ks.push((t1 - t0).as_micros() as u64);
            }
            // OFFSET within its time budget (a deep OFFSET page takes seconds).
            if started.elapsed() < offset_budget || os.len() < 20 {
                let b = c.query(&offset, &[&limit, &depth]).await?;
                let t2 = Instant::now();
                anyhow::ensure!(
                    a.len() == b.len()
                        && a.first().map(|r| r.get::<_, String>(1))
                            == b.first().map(|r| r.get::<_, String>(1)),
                    "keyset and OFFSET pages differ at {depth}"
                );
                if i >= 10 || depth > 100_000 {
                    os.push((t2 - t1).as_micros() as u64);
                }
            }
        }
        let plan = |sql: String| {
            let c = &c;
            async move {
                let rows = c.query(&sql, &[]).await?;
                Ok::<_, anyhow::Error>(
                    rows.iter()
                        .map(|r| r.get::<_, String>(0))
                        .collect::<Vec<_>>(),
                )
            }
        };
        let kplan = plan(format!(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT namespace, name, to_jsonb(d) FROM {t} d WHERE (namespace, name) > ('{ns}', '{name}') ORDER BY namespace, name LIMIT {limit}"
        ))
        .await?;
        let oplan = plan(format!(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT namespace, name, to_jsonb(d) FROM {t} d ORDER BY namespace, name LIMIT {limit} OFFSET {depth}"
        ))
        .await?;
        out.insert(
            label.into(),
            json!({ "rows_skipped": depth, "keyset": summary(&ks), "offset": summary(&os),
                    "keyset_plan": kplan, "offset_plan": oplan }),
        );
    }
    Ok(
        json!({ "rows": n, "limit": limit, "method": format!("tokio-postgres prepared statements, one at a time, alternating keyset and OFFSET; OFFSET sampled for at most {} s per position (at least 20 samples)", offset_budget.as_secs()), "depths": out }),
    )
}
