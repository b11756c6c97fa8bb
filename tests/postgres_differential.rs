//! Differential test of the PostgreSQL table source: random records, random label and
//! field selectors (every operator) and random page sizes, listed through SQL
//! (src/records/postgres) and through the in-memory record set (src/records/set.rs with
//! src/api/label_selector.rs) on the same data; both must give the same pages. Between
//! the first page and the rest, random writes hit the table only: the remaining pages
//! (read at the first page's resourceVersion from the change log) must still equal the
//! in-memory pages of the unchanged data.
//!
//! A real PostgreSQL server (tests/common/postgres.rs); 64 cases by default
//! (`KUBEDOJO_PG_CASES` sets another count).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use kubedojo_data_api::records::{DataRecord, RecordSet, RecordSource, RecordsError};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

use common::pg_app::{ALL, get_json, memory_app, ns_path, server};
use common::postgres::TestPostgres;
use common::selectors::{Vocabulary, escape};

const NAMESPACES: [&str; 3] = ["a", "b", "c"];
const KEYS: [&str; 4] = ["app", "tier", "n", "zz"];
const VALUES: [&str; 8] = ["web", "api", "x", "", "3", "7", "10", "007"];
/// Selectors over every operator (numbers as values and bounds: `>`/`<` compare them).
static SELECTORS: Vocabulary = Vocabulary {
    namespaces: &NAMESPACES,
    names: 10,
    keys: &KEYS,
    values: &VALUES,
    set_sizes: 1..4,
    equals: &["=", "==", "!="],
    compare: &[">", "<"],
    bounds: &["0", "5", "7", "10"],
    label_weights: (1, 3),
};

/// One generated record.
#[derive(Clone, Debug)]
struct Rec {
    ns: &'static str,
    name: String,
    labels: BTreeMap<String, String>,
    data: String,
}

fn rec() -> impl Strategy<Value = Rec> {
    (
        prop::sample::select(&NAMESPACES[..]),
        0..10u8,
        prop::collection::btree_map(
            prop::sample::select(&KEYS[..3]).prop_map(str::to_string),
            prop::sample::select(&VALUES[..]).prop_map(str::to_string),
            0..3,
        ),
        0..100u16,
    )
        .prop_map(|(ns, n, labels, d)| Rec {
            ns,
            name: format!("r{n}"),
            labels,
            data: format!("v{d}"),
        })
}

/// Records keyed by (namespace, name): later duplicates win.
fn records() -> impl Strategy<Value = BTreeMap<(String, String), Rec>> {
    prop::collection::vec(rec(), 0..40).prop_map(|v| {
        v.into_iter()
            .map(|r| ((r.ns.to_string(), r.name.clone()), r))
            .collect()
    })
}

/// A write made to the table between the first page and the rest.
#[derive(Clone, Debug)]
enum Write {
    Upsert(Rec),
    Delete(&'static str, u8),
    Relabel(&'static str, u8, BTreeMap<String, String>),
}

fn write() -> impl Strategy<Value = Write> {
    prop_oneof![
        rec().prop_map(Write::Upsert),
        (prop::sample::select(&NAMESPACES[..]), 0..10u8).prop_map(|(ns, n)| Write::Delete(ns, n)),
        (
            prop::sample::select(&NAMESPACES[..]),
            0..10u8,
            prop::collection::btree_map(
                prop::sample::select(&KEYS[..3]).prop_map(str::to_string),
                prop::sample::select(&VALUES[..]).prop_map(str::to_string),
                0..3,
            )
        )
            .prop_map(|(ns, n, l)| Write::Relabel(ns, n, l)),
    ]
}

#[derive(Clone, Debug)]
struct Case {
    records: BTreeMap<(String, String), Rec>,
    namespace: Option<&'static str>,
    labels: String,
    fields: String,
    limit: usize,
    writes: Vec<Write>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        records(),
        prop_oneof![
            2 => Just(None),
            1 => prop::sample::select(&NAMESPACES[..]).prop_map(Some),
        ],
        SELECTORS.label_selector(),
        SELECTORS.field_selector(),
        prop_oneof![1 => Just(0usize), 4 => 1..5usize],
        prop::collection::vec(write(), 0..6),
    )
        .prop_map(|(records, namespace, labels, fields, limit, writes)| Case {
            records,
            namespace,
            labels,
            fields,
            limit,
            writes,
        })
}

/// The in-memory source: whatever the case put in it.
struct Fixed(Arc<Mutex<Vec<DataRecord>>>);

impl RecordSource for Fixed {
    fn name(&self) -> String {
        "fixed".into()
    }
    fn load(&self) -> BoxFuture<'_, Result<Vec<DataRecord>, RecordsError>> {
        let records = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(records) })
    }
}

fn data_record(r: &Rec) -> DataRecord {
    serde_json::from_value(json!({
        "apiVersion": "data.kubedojo.io/v1alpha1",
        "kind": "DataRecord",
        "metadata": {"namespace": r.ns, "name": r.name, "labels": r.labels},
        "spec": {"source": "postgres", "data": {"k": r.data}},
    }))
    .unwrap()
}

fn sql_json(v: &impl serde::Serialize) -> String {
    // Keys and values come from fixed alphabets without quotes.
    serde_json::to_string(v).unwrap()
}

fn upsert_sql(table: &str, r: &Rec) -> String {
    format!(
        "INSERT INTO {table} (namespace, name, labels, data) VALUES ('{}', '{}', '{}', '{}')
         ON CONFLICT (namespace, name) DO UPDATE SET labels = EXCLUDED.labels, data = EXCLUDED.data;",
        r.ns,
        r.name,
        sql_json(&r.labels),
        sql_json(&json!({"k": r.data}))
    )
}

