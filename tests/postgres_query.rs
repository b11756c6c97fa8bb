//! The `postgresQuery` source against a real PostgreSQL server (tests/common/postgres.rs):
//! records configured in a sources config file, their `spec.data` filled by SQL queries
//! and served through the API; Current / Stale / Error; the TTL cache and single-flight
//! counted by `pg_stat_statements`; watch events on a data change; read-only
//! transactions and statement timeouts; name conflicts with a file source; and a
//! secret DSN that never shows in errors, logs or `/readyz?verbose`.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::BodyExt;
use kubedojo_data_api::auth::{AlwaysAllowGroups, AuthChain};
use kubedojo_data_api::records::postgres::{ConnectionConfig, Database, QuerySource};
use kubedojo_data_api::records::sources_config::{QueryRecordConfig, SourcesConfig};
use kubedojo_data_api::records::{RecordSet, RecordSource};
use kubedojo_data_api::runtime::{AppParts, build_app, load_records};
use kubedojo_data_api::server::app::{App, ConnInfo};
use serde_json::Value;

use common::pg_app::EventStream;
use common::postgres::TestPostgres;

/// Part of every DSN here: it must never appear in an answer, an error or a log line.
const SECRET: &str = "kd-pw-7f3a91c2";

/// Everything the process logs (at debug level), to search for the secret.
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer(|| LogWriter)
        .try_init();
}

fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// The test server's DSN with a password (ignored by its trust authentication).
fn secret_dsn(pg: &TestPostgres) -> String {
    format!("{} password={SECRET}", pg.dsn())
}

fn auth() -> AuthChain {
    AuthChain::new(
        vec![],
        vec![Arc::new(AlwaysAllowGroups(vec![
            "system:unauthenticated".into(),
        ]))],
        true,
    )
}

async fn get(app: &App, path: &str) -> (u16, Value) {
    let resp = app
        .handle(Request::get(path).body(()).unwrap(), &ConnInfo::default())
        .await;
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    assert!(!text.contains(SECRET), "{path} shows the secret: {text}");
    let v = serde_json::from_slice(&body).unwrap_or(Value::String(text));
    (code, v)
}

const NS: &str = "/apis/data.kubedojo.io/v1alpha1/namespaces";

fn record_path(ns: &str, name: &str) -> String {
    format!("{NS}/{ns}/datarecords/{name}")
}

/// Polls `path` until `ok` holds for the record (or panics with the last one).
async fn wait_for(app: &App, path: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, v) = get(app, path).await;
        if code == 200 && ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opens a watch on `path` through `app` (it must answer 200).
async fn watch(app: &App, path: &str) -> EventStream {
    EventStream::new(
        app.handle(Request::get(path).body(()).unwrap(), &ConnInfo::default())
            .await,
    )
}

/// The next watch event within `within`; the database password never appears in one.
async fn next_event(events: &mut EventStream, within: Duration) -> Option<Value> {
    let event = events.next(within).await?;
    assert!(!event.to_string().contains(SECRET), "{event}");
    Some(event)
}

