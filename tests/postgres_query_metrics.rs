//! The `postgresQuery` source's self-metrics, scraped from `/metrics` of the real binary
//! (`kubedojo-data-api demo --sources-config`) against a real PostgreSQL server: per
//! record successes, failures by reason (sql, timeout, shape, unavailable), the query
//! duration histogram, cache hits and misses and the last success time move as the
//! queries succeed and fail.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::postgres::TestPostgres;

const TOKEN: &str = "kd-metrics-test-token";

struct Demo {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Demo {
    fn start(config: &std::path::Path, kubeconfig: &std::path::Path) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kubedojo-data-api"))
            .args([
                "demo",
                "--secure-port",
                "0",
                "--nodes",
                "1",
                "--pods-per-node",
                "1",
            ])
            .args(["--token", TOKEN])
            .arg("--sources-config")
            .arg(config)
            .arg("--write-kubeconfig")
            .arg(kubeconfig)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the demo");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let first = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the demo printed nothing within 60s");
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("https://127.0.0.1:"))
            .unwrap_or_else(|| panic!("no URL in {first:?}"))
            .trim_end_matches([',', '.', ';'])
            .to_string();
        common::crypto();
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        Demo { child, url, http }
    }

    async fn text(&self, path: &str) -> (u16, String) {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// `/metrics`, as samples `name{labels}` → value (labels sorted, `le` included).
    async fn metrics(&self) -> HashMap<String, f64> {
        let (code, text) = self.text("/metrics").await;
        assert_eq!(code, 200, "{text}");
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        scrape
            .samples
            .into_iter()
            .map(|s| {
                let mut labels: Vec<_> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let value = match s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => v,
                    prometheus_parse::Value::Histogram(h) => {
                        labels.push("le=+Inf".into());
                        h.last().map_or(0.0, |b| b.count)
                    }
                    prometheus_parse::Value::Summary(_) => 0.0,
                };
                labels.sort();
                (format!("{}{{{}}}", s.metric, labels.join(",")), value)
            })
            .collect()
    }
}

fn key(metric: &str, name: &str, extra: &[&str]) -> String {
    let mut labels = vec![format!("name={name}"), "namespace=default".to_string()];
    labels.extend(extra.iter().map(|s| s.to_string()));
    labels.sort();
    format!("{metric}{{{}}}", labels.join(","))
}

fn get(m: &HashMap<String, f64>, metric: &str, name: &str, extra: &[&str]) -> f64 {
    m.get(&key(metric, name, extra)).copied().unwrap_or(0.0)
}