/// What is compared of one page: keys, labels and data of the items, and whether a
/// continue token follows.
fn page_view(list: &Value) -> (Vec<(String, Value, Value)>, bool) {
    let items = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                format!(
                    "{}/{}",
                    i["metadata"]["namespace"].as_str().unwrap(),
                    i["metadata"]["name"].as_str().unwrap()
                ),
                i["metadata"]
                    .get("labels")
                    .cloned()
                    .unwrap_or_else(|| json!({})),
                i["spec"]["data"].clone(),
            )
        })
        .collect();
    let more = list["metadata"]
        .get("continue")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty());
    (items, more)
}

fn query(case: &Case, cont: Option<&str>) -> String {
    let base = match case.namespace {
        Some(ns) => ns_path(ns),
        None => ALL.to_string(),
    };
    let mut q = vec![];
    if !case.labels.is_empty() {
        q.push(format!("labelSelector={}", escape(&case.labels)));
    }
    if !case.fields.is_empty() {
        q.push(format!("fieldSelector={}", escape(&case.fields)));
    }
    if case.limit > 0 {
        q.push(format!("limit={}", case.limit));
    }
    if let Some(c) = cont {
        q.push(format!("continue={}", escape(c)));
    }
    if q.is_empty() {
        base
    } else {
        format!("{base}?{}", q.join("&"))
    }
}

#[test]
fn sql_lists_equal_the_in_memory_lists() {
    let cases: u32 = std::env::var("KUBEDOJO_PG_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pg = TestPostgres::start();
    let s = rt.block_on(server(pg.dsn(), "t_diff"));
    let table = s.table();
    let client = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&pg.dsn(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    });
    let memory_records = Arc::new(Mutex::new(Vec::new()));
    let set = Arc::new(RecordSet::new(vec![Box::new(Fixed(
        memory_records.clone(),
    ))]));
    let memory = memory_app(set.clone());

    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let started = std::time::Instant::now();
    let pages = std::sync::atomic::AtomicUsize::new(0);
    let items = std::sync::atomic::AtomicUsize::new(0);
    let resumed = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&case(), |case| {
        rt.block_on(async {
            // The same data on both sides.
            let mut sql = format!("BEGIN; DELETE FROM {table};");
            for r in case.records.values() {
                sql.push_str(&upsert_sql(&table, r));
            }
            sql.push_str("COMMIT;");
            client.batch_execute(&sql).await.unwrap();
            *memory_records.lock().unwrap() = case.records.values().map(data_record).collect();
            assert!(set.refresh().await.is_empty());

            let mut sql_token: Option<String> = None;
            let mut mem_token: Option<String> = None;
            let mut page_rv: Option<Value> = None;
            for page in 0.. {
                let (code, from_sql, _) = s.get(&query(&case, sql_token.as_deref())).await;
                let (mcode, from_mem, _) =
                    get_json(&memory, &query(&case, mem_token.as_deref())).await;
                prop_assert_eq!(code, mcode, "status; sql: {} memory: {}", from_sql, from_mem);
                if code != 200 {
                    // Both refuse the request (an invalid selector): the same reason.
                    prop_assert_eq!(&from_sql["reason"], &from_mem["reason"]);
                    return Ok(());
                }
                let (sql_items, sql_more) = page_view(&from_sql);
                let (mem_items, mem_more) = page_view(&from_mem);
                prop_assert_eq!(&sql_items, &mem_items, "page {}", page);
                pages.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                items.fetch_add(sql_items.len(), std::sync::atomic::Ordering::Relaxed);
                if page > 0 && !case.writes.is_empty() {
                    resumed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                prop_assert_eq!(sql_more, mem_more, "continue on page {}", page);
                let rv = from_sql["metadata"]["resourceVersion"].clone();
                match &page_rv {
                    None => page_rv = Some(rv),
                    Some(first) => {
                        prop_assert_eq!(first, &rv, "every page shows the first page's version")
                    }
                }
                if !sql_more {
                    break;
                }
                sql_token = from_sql["metadata"]["continue"].as_str().map(str::to_string);
                mem_token = from_mem["metadata"]["continue"].as_str().map(str::to_string);
                if page == 0 && !case.writes.is_empty() {
                    // Writes to the table only: later pages still show the first's state.
                    let mut sql = String::from("BEGIN;");
                    for w in &case.writes {
                        match w {
                            Write::Upsert(r) => sql.push_str(&upsert_sql(&table, r)),
                            Write::Delete(ns, n) => sql.push_str(&format!(
                                "DELETE FROM {table} WHERE namespace = '{ns}' AND name = 'r{n}';"
                            )),
                            Write::Relabel(ns, n, l) => sql.push_str(&format!(
                                "UPDATE {table} SET labels = '{}' WHERE namespace = '{ns}' AND name = 'r{n}';",
                                sql_json(l)
                            )),
                        }
                    }
                    sql.push_str("COMMIT;");
                    client.batch_execute(&sql).await.unwrap();
                }
            }
            Ok::<(), TestCaseError>(())
        })
    });
    let (pages, items, resumed) = (pages.into_inner(), items.into_inner(), resumed.into_inner());
    eprintln!(
        "{cases} differential cases in {:?}: {pages} pages, {items} items compared, {resumed} pages read after writes",
        started.elapsed()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    // The generated cases exercise something: items, several pages, pages after writes.
    assert!(items > cases as usize, "{items} items");
    assert!(pages > cases as usize, "{pages} pages");
    assert!(resumed > 0, "no page was read after writes");
}
