//! Differential property test of the union of in-memory and table sources
//! (src/records/union/) against a model: a file source listed before `kind: postgres`,
//! the table, and a file source listed after it, in one `--sources-config` built as the
//! server builds it, on a real PostgreSQL server (tests/common/postgres.rs).
//!
//! Each case sets both sides to random contents, opens a watch (random namespace, label
//! and field selectors, from the list's resourceVersion or from scratch), applies random
//! steps of psql-side row changes (upsert, delete, relabel) and file edits, then
//! - lists with random scope, selectors and `limit`, paging with `continue` while more
//!   random changes land after the first page: the pages together must equal the model
//!   at the first page, every page at the first page's resourceVersion, every page but
//!   the last full;
//! - lists at the initial version (`resourceVersionMatch=Exact`): the model then;
//! - lists again and gets random names: both must equal the model now;
//! - reads the watch until its state equals the model: every event consistent (ADDED
//!   only for an absent name, MODIFIED and DELETED only for a present one), each part of
//!   the composite versions monotonic, until a bookmark shows it past the last change.
//!
//! The model is a `BTreeMap` per side with the documented conflict rule
//! (docs/datarecords.md, "Name conflicts across the two sides"): the served object of a
//! name is the earlier file's record, else the row, else the later file's record. Label
//! matching uses the library's selector (SQL and in-memory matching are compared
//! operator by operator in tests/postgres_differential.rs); field selectors and paging
//! are the model's own. 64 cases by default (`KUBEDOJO_PG_CASES` sets another count).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kubedojo_data_api::api::label_selector::LabelSelector;
use kubedojo_data_api::groups::records::DATARECORDS;
use kubedojo_data_api::records::RecordSet;
use kubedojo_data_api::records::postgres::RunningTable;
use kubedojo_data_api::records::union::UnionBackend;
use kubedojo_data_api::runtime::{AppParts, build_app};
use kubedojo_data_api::server::app::App;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

use common::pg_app::{
    ALL, EventStream, allow_all, feed_up, get_json, ns_path, request, start_sources,
};
use common::postgres::TestPostgres;
use common::selectors::{Vocabulary, escape};

const NAMESPACES: [&str; 2] = ["a", "b"];
const NAMES: u8 = 5;
const KEYS: [&str; 2] = ["app", "tier"];
const VALUES: [&str; 4] = ["web", "api", "3", ""];
/// Selectors with the operators the model's field matching knows (`=`, `!=`).
static SELECTORS: Vocabulary = Vocabulary {
    namespaces: &NAMESPACES,
    names: NAMES,
    keys: &KEYS,
    values: &VALUES,
    set_sizes: 1..3,
    equals: &["=", "!="],
    compare: &[">"],
    bounds: &["2"],
    label_weights: (1, 2),
};

type Key = (String, String);
type Labels = BTreeMap<String, String>;

/// What is compared of a served object.
#[derive(Clone, Debug, PartialEq)]
struct Obj {
    labels: Labels,
    data: String,
}

/// Where a change lands, in the configuration's order.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Side {
    Before,
    Table,
    After,
}

/// One change.
#[derive(Clone, Debug)]
enum Op {
    Put(Side, Key, Obj),
    Remove(Side, Key),
    /// `UPDATE ... SET labels` of the row, if there is one.
    Relabel(Key, Labels),
}

/// The three sides, and what the union must serve from them.
#[derive(Clone, Debug, Default)]
struct Model {
    before: BTreeMap<Key, Obj>,
    table: BTreeMap<Key, Obj>,
    after: BTreeMap<Key, Obj>,
}

impl Model {
    fn side(&mut self, side: Side) -> &mut BTreeMap<Key, Obj> {
        match side {
            Side::Before => &mut self.before,
            Side::Table => &mut self.table,
            Side::After => &mut self.after,
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Put(side, k, o) => {
                self.side(*side).insert(k.clone(), o.clone());
            }
            Op::Remove(side, k) => {
                self.side(*side).remove(k);
            }
            Op::Relabel(k, labels) => {
                if let Some(o) = self.table.get_mut(k) {
                    o.labels = labels.clone();
                }
            }
        }
    }

    /// The documented rule: the earlier source in the configuration wins a name.
    fn served(&self) -> BTreeMap<Key, Obj> {
        let mut out = self.after.clone();
        out.extend(self.table.clone());
        out.extend(self.before.clone());
        out
    }
}