fn condition_message(record: &Value) -> String {
    record["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_records_are_served_watched_and_kept_when_the_query_fails() {
    capture_logs();
    let pg = TestPostgres::start();
    pg.psql(
        "CREATE TABLE config (env text, k text, v text);
         INSERT INTO config VALUES ('production', 'max_connections', '100'),
           ('production', 'timeout_ms', '5000'), ('production', 'log_level', 'info'),
           ('staging', 'log_level', 'debug');",
    );
    let dir = tempfile::tempdir().unwrap();
    let dsn_file = dir.path().join("dsn");
    std::fs::write(&dsn_file, format!("{}\n", secret_dsn(&pg))).unwrap();
    let records_file = dir.path().join("records.yaml");
    std::fs::write(
        &records_file,
        "- metadata: {name: taken, namespace: default}\n  spec: {source: file, data: {from: file}}\n",
    )
    .unwrap();
    let config_file = dir.path().join("sources.yaml");
    std::fs::write(
        &config_file,
        format!(
            r#"connections:
  - name: main
    dsnFrom: {{file: {dsn}}}
    connectTimeout: 1s
    statementTimeout: 2s
sources:
  - kind: file
    path: {records}
  - kind: postgresQuery
    connection: main
    records:
      - name: user-config
        labels: {{app: web}}
        query: "SELECT k, v FROM config WHERE env = 'production'"
        ttl: 1s
      - name: one-row
        namespace: team-a
        shape: row
        query: "SELECT 'x'::text AS t, 1.50::numeric AS n, NULL::int AS nothing, true AS b"
        ttl: 1s
      - name: taken
        query: "SELECT 'from', 'query'"
      - name: broken
        query: "SELECT k, v FROM no_such_table"
        ttl: 1s
      - name: writer
        query: "UPDATE config SET v = 'hacked' RETURNING k, v"
      - name: slow
        query: "SELECT 'k', pg_sleep(3)::text"
        timeout: 300ms
"#,
            dsn = dsn_file.display(),
            records = records_file.display()
        ),
    )
    .unwrap();
    let config = SourcesConfig::load(&config_file).unwrap();
    let set = load_records(Some(&config), None).await.unwrap();
    let refresh = tokio::spawn(set.clone().run_refresh(Duration::from_secs(60)));
    let app = build_app(AppParts::new(set.clone(), auth()));

    // keyValue rows.
    let (code, uc) = get(&app, &record_path("default", "user-config")).await;
    assert_eq!(code, 200, "{uc}");
    assert_eq!(
        uc["spec"]["data"],
        serde_json::json!({"log_level": "info", "max_connections": "100", "timeout_ms": "5000"})
    );
    assert_eq!(uc["spec"]["source"], "postgres");
    assert_eq!(
        uc["spec"]["query"],
        "SELECT k, v FROM config WHERE env = 'production'"
    );
    assert_eq!(uc["metadata"]["labels"]["app"], "web");
    assert_eq!(
        uc["metadata"]["labels"]["data.kubedojo.io/source"],
        "postgresQuery"
    );
    assert_eq!(uc["status"]["syncStatus"], "Current");
    assert!(uc["status"]["lastSyncTime"].is_string(), "{uc}");
    assert_eq!(uc["status"]["conditions"][0]["type"], "Synced");
    assert_eq!(uc["status"]["conditions"][0]["status"], "True");

    // One row's columns, every type as the server's text.
    let (_, row) = get(&app, &record_path("team-a", "one-row")).await;
    assert_eq!(
        row["spec"]["data"],
        serde_json::json!({"b": "t", "n": "1.50", "nothing": "", "t": "x"}),
        "{row}"
    );

    // The earlier source (the file) wins a name, counted once.
    let (_, taken) = get(&app, &record_path("default", "taken")).await;
    assert_eq!(taken["spec"]["source"], "file", "{taken}");
    assert_eq!(set.conflicts_seen(), 1);
    assert!(logs().contains("two record sources produce the same DataRecord"));

    // Never succeeded: Error, no data, the reason in the condition.
    let (_, broken) = get(&app, &record_path("default", "broken")).await;
    assert_eq!(broken["status"]["syncStatus"], "Error", "{broken}");
    assert_eq!(broken["spec"]["data"], serde_json::json!({}));
    assert!(broken["status"]["lastSyncTime"].is_null(), "{broken}");
    let message = condition_message(&broken);
    assert!(
        message.contains("never succeeded")
            && message.contains("relation \"no_such_table\" does not exist"),
        "{message}"
    );

    // Read only: the UPDATE fails and the table is untouched.
    let (_, writer) = get(&app, &record_path("default", "writer")).await;
    assert_eq!(writer["status"]["syncStatus"], "Error", "{writer}");
    assert!(
        condition_message(&writer).contains("cannot execute UPDATE in a read-only transaction"),
        "{writer}"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM config WHERE v = 'hacked'"),
        "0"
    );

    // The statement timeout cancels a slow query.
    let (_, slow) = get(&app, &record_path("default", "slow")).await;
    assert_eq!(slow["status"]["syncStatus"], "Error", "{slow}");
    assert!(
        condition_message(&slow).contains("statement timeout"),
        "{slow}"
    );

    // A change of the data is a watch event (the refresh runs every TTL).
    let (_, list) = get(&app, &format!("{NS}/default/datarecords")).await;
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap();
    let mut events = watch(&app, &format!(
                "{NS}/default/datarecords?watch=1&resourceVersion={rv}&fieldSelector=metadata.name%3Duser-config"
            )).await;
    pg.psql("UPDATE config SET v = '200' WHERE k = 'max_connections'");
    let changed = Instant::now();
    loop {
        let event = next_event(&mut events, Duration::from_secs(10))
            .await
            .expect("a MODIFIED event for the changed data");
        assert_eq!(event["object"]["metadata"]["name"], "user-config");
        if event["object"]["spec"]["data"]["max_connections"] == "200" {
            assert_eq!(event["type"], "MODIFIED");
            break;
        }
    }
    assert!(
        changed.elapsed() < Duration::from_secs(4),
        "seen after {:?} with a 1 s TTL",
        changed.elapsed()
    );

    // The query starts failing: Stale, the last good data kept, the error shown.
    pg.psql("ALTER TABLE config RENAME TO config_gone");
    let stale = wait_for(&app, &record_path("default", "user-config"), "Stale", |v| {
        v["status"]["syncStatus"] == "Stale"
    })
    .await;
    assert_eq!(stale["spec"]["data"]["max_connections"], "200", "{stale}");
    // lastSyncTime is the last success: it stays while the query keeps failing.
    assert!(stale["status"]["lastSyncTime"].is_string(), "{stale}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, still) = get(&app, &record_path("default", "user-config")).await;
    assert_eq!(still["status"]["syncStatus"], "Stale", "{still}");
    assert_eq!(
        still["status"]["lastSyncTime"], stale["status"]["lastSyncTime"],
        "{still}"
    );
    assert_eq!(stale["status"]["conditions"][0]["status"], "False");
    assert_eq!(stale["status"]["conditions"][0]["reason"], "QueryFailed");
    let message = condition_message(&stale);
    assert!(
        message.contains("serving the last good data")
            && message.contains("relation \"config\" does not exist"),
        "{message}"
    );
    // And back.
    pg.psql("ALTER TABLE config_gone RENAME TO config");
    wait_for(
        &app,
        &record_path("default", "user-config"),
        "Current again",
        |v| v["status"]["syncStatus"] == "Current",
    )
    .await;

    let (_, ready) = get(&app, "/readyz?verbose").await;
    assert!(ready.as_str().unwrap_or_default().contains("ok"), "{ready}");
    refresh.abort();
    assert!(!logs().contains(SECRET), "the logs show the secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_turns_records_stale_then_current_again() {
    capture_logs();
    let mut pg = TestPostgres::start();
    let mut c = ConnectionConfig::new("main", secret_dsn(&pg));
    c.connect_timeout = Duration::from_millis(500);
    c.statement_timeout = Duration::from_secs(1);
    let db = Database::new(&c).unwrap();
    let def: QueryRecordConfig =
        serde_yaml_ng::from_str("{name: answer, query: \"SELECT 'answer', '42'\", ttl: 200ms}")
            .unwrap();
    let source = QuerySource::new("main", db, vec![def]);
    let first = source.record(0).await.unwrap();
    let status = first.status.clone().unwrap();
    assert_eq!(status.sync_status, "Current");
    assert_eq!(first.spec.data["answer"], "42");

    pg.stop();
    // Until the 200 ms TTL has run out the cached result is served (Current); then the
    // query runs, fails and the record turns Stale. Each read is bounded by the
    // timeouts (500 ms connect + 1 s statement + 500 ms margin), however loaded the
    // machine; the wait for the expiry is tied to the observed status, not a sleep.
    let deadline = Instant::now() + Duration::from_secs(30);
    let stale = loop {
        let started = Instant::now();
        let r = source.record(0).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "bounded by the timeouts: {:?}",
            started.elapsed()
        );
        let now = r.status.as_ref().unwrap().sync_status.clone();
        if now != "Current" {
            break r;
        }
        assert_eq!(
            r.status, first.status,
            "served from the cache while Current"
        );
        assert!(Instant::now() < deadline, "never Stale: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let s = stale.status.clone().unwrap();
    assert_eq!(s.sync_status, "Stale", "{stale:?}");
    assert_eq!(stale.spec.data["answer"], "42");
    assert_eq!(s.last_sync_time, status.last_sync_time);
    assert!(
        s.conditions[0].message.contains("unavailable"),
        "{:?}",
        s.conditions
    );
    assert!(!format!("{stale:?}").contains(SECRET));
    // A source that never reached the database is Error, not an empty Current.
    let mut c2 = c.clone();
    c2.name = "other".into();
    let never = QuerySource::new(
        "other",
        Database::new(&c2).unwrap(),
        vec![serde_yaml_ng::from_str("{name: never, query: \"SELECT 'a', 'b'\"}").unwrap()],
    );
    let r = never.load().await.unwrap();
    assert_eq!(r[0].status.as_ref().unwrap().sync_status, "Error");
    assert!(r[0].spec.data.is_empty());

    // Sync times have whole seconds: a recovery in the same second as the first success
    // could not be told from it, so resume only once the clock is past that second.
    while Some(kubedojo_data_api::api::time::Time::now()) <= status.last_sync_time {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pg.resume();
    // Recovery is observed, not timed: the pool's next connect succeeds once the
    // server accepts connections again (a generous bound for a loaded machine).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = source.record(0).await.unwrap();
        if r.status.as_ref().unwrap().sync_status == "Current" {
            assert!(r.status.unwrap().last_sync_time > status.last_sync_time);
            break;
        }
        assert!(Instant::now() < deadline, "never Current again: {r:?}");
    }
    assert!(!logs().contains(SECRET), "the logs show the secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_record_is_queried_once_for_all_concurrent_callers() {
    let mut pg = TestPostgres::start();
    pg.psql("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'");
    pg.restart();
    pg.psql(
        "CREATE EXTENSION pg_stat_statements;
         CREATE TABLE sf_probe (k text, v text);
         INSERT INTO sf_probe VALUES ('a', '1');",
    );
    let calls = || -> u64 {
        pg.psql(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE '%FROM sf_probe%' AND query NOT LIKE '%pg_stat_statements%'",
        )
        .parse()
        .unwrap()
    };
    let db = Database::new(&ConnectionConfig::new("main", pg.dsn())).unwrap();
    let def: QueryRecordConfig =
        serde_yaml_ng::from_str("{name: sf, query: \"SELECT k, v FROM sf_probe\", ttl: 2s}")
            .unwrap();
    let source = Arc::new(QuerySource::new("main", db, vec![def]));
    let burst = || {
        let joins: Vec<_> = (0..20)
            .map(|_| {
                let s = source.clone();
                tokio::spawn(async move { s.record(0).await.unwrap() })
            })
            .collect();
        async move {
            for j in joins {
                let r = j.await.unwrap();
                assert_eq!(r.spec.data["a"], "1");
            }
        }
    };
    assert_eq!(calls(), 0);
    burst().await;
    assert_eq!(calls(), 1, "20 concurrent callers, one query");
    assert_eq!(source.queries_run(), 1);
    // Within the TTL: served from the cache.
    burst().await;
    source.load().await.unwrap();
    assert_eq!(calls(), 1, "cached within the TTL");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    burst().await;
    assert_eq!(calls(), 2, "expired: one more query for the whole burst");
    assert_eq!(source.queries_run(), 2);
    // The same counts in the self-metrics (the text `/metrics` serves): 61 reads, two
    // of them ran the query; the callers queued behind a running query are shared waits.
    let text = kubedojo_data_api::telemetry::Telemetry::new(10.0).encode();
    let sample = |metric: &str| -> f64 {
        let prefix = format!("{metric}{{namespace=\"default\",name=\"sf\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(sample("kubedojo_datarecord_query_cache_misses_total"), 2.0);
    assert_eq!(sample("kubedojo_datarecord_query_cache_hits_total"), 59.0);
    assert_eq!(sample("kubedojo_datarecord_query_successes_total"), 2.0);
    assert_eq!(
        sample("kubedojo_datarecord_query_duration_seconds_count"),
        2.0
    );
    let shared = sample("kubedojo_datarecord_query_shared_waits_total");
    assert!(
        (1.0..=38.0).contains(&shared),
        "callers that waited for the two bursts' query: {shared}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configs_name_the_file_key_and_line_and_never_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sources.yaml");
    std::fs::write(
        &path,
        "connections:\n  - name: main\n    dsnFrom: {env: KD_TEST_DSN}\nsources:\n  - kind: postgresQuery\n    connection: main\n    records:\n      - name: a\n        query: SELECT 1, 2\n        tll: 5s\n",
    )
    .unwrap();
    let e = SourcesConfig::load(&path).unwrap_err().to_string();
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains("sources[0].records[0]"), "{e}");
    assert!(e.contains("unknown field `tll`"), "{e}");
    assert!(e.contains("line 10"), "{e}");

    // A DSN the driver cannot parse: the error names the connection, not the DSN.
    let dsn = dir.path().join("dsn");
    std::fs::write(&dsn, format!("host=/tmp port=notaport password={SECRET}")).unwrap();
    std::fs::write(
        &path,
        format!(
            "connections:\n  - name: main\n    dsnFrom: {{file: {}}}\nsources:\n  - kind: postgresQuery\n    connection: main\n    records:\n      - {{name: a, query: SELECT 1}}\n",
            dsn.display()
        ),
    )
    .unwrap();
    let config = SourcesConfig::load(&path).unwrap();
    let e = load_records(Some(&config), None)
        .await
        .err()
        .expect("a bad DSN fails start-up")
        .to_string();
    assert!(e.contains("connection \"main\""), "{e}");
    assert!(!e.contains(SECRET), "{e}");

    // A postgres table source next to in-memory sources is served as their union
    // (tests/postgres_union.rs); the file comes first here. (The database need not be
    // up: requests would get 503 until it is.)
    std::fs::write(
        &dsn,
        format!("host=/nonexistent-kd port=5 user=x password={SECRET}"),
    )
    .unwrap();
    std::fs::write(
        &path,
        format!(
            "connections:\n  - name: main\n    dsnFrom: {{file: {}}}\nsources:\n  - kind: file\n  - kind: postgres\n    connection: main\n",
            dsn.display()
        ),
    )
    .unwrap();
    let config = SourcesConfig::load(&path).unwrap();
    let running = kubedojo_data_api::runtime::start_postgres(&Default::default(), Some(&config))
        .await
        .unwrap()
        .expect("the table source runs");
    assert_eq!(running.union, Some(1));
    let _ = RecordSet::new(vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_source_in_the_config_is_the_table_source_of_the_flags() {
    let pg = TestPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let dsn = dir.path().join("dsn");
    std::fs::write(&dsn, secret_dsn(&pg)).unwrap();
    let path = dir.path().join("sources.yaml");
    std::fs::write(
        &path,
        format!(
            "connections: [{{name: main, dsnFrom: {{file: {}}}, connectTimeout: 1s}}]\nsources:\n  - {{kind: postgres, connection: main, schema: cfg_t, migrate: true, keepChanges: 10}}\n",
            dsn.display()
        ),
    )
    .unwrap();
    let config = SourcesConfig::load(&path).unwrap();
    let running = kubedojo_data_api::runtime::start_postgres(&Default::default(), Some(&config))
        .await
        .unwrap()
        .expect("the configured table source runs");
    pg.psql(
        "INSERT INTO cfg_t.datarecords (namespace, name, data) VALUES ('default', 'row1', '{\"k\":\"v\"}')",
    );
    let set = load_records(Some(&config), None).await.unwrap();
    let mut parts = AppParts::new(set, auth());
    parts.records_backend = Some(running.backend.clone());
    let app = build_app(parts);
    let (code, row) = get(&app, &record_path("default", "row1")).await;
    assert_eq!(code, 200, "{row}");
    assert_eq!(row["spec"]["data"]["k"], "v");
    let rv = row["metadata"]["resourceVersion"].as_str().unwrap();
    assert!(rv.parse::<u64>().is_ok(), "a change-log id: {rv}");

    // The flags and the config naming a table source at once is refused.
    let args = kubedojo_data_api::config::PostgresArgs {
        postgres_dsn_file: Some(dsn.clone()),
        ..Default::default()
    };
    let e = kubedojo_data_api::runtime::start_postgres(&args, Some(&config))
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("both"), "{e}");
}

/// §2: record definitions in a ConfigMap, watched through a real kube-apiserver by a
/// client that has only a Role for get/list/watch of that one ConfigMap (as the chart
/// grants): edits add, change and remove records as watch events without a restart; a
/// malformed version keeps the last good definitions, and says why (log line naming the
/// ConfigMap and key, self-metric); deleting the ConfigMap removes its records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_definitions_from_a_configmap_follow_its_edits() {
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

    capture_logs();
    let cluster = common::kube_cluster::KubeCluster::start();
    let admin = cluster.client(None).await;
    let pg = TestPostgres::start();
    pg.psql(
        "CREATE TABLE cm_kv (k text, v text); INSERT INTO cm_kv VALUES ('a', '1'), ('b', '2');",
    );

    // The namespace, the narrow Role (the chart's rule) and its binding.
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "ops"}})).unwrap();
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "query-defs", "namespace": "ops"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                   "resourceNames": ["queries"], "verbs": ["get", "list", "watch"]}]
    }))
    .unwrap();
    Api::<Role>::namespaced(admin.clone(), "ops")
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "query-defs", "namespace": "ops"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "query-defs"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "kd-records"}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), "ops")
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let configmaps = Api::<ConfigMap>::namespaced(admin.clone(), "ops");
    let set_defs = |text: &str| {
        let configmaps = configmaps.clone();
        let patch = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "queries", "namespace": "ops"},
            "data": {"records.yaml": text}
        });
        async move {
            configmaps
                .patch(
                    "queries",
                    &PatchParams::apply("kd-test").force(),
                    &Patch::Apply(&patch),
                )
                .await
                .unwrap();
        }
    };
    set_defs("- {name: cm-one, query: \"SELECT k, v FROM cm_kv WHERE k = 'a'\", ttl: 1h}\n").await;
    // Another ConfigMap in the namespace: the server's user may not read it.
    let other: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "other", "namespace": "ops"}, "data": {"x": "y"}
    }))
    .unwrap();
    configmaps
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    let limited = cluster.client(Some("kd-records")).await;
    let e = Api::<ConfigMap>::namespaced(limited.clone(), "ops")
        .get("other")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("forbidden"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let dsn_file = dir.path().join("dsn");
    std::fs::write(&dsn_file, secret_dsn(&pg)).unwrap();
    let config_file = dir.path().join("sources.yaml");
    std::fs::write(
        &config_file,
        format!(
            "connections:\n  - {{name: main, dsnFrom: {{file: {}}}}}\nsources:\n  - kind: postgresQuery\n    connection: main\n    records:\n      - {{name: cm-inline, query: \"SELECT 'i', 'j'\", ttl: 1h}}\n    configMap: {{namespace: ops, name: queries}}\n",
            dsn_file.display()
        ),
    )
    .unwrap();
    let config = SourcesConfig::load(&config_file).unwrap();
    // Without a Kubernetes client (demo mode) the configMap is a readable error.
    let e = load_records(Some(&config), None).await.err().unwrap();
    assert!(format!("{e:#}").contains("sources[0].configMap"), "{e:#}");
    let set =
        kubedojo_data_api::runtime::load_records_with_kube(Some(&config), None, Some(&limited))
            .await
            .unwrap();
    let refresh = tokio::spawn(set.clone().run_refresh(Duration::from_secs(60)));
    let app = build_app(AppParts::new(set.clone(), auth()));

    // Served at start-up, next to the inline record.
    let (code, one) = get(&app, &record_path("default", "cm-one")).await;
    assert_eq!(code, 200, "{one}");
    assert_eq!(one["spec"]["data"], serde_json::json!({"a": "1"}));
    assert_eq!(one["status"]["syncStatus"], "Current");
    let (code, _) = get(&app, &record_path("default", "cm-inline")).await;
    assert_eq!(code, 200);
    let (_, list) = get(&app, &format!("{NS}/default/datarecords")).await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut events = watch(
        &app,
        &format!("{NS}/default/datarecords?watch=1&resourceVersion={rv}"),
    )
    .await;
    let mut next = async || {
        let e = next_event(&mut events, Duration::from_secs(15))
            .await
            .expect("a watch event");
        (
            e["type"].as_str().unwrap().to_string(),
            e["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string(),
            e["object"]["spec"]["data"].clone(),
        )
    };

    // An edit changes one record's query and adds another: MODIFIED and ADDED.
    set_defs(
        "- {name: cm-one, query: \"SELECT k, v FROM cm_kv WHERE k = 'b'\", ttl: 1h}\n- {name: cm-two, namespace: default, query: \"SELECT 'two', '2'\", ttl: 1h}\n",
    )
    .await;
    let mut seen = vec![next().await, next().await];
    seen.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(
        seen,
        vec![
            (
                "ADDED".into(),
                "cm-two".into(),
                serde_json::json!({"two": "2"})
            ),
            (
                "MODIFIED".into(),
                "cm-one".into(),
                serde_json::json!({"b": "2"})
            ),
        ]
    );

    // Malformed versions: the last good definitions stay; the reason is logged, naming
    // the ConfigMap and the key, and counted.
    set_defs("- {name: cm-one, query: [\n").await;
    let rejected = "ConfigMap ops/queries key \"records.yaml\": not a list of records";
    let deadline = Instant::now() + Duration::from_secs(15);
    while !logs().contains(rejected) {
        assert!(
            Instant::now() < deadline,
            "no log line {rejected}: {}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(logs().contains("keeping the last good definitions"));
    set_defs("- {name: cm-inline, query: \"SELECT 1, 2\"}\n").await;
    let metrics = || kubedojo_data_api::telemetry::Telemetry::new(10.0).encode();
    let valid = "kubedojo_datarecord_query_configmap_valid{namespace=\"ops\",name=\"queries\",key=\"records.yaml\"} 0";
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(logs().contains("already an inline record") && metrics().contains(valid)) {
        assert!(Instant::now() < deadline, "{}", metrics());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metrics().contains("kubedojo_datarecord_query_configmap_rejected_total{namespace=\"ops\",name=\"queries\",key=\"records.yaml\"} 2"),
        "{}",
        metrics()
    );
    for name in ["cm-one", "cm-two", "cm-inline"] {
        let (code, r) = get(&app, &record_path("default", name)).await;
        assert_eq!(code, 200, "{name} kept: {r}");
    }
    let (_, one) = get(&app, &record_path("default", "cm-one")).await;
    assert_eq!(one["spec"]["data"], serde_json::json!({"b": "2"}));

    // A good version again removes cm-two (the only event: the bad versions made none).
    set_defs("- {name: cm-one, query: \"SELECT k, v FROM cm_kv WHERE k = 'b'\", ttl: 1h}\n").await;
    assert_eq!(next().await.0 + "/cm-two", "DELETED/cm-two");
    assert!(
        metrics().contains(&valid.replace("} 0", "} 1")),
        "{}",
        metrics()
    );

    // The ConfigMap deleted: its records go, the inline one stays.
    configmaps
        .delete("queries", &DeleteParams::default())
        .await
        .unwrap();
    let (kind, name, _) = next().await;
    assert_eq!((kind.as_str(), name.as_str()), ("DELETED", "cm-one"));
    let (code, _) = get(&app, &record_path("default", "cm-inline")).await;
    assert_eq!(code, 200);
    refresh.abort();
    assert!(!logs().contains(SECRET));
}