/// Scrapes until `ok` holds (or panics with the last scrape's query series).
async fn until(
    demo: &Demo,
    what: &str,
    ok: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = demo.metrics().await;
        if ok(&m) {
            return m;
        }
        if Instant::now() > deadline {
            let mut series: Vec<_> = m
                .iter()
                .filter(|(k, _)| k.starts_with("kubedojo_datarecord_query"))
                .collect();
            series.sort_by(|a, b| a.0.cmp(b.0));
            panic!("{what}: {series:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const S: &str = "kubedojo_datarecord_query_successes_total";
const F: &str = "kubedojo_datarecord_query_failures_total";
const HITS: &str = "kubedojo_datarecord_query_cache_hits_total";
const MISSES: &str = "kubedojo_datarecord_query_cache_misses_total";
const DURATION: &str = "kubedojo_datarecord_query_duration_seconds";
const LAST: &str = "kubedojo_datarecord_query_last_success_timestamp_seconds";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_metrics_move_as_queries_succeed_and_fail() {
    let mut pg = TestPostgres::start();
    pg.psql("CREATE TABLE kv (k text, v text); INSERT INTO kv VALUES ('a', '1');");
    let dir = tempfile::tempdir().unwrap();
    let dsn_file = dir.path().join("dsn");
    std::fs::write(&dsn_file, pg.dsn()).unwrap();
    let config = dir.path().join("sources.yaml");
    std::fs::write(
        &config,
        format!(
            r#"connections:
  - name: main
    dsnFrom: {{file: {dsn}}}
    connectTimeout: 1s
    statementTimeout: 2s
sources:
  - kind: postgresQuery
    connection: main
    records:
      - {{name: m-good, query: "SELECT k, v FROM kv", ttl: 1h}}
      - {{name: m-broken, query: "SELECT k, v FROM later", ttl: 300ms}}
      - {{name: m-slow, query: "SELECT 'k', pg_sleep(3)::text", timeout: 200ms, ttl: 300ms}}
      - {{name: m-shape, query: "SELECT 1, 2, 3", ttl: 300ms}}
"#,
            dsn = dsn_file.display()
        ),
    )
    .unwrap();
    let demo = Demo::start(&config, &dir.path().join("kubeconfig"));

    // The set reloads the source every 150 ms: the good record comes from the cache,
    // the others fail for their own reasons again and again.
    let m = until(&demo, "every record counted", |m| {
        get(m, HITS, "m-good", &[]) >= 3.0
            && get(m, F, "m-broken", &["reason=sql"]) >= 2.0
            && get(m, F, "m-slow", &["reason=timeout"]) >= 2.0
            && get(m, F, "m-shape", &["reason=shape"]) >= 2.0
    })
    .await;
    assert_eq!(
        get(&m, S, "m-good", &[]),
        1.0,
        "one query within its 1h TTL"
    );
    assert_eq!(get(&m, MISSES, "m-good", &[]), 1.0);
    assert_eq!(get(&m, F, "m-good", &["reason=sql"]), 0.0);
    assert_eq!(get(&m, S, "m-broken", &[]), 0.0);
    assert_eq!(get(&m, LAST, "m-broken", &[]), 0.0, "never succeeded");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last_good = get(&m, LAST, "m-good", &[]);
    assert!((now - last_good).abs() < 120.0, "{last_good} vs {now}");
    // Every miss ran one query: one duration sample each.
    for name in ["m-good", "m-broken", "m-slow", "m-shape"] {
        let misses = get(&m, MISSES, name, &[]);
        let runs = get(&m, &format!("{DURATION}_count"), name, &[]);
        let outcomes = get(&m, S, name, &[])
            + ["sql", "timeout", "shape", "unavailable"]
                .iter()
                .map(|r| get(&m, F, name, &[&format!("reason={r}")]))
                .sum::<f64>();
        // A scrape may fall between a miss and its outcome.
        assert!(
            misses - outcomes <= 1.0 && outcomes <= misses,
            "{name}: {misses} misses, {outcomes} outcomes"
        );
        assert!(
            (runs - outcomes).abs() <= 1.0,
            "{name}: {runs} samples, {outcomes} outcomes"
        );
    }
    // The timed-out query took about its 200 ms timeout, not its 3 s sleep.
    let slow_sum = get(&m, &format!("{DURATION}_sum"), "m-slow", &[]);
    let slow_n = get(&m, &format!("{DURATION}_count"), "m-slow", &[]);
    assert!(slow_sum / slow_n < 2.5, "mean {}", slow_sum / slow_n);

    // The missing table appears: successes start, the timestamp is set.
    pg.psql("CREATE TABLE later (k text, v text); INSERT INTO later VALUES ('x', 'y');");
    let m = until(&demo, "m-broken succeeds", |m| {
        get(m, S, "m-broken", &[]) >= 1.0
    })
    .await;
    assert!(get(&m, LAST, "m-broken", &[]) > 0.0);
    let (code, body) = demo
        .text("/apis/data.kubedojo.io/v1alpha1/namespaces/default/datarecords/m-broken")
        .await;
    assert_eq!(code, 200, "{body}");

    // The database stops: failures with reason unavailable; the good record's TTL is
    // 1 h, so it is still a cache hit and not a failure.
    let before = get(&m, F, "m-broken", &["reason=unavailable"]);
    let good_hits = get(&m, HITS, "m-good", &[]);
    pg.stop();
    let m = until(&demo, "unavailable counted", |m| {
        get(m, F, "m-broken", &["reason=unavailable"]) >= before + 2.0
    })
    .await;
    assert!(get(&m, HITS, "m-good", &[]) > good_hits);
    assert_eq!(get(&m, S, "m-good", &[]), 1.0);
    let broken_ok = get(&m, S, "m-broken", &[]);
    pg.resume();
    until(&demo, "m-broken succeeds again", |m| {
        get(m, S, "m-broken", &[]) > broken_ok
    })
    .await;
}