fn key() -> impl Strategy<Value = Key> {
    (prop::sample::select(&NAMESPACES[..]), 0..NAMES)
        .prop_map(|(ns, n)| (ns.into(), format!("r{n}")))
}

fn labels() -> impl Strategy<Value = Labels> {
    prop::collection::btree_map(
        prop::sample::select(&KEYS[..]).prop_map(str::to_string),
        prop::sample::select(&VALUES[..]).prop_map(str::to_string),
        0..3,
    )
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![1 => Just(Side::Before), 2 => Just(Side::Table), 1 => Just(Side::After)]
}

fn put() -> impl Strategy<Value = Op> {
    (side(), key(), labels(), 0..100u8).prop_map(|(s, k, labels, n)| {
        let data = format!("{s:?}{n}");
        Op::Put(s, k, Obj { labels, data })
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => put(),
        2 => (side(), key()).prop_map(|(s, k)| Op::Remove(s, k)),
        1 => (key(), labels()).prop_map(|(k, l)| Op::Relabel(k, l)),
    ]
}

/// Scope and selectors of a list or watch.
#[derive(Clone, Debug)]
struct Query {
    namespace: Option<&'static str>,
    labels: String,
    fields: String,
}

fn query() -> impl Strategy<Value = Query> {
    (
        prop_oneof![2 => Just(None), 1 => prop::sample::select(&NAMESPACES[..]).prop_map(Some)],
        SELECTORS.label_selector(),
        SELECTORS.field_selector(),
    )
        .prop_map(|(namespace, labels, fields)| Query {
            namespace,
            labels,
            fields,
        })
}

#[derive(Clone, Debug)]
struct Case {
    initial: Vec<Op>,
    watch: Query,
    watch_from_list: bool,
    steps: Vec<Vec<Op>>,
    list: Query,
    limit: usize,
    between: Vec<Op>,
    gets: Vec<Key>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(put(), 0..16),
        query(),
        any::<bool>(),
        prop::collection::vec(prop::collection::vec(op(), 1..5), 0..4),
        query(),
        prop_oneof![1 => Just(0usize), 3 => 1..5usize],
        prop::collection::vec(op(), 0..5),
        prop::collection::vec(key(), 1..4),
    )
        .prop_map(
            |(initial, watch, watch_from_list, steps, list, limit, between, gets)| Case {
                initial,
                watch,
                watch_from_list,
                steps,
                list,
                limit,
                between,
                gets,
            },
        )
}

impl Query {
    /// The model's answer: served objects in scope and matching, in (namespace, name) order.
    fn expected(&self, served: &BTreeMap<Key, Obj>) -> Vec<(Key, Obj)> {
        let labels = LabelSelector::parse(&self.labels).unwrap();
        served
            .iter()
            .filter(|(k, o)| {
                self.namespace.is_none_or(|ns| k.0 == ns)
                    && labels.matches(&o.labels)
                    && fields_match(&self.fields, k)
            })
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect()
    }

    fn path(&self, extra: &[String]) -> String {
        let base = match self.namespace {
            Some(ns) => ns_path(ns),
            None => ALL.to_string(),
        };
        let mut q: Vec<String> = extra.to_vec();
        if !self.labels.is_empty() {
            q.push(format!("labelSelector={}", escape(&self.labels)));
        }
        if !self.fields.is_empty() {
            q.push(format!("fieldSelector={}", escape(&self.fields)));
        }
        if q.is_empty() {
            base
        } else {
            format!("{base}?{}", q.join("&"))
        }
    }
}

/// The model's field selector: `metadata.name` / `metadata.namespace`, `=` or `!=`.
fn fields_match(selector: &str, (ns, name): &Key) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|t| {
        let (field, equals, value) = match t.split_once("!=") {
            Some((f, v)) => (f, false, v),
            None => {
                let (f, v) = t.split_once('=').unwrap();
                (f, true, v)
            }
        };
        let actual = if field == "metadata.name" { name } else { ns };
        (actual == value) == equals
    })
}

fn key_of(item: &Value) -> Key {
    (
        item["metadata"]["namespace"].as_str().unwrap().to_string(),
        item["metadata"]["name"].as_str().unwrap().to_string(),
    )
}

fn obj_of(item: &Value) -> Obj {
    let labels = item["metadata"]
        .get("labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect()
        })
        .unwrap_or_default();
    Obj {
        labels,
        data: item["spec"]["data"]["v"].as_str().unwrap_or("").to_string(),
    }
}

