//! The DataRecords API served from a PostgreSQL table source, in-process: build the app
//! on a [`TestPostgres`], send it requests, read its watch streams.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use kubedojo_data_api::api::response::Body;
use kubedojo_data_api::auth::{AlwaysAllowGroups, AuthChain};
use kubedojo_data_api::groups::records::DATARECORDS;
use kubedojo_data_api::records::RecordSet;
use kubedojo_data_api::records::postgres::{
    ConnectionConfig, RunningTable, TableSourceConfig, start_table,
};
use kubedojo_data_api::records::sources_config::SourcesConfig;
use kubedojo_data_api::runtime::{AppParts, build_app, load_records, start_postgres};
use kubedojo_data_api::server::app::{App, ConnInfo};
use serde_json::Value;

use super::postgres::TestPostgres;

/// One PostgreSQL per test binary while tests overlap (each test has its own schema).
pub fn shared_pg() -> Arc<TestPostgres> {
    static SHARED: Mutex<Weak<TestPostgres>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(pg) = slot.upgrade() {
        return pg;
    }
    let pg = Arc::new(TestPostgres::start());
    *slot = Arc::downgrade(&pg);
    pg
}

/// An app whose DataRecords come from one schema of a PostgreSQL database.
pub struct Server {
    /// The app.
    pub app: App,
    /// The table source behind it.
    pub running: RunningTable,
    /// The schema.
    pub schema: String,
}

/// A connection with short timeouts (tests of failures finish quickly).
pub fn connection(dsn: String) -> ConnectionConfig {
    let mut c = ConnectionConfig::new("main", dsn);
    c.connect_timeout = Duration::from_secs(2);
    c.statement_timeout = Duration::from_secs(2);
    c
}

/// Anonymous requests allowed (the tests are about the data, not auth).
pub fn allow_all() -> AuthChain {
    AuthChain::new(
        vec![],
        vec![Arc::new(AlwaysAllowGroups(vec![
            "system:unauthenticated".into(),
        ]))],
        true,
    )
}

/// An app serving the in-memory record set `records` (already refreshed).
pub fn memory_app(records: Arc<RecordSet>) -> App {
    build_app(AppParts::new(records, allow_all()))
}

/// Migrates `schema` on `dsn`, starts the table source and waits for its feed.
pub async fn server(dsn: String, schema: &str) -> Server {
    server_on(connection(dsn), schema).await
}

/// As [`server`], with a given connection configuration.
pub async fn server_on(conn: ConnectionConfig, schema: &str) -> Server {
    let source = TableSourceConfig::new(schema);
    let running = start_table(&conn, &source, true, &DATARECORDS)
        .await
        .unwrap();
    // An empty, loaded in-memory set: readiness is what the real server reports.
    let records = Arc::new(RecordSet::new(vec![]));
    assert!(records.refresh().await.is_empty());
    let mut parts = AppParts::new(records, allow_all());
    parts.records_backend = Some(running.backend.clone());
    let app = build_app(parts);
    let s = Server {
        app,
        running,
        schema: schema.to_string(),
    };
    s.wait_feed_up().await;
    s
}

/// A request to `app` and its status, JSON body and headers.
/// Waits (10 s at most) until a table source's change feed is connected and caught up.
pub async fn feed_up(running: &RunningTable) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !running.feed.subscribe().up {
        assert!(Instant::now() < deadline, "feed did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The record set and running table source of a sources config in `dir` whose `sources:`
/// entries are the YAML lines `sources`, with one connection `main` to `pg` (its DSN in a
/// file, 2 s connect and statement timeouts), loaded and started as the server does.
pub async fn start_sources(
    pg: &TestPostgres,
    dir: &std::path::Path,
    sources: &str,
) -> (Arc<RecordSet>, RunningTable) {
    let dsn = dir.join("dsn");
    std::fs::write(&dsn, pg.dsn()).unwrap();
    let path = dir.join("sources.yaml");
    std::fs::write(
        &path,
        format!(
            "connections: [{{name: main, dsnFrom: {{file: {}}}, connectTimeout: 2s, statementTimeout: 2s}}]\nsources:\n{sources}",
            dsn.display()
        ),
    )
    .unwrap();
    let config = SourcesConfig::load(&path).unwrap();
    let records = load_records(Some(&config), None).await.unwrap();
    let running = start_postgres(&Default::default(), Some(&config))
        .await
        .unwrap()
        .expect("the table source runs");
    (records, running)
}

pub async fn get_json(app: &App, path: &str) -> (u16, Value, http::HeaderMap) {
    let resp = request(app, path).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{path}: {e}: {}", String::from_utf8_lossy(&body)));
    (status, v, headers)
}

/// A GET request to `app`.
pub async fn request(app: &App, path: &str) -> http::Response<Body> {
    let req = Request::get(path).body(()).unwrap();
    app.handle(req, &ConnInfo::default()).await
}

impl Server {
    /// A GET request.
    pub async fn request(&self, path: &str) -> http::Response<Body> {
        request(&self.app, path).await
    }

    /// A GET request's status, JSON body and headers.
    pub async fn get(&self, path: &str) -> (u16, Value, http::HeaderMap) {
        get_json(&self.app, path).await
    }

    /// Status and text body of a GET (health endpoints).
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let resp = self.request(path).await;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Waits until the change feed is connected and caught up.
    pub async fn wait_feed_up(&self) {
        feed_up(&self.running).await;
    }

    /// `<schema>.datarecords`.
    pub fn table(&self) -> String {
        format!("{}.datarecords", self.schema)
    }
}

/// `namespace/name` of every item of a list.
pub fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["metadata"]["namespace"].as_str().unwrap(),
                i["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

/// All DataRecords.
pub const ALL: &str = "/apis/data.kubedojo.io/v1alpha1/datarecords";

/// The DataRecords of one namespace.
pub fn ns_path(ns: &str) -> String {
    format!("/apis/data.kubedojo.io/v1alpha1/namespaces/{ns}/datarecords")
}

/// Reads NDJSON watch events from a streaming body.
pub struct EventStream {
    body: Body,
    buf: Vec<u8>,
}

impl EventStream {
    /// The stream of a watch response (which must be 200).
    pub fn new(resp: http::Response<Body>) -> Self {
        assert_eq!(resp.status(), 200);
        EventStream {
            body: resp.into_body(),
            buf: Vec::new(),
        }
    }

    /// The next event, `None` at the end of the stream or after `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(serde_json::from_slice(&line).unwrap());
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .ok()??;
            let data: Bytes = frame.unwrap().into_data().unwrap_or_default();
            self.buf.extend_from_slice(&data);
        }
    }
}

/// A watcher's view: applies events to a map keyed by namespace/name (value: the
/// record's `spec.data`); returns the event's resourceVersion (None for bookmarks).
pub fn apply(state: &mut BTreeMap<String, Value>, event: &Value) -> Option<String> {
    let obj = &event["object"];
    let key = format!(
        "{}/{}",
        obj["metadata"]["namespace"].as_str()?,
        obj["metadata"]["name"].as_str()?
    );
    match event["type"].as_str().unwrap() {
        "ADDED" | "MODIFIED" => {
            state.insert(key, obj["spec"]["data"].clone());
        }
        "DELETED" => {
            state.remove(&key);
        }
        _ => return None,
    }
    obj["metadata"]["resourceVersion"]
        .as_str()
        .map(str::to_string)
}