fn items(list: &Value) -> Vec<(Key, Obj)> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (key_of(i), obj_of(i)))
        .collect()
}

/// `(seq, id)` of a composite version `<epoch>.<seq>_p<id>`.
fn parts(rv: &str) -> (u64, u64) {
    let (mem, id) = rv
        .split_once("_p")
        .unwrap_or_else(|| panic!("not composite: {rv}"));
    let (_, seq) = mem.split_once('.').unwrap();
    (seq.parse().unwrap(), id.parse().unwrap())
}

/// The union of two file sources around a table source, as the server builds it.
struct Union {
    app: App,
    records: Arc<RecordSet>,
    _running: RunningTable,
    before: PathBuf,
    after: PathBuf,
    table: String,
    changes: String,
    client: tokio_postgres::Client,
    _dir: tempfile::TempDir,
}

impl Union {
    async fn start(pg: &TestPostgres, schema: &str) -> Union {
        let dir = tempfile::tempdir().unwrap();
        let before = dir.path().join("before.yaml");
        let after = dir.path().join("after.yaml");
        std::fs::write(&before, "[]").unwrap();
        std::fs::write(&after, "[]").unwrap();
        let sources = format!(
            "  - {{kind: file, path: {}}}\n  - {{kind: postgres, connection: main, schema: {schema}, migrate: true}}\n  - {{kind: file, path: {}}}\n",
            before.display(),
            after.display()
        );
        let (records, running) = start_sources(pg, dir.path(), &sources).await;
        assert_eq!(running.union, Some(1), "one source before the table");
        let mut parts = AppParts::new(records.clone(), allow_all());
        // runtime::records_backend's union, with bookmarks every 50 ms: a watcher is
        // settled when a bookmark shows it past the last change.
        let backend = UnionBackend::new(
            records.clone(),
            running.table.clone(),
            running.feed.clone(),
            1,
            &DATARECORDS,
        )
        .with_bookmark_interval(Duration::from_millis(50));
        parts.records_backend = Some(Arc::new(backend));
        let app = build_app(parts);
        feed_up(&running).await;
        let (client, conn) = tokio_postgres::connect(&pg.dsn(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        Union {
            app,
            records,
            _running: running,
            before,
            after,
            table: format!("{schema}.datarecords"),
            changes: format!("{schema}.changes"),
            client,
            _dir: dir,
        }
    }

    /// Applies `ops` to `model` and to the server: the row changes in one transaction,
    /// each touched file rewritten once, then one reload of the set (as its refresh loop
    /// would).
    async fn apply(&self, model: &mut Model, ops: &[Op], reset: bool) {
        let t = &self.table;
        let mut sql = String::from("BEGIN;");
        if reset {
            sql.push_str(&format!("DELETE FROM {t};"));
            *model = Model::default();
        }
        let (mut before, mut after) = (reset, reset);
        for op in ops {
            model.apply(op);
            match op {
                Op::Put(Side::Table, (ns, name), o) => sql.push_str(&format!(
                    "INSERT INTO {t} (namespace, name, labels, data) VALUES ('{ns}', '{name}', '{}', '{}')
                     ON CONFLICT (namespace, name) DO UPDATE SET labels = EXCLUDED.labels, data = EXCLUDED.data;",
                    json!(o.labels),
                    json!({"v": o.data})
                )),
                Op::Remove(Side::Table, (ns, name)) => sql.push_str(&format!(
                    "DELETE FROM {t} WHERE namespace = '{ns}' AND name = '{name}';"
                )),
                Op::Relabel((ns, name), l) => sql.push_str(&format!(
                    "UPDATE {t} SET labels = '{}' WHERE namespace = '{ns}' AND name = '{name}';",
                    json!(l)
                )),
                Op::Put(Side::Before, ..) | Op::Remove(Side::Before, _) => before = true,
                Op::Put(Side::After, ..) | Op::Remove(Side::After, _) => after = true,
            }
        }
        sql.push_str("COMMIT;");
        self.client.batch_execute(&sql).await.unwrap();
        if before {
            write_file(&self.before, &model.before);
        }
        if after {
            write_file(&self.after, &model.after);
        }
        if before || after {
            assert!(self.records.refresh().await.is_empty());
        }
    }
}

fn write_file(path: &PathBuf, records: &BTreeMap<Key, Obj>) {
    let list: Vec<Value> = records
        .iter()
        .map(|((ns, name), o)| {
            json!({
                "metadata": {"namespace": ns, "name": name, "labels": o.labels},
                "spec": {"source": "file", "data": {"v": o.data}},
            })
        })
        .collect();
    std::fs::write(path, serde_json::to_string(&list).unwrap()).unwrap();
}

/// A watcher's state, checked event by event.
struct Watcher {
    stream: EventStream,
    state: BTreeMap<Key, Obj>,
    last: (u64, u64),
    events: usize,
}

impl Watcher {
    /// Applies one event; an error when it contradicts the state or goes back in version.
    fn apply(&mut self, e: &Value) -> Result<(), TestCaseError> {
        let kind = e["type"].as_str().unwrap_or_default();
        prop_assert!(
            matches!(kind, "ADDED" | "MODIFIED" | "DELETED"),
            "unexpected event {}",
            e
        );
        let obj = &e["object"];
        let k = key_of(obj);
        let present = self.state.contains_key(&k);
        match kind {
            "ADDED" => prop_assert!(!present, "ADDED for a name the watcher has: {}", e),
            _ => prop_assert!(present, "{} for a name the watcher lacks: {}", kind, e),
        }
        if kind == "DELETED" {
            self.state.remove(&k);
        } else {
            self.state.insert(k, obj_of(obj));
        }
        let v = parts(obj["metadata"]["resourceVersion"].as_str().unwrap());
        prop_assert!(
            v.0 >= self.last.0 && v.1 >= self.last.1,
            "a version part went back: {:?} after {:?}",
            v,
            self.last
        );
        self.last = v;
        self.events += 1;
        Ok(())
    }

    /// Reads events until a bookmark at or past `target` (the set's counter and the
    /// table's last change id; 10 s at most); the state must then equal `want`.
    async fn settle(
        &mut self,
        target: (u64, u64),
        want: &BTreeMap<Key, Obj>,
    ) -> Result<(), TestCaseError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let e = self.stream.next(left).await;
            prop_assert!(
                e.is_some(),
                "no bookmark past {:?}; state {:?}, want {:?}",
                target,
                self.state,
                want
            );
            let e = e.unwrap();
            if e["type"] == "BOOKMARK" {
                let v = parts(e["object"]["metadata"]["resourceVersion"].as_str().unwrap());
                if v.0 >= target.0 && v.1 >= target.1 {
                    prop_assert_eq!(&self.state, want, "the watcher's state at {:?}", v);
                    return Ok(());
                }
                continue;
            }
            self.apply(&e)?;
        }
    }
}

fn cases() -> u32 {
    std::env::var("KUBEDOJO_PG_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

/// Counters of what the cases exercised.
#[derive(Default)]
struct Seen {
    pages: usize,
    items: usize,
    after_writes: usize,
    events: usize,
    conflicts: usize,
    gets: usize,
}

async fn run_case(u: &Union, case: &Case, seen: &mut Seen) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    u.apply(&mut model, &case.initial, true).await;
    let initial = model.clone();
    let (code, list, _) = get_json(&u.app, ALL).await;
    prop_assert_eq!(code, 200, "{}", list);
    let initial_rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    // The watch, from the list's version or from scratch.
    let mut watcher = if case.watch_from_list {
        let (code, list, _) = get_json(&u.app, &case.watch.path(&[])).await;
        prop_assert_eq!(code, 200, "{}", list);
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        let state: BTreeMap<Key, Obj> = items(&list).into_iter().collect();
        let want: BTreeMap<Key, Obj> = case.watch.expected(&model.served()).into_iter().collect();
        prop_assert_eq!(&state, &want, "the watch's initial list");
        let resp = request(
            &u.app,
            &case.watch.path(&[
                "watch=true".into(),
                "allowWatchBookmarks=true".into(),
                format!("resourceVersion={rv}"),
            ]),
        )
        .await;
        Watcher {
            stream: EventStream::new(resp),
            state,
            last: parts(&rv),
            events: 0,
        }
    } else {
        let resp = request(
            &u.app,
            &case
                .watch
                .path(&["watch=true".into(), "allowWatchBookmarks=true".into()]),
        )
        .await;
        Watcher {
            stream: EventStream::new(resp),
            state: BTreeMap::new(),
            last: (0, 0),
            events: 0,
        }
    };

    for step in &case.steps {
        u.apply(&mut model, step, false).await;
    }
    let served = model.served();
    seen.conflicts += served
        .keys()
        .filter(|k| {
            [&model.before, &model.table, &model.after]
                .iter()
                .filter(|m| m.contains_key(*k))
                .count()
                > 1
        })
        .count();

    // Paged list; the `between` changes land after the first page.
    let want = case.list.expected(&served);
    let mut got = Vec::new();
    let mut token: Option<String> = None;
    let mut first_rv: Option<String> = None;
    for page in 0.. {
        let mut extra = vec![];
        if case.limit > 0 {
            extra.push(format!("limit={}", case.limit));
        }
        if let Some(t) = &token {
            extra.push(format!("continue={}", escape(t)));
        }
        let (code, list, _) = get_json(&u.app, &case.list.path(&extra)).await;
        prop_assert_eq!(code, 200, "page {}: {}", page, list);
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        match &first_rv {
            None => first_rv = Some(rv),
            Some(first) => prop_assert_eq!(first, &rv, "every page at the first page's version"),
        }
        let page_items = items(&list);
        seen.pages += 1;
        seen.items += page_items.len();
        if page > 0 && !case.between.is_empty() {
            seen.after_writes += 1;
        }
        token = list["metadata"]["continue"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if token.is_some() {
            prop_assert_eq!(
                page_items.len(),
                case.limit,
                "page {} with a continue is full",
                page
            );
        } else if case.limit > 0 {
            prop_assert!(page_items.len() <= case.limit);
        }
        got.extend(page_items);
        if token.is_none() {
            break;
        }
        if page == 0 {
            u.apply(&mut model, &case.between, false).await;
        }
        prop_assert!(page < 100, "paging does not end");
    }
    prop_assert_eq!(
        &got,
        &want,
        "the pages, against the model at the first page"
    );

    // The initial state, still listed exactly at its version (the set's kept snapshot,
    // the table's change log undone).
    let (code, exact, _) = get_json(
        &u.app,
        &case.list.path(&[
            format!("resourceVersion={initial_rv}"),
            "resourceVersionMatch=Exact".into(),
        ]),
    )
    .await;
    prop_assert_eq!(code, 200, "Exact at {}: {}", initial_rv, exact);
    prop_assert_eq!(
        items(&exact),
        case.list.expected(&initial.served()),
        "a list at the initial version"
    );

    // Now: a whole list and gets.
    let served = model.served();
    let (code, list, _) = get_json(&u.app, &case.list.path(&[])).await;
    prop_assert_eq!(code, 200);
    prop_assert_eq!(
        items(&list),
        case.list.expected(&served),
        "a list after the changes"
    );
    for (ns, name) in &case.gets {
        let (code, item, _) = get_json(&u.app, &format!("{}/{name}", ns_path(ns))).await;
        seen.gets += 1;
        match served.get(&(ns.clone(), name.clone())) {
            Some(o) => {
                prop_assert_eq!(code, 200, "get {}/{}: {}", ns, name, item);
                prop_assert_eq!(&obj_of(&item), o, "get {}/{}", ns, name);
            }
            None => prop_assert_eq!(code, 404, "get {}/{}: {}", ns, name, item),
        }
    }

    // The watcher ends in the model's state.
    let want: BTreeMap<Key, Obj> = case.watch.expected(&served).into_iter().collect();
    let id: i64 = u
        .client
        .query_one(
            &format!("SELECT coalesce(max(id), 0) FROM {}", u.changes),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let target = (u.records.snapshot().seq, id as u64);
    watcher.settle(target, &want).await?;
    seen.events += watcher.events;
    Ok(())
}

#[test]
fn the_union_equals_the_model() {
    let cases = cases();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pg = TestPostgres::start();
    let u = rt.block_on(Union::start(&pg, "u_diff"));
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let started = std::time::Instant::now();
    let seen = std::sync::Mutex::new(Seen::default());
    let result = runner.run(&case(), |case| {
        rt.block_on(run_case(&u, &case, &mut seen.lock().unwrap()))
    });
    let seen = seen.into_inner().unwrap();
    eprintln!(
        "{cases} union cases in {:?}: {} pages, {} items, {} pages read after writes, {} watch events, {} names on two sides, {} gets",
        started.elapsed(),
        seen.pages,
        seen.items,
        seen.after_writes,
        seen.events,
        seen.conflicts,
        seen.gets
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    // The generated cases exercise something.
    assert!(seen.items > cases as usize, "{} items", seen.items);
    assert!(seen.pages > cases as usize, "{} pages", seen.pages);
    assert!(seen.after_writes > 0, "no page was read after writes");
    assert!(seen.events > cases as usize, "{} events", seen.events);
    assert!(seen.conflicts > 0, "no name was on two sides");
}
