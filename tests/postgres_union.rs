//! A `kind: postgres` table source combined with in-memory sources (a file source) in
//! one `--sources-config`, against a real PostgreSQL server (tests/common/postgres.rs):
//! the union served through the API built exactly as the server builds it
//! (`load_records`, `start_postgres`, `records_backend`), written with psql and by
//! editing the records file.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubedojo_data_api::records::RecordSet;
use kubedojo_data_api::records::postgres::RunningTable;
use kubedojo_data_api::runtime::{AppParts, build_app, records_backend};
use kubedojo_data_api::server::app::App;
use serde_json::Value;

use common::pg_app::{
    ALL, EventStream, allow_all, apply, feed_up, get_json, names, ns_path, request, shared_pg,
    start_sources,
};
use common::postgres::TestPostgres;

/// A server whose DataRecords are a file source and a table source.
struct Union {
    app: App,
    records: Arc<RecordSet>,
    running: RunningTable,
    file: PathBuf,
    schema: String,
    _dir: tempfile::TempDir,
}

/// Which source the configuration lists first.
#[derive(Clone, Copy)]
enum First {
    File,
    Postgres,
}

fn record_yaml(ns: &str, name: &str, labels: &str, value: &str) -> String {
    format!(
        "- metadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}\n  spec: {{source: file, data: {{v: \"{value}\"}}}}\n"
    )
}

async fn union_on(pg: &TestPostgres, schema: &str, first: First, records: &str) -> Union {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("records.yaml");
    std::fs::write(&file, records).unwrap();
    let file_source = format!("  - {{kind: file, path: {}}}\n", file.display());
    let table_source =
        format!("  - {{kind: postgres, connection: main, schema: {schema}, migrate: true}}\n");
    let sources = match first {
        First::File => format!("{file_source}{table_source}"),
        First::Postgres => format!("{table_source}{file_source}"),
    };
    let (records, running) = start_sources(pg, dir.path(), &sources).await;
    assert_eq!(
        running.union,
        Some(match first {
            First::File => 1,
            First::Postgres => 0,
        })
    );
    let mut parts = AppParts::new(records.clone(), allow_all());
    parts.records_backend = Some(records_backend(&running, &records));
    let app = build_app(parts);
    feed_up(&running).await;
    Union {
        app,
        records,
        running,
        file,
        schema: schema.to_string(),
        _dir: dir,
    }
}

impl Union {
    async fn get(&self, path: &str) -> (u16, Value, http::HeaderMap) {
        get_json(&self.app, path).await
    }

    /// Rewrites the records file and reloads the set (as its refresh loop would).
    async fn write_file(&self, records: &str) {
        std::fs::write(&self.file, records).unwrap();
        assert!(self.records.refresh().await.is_empty());
    }

    fn table(&self) -> String {
        format!("{}.datarecords", self.schema)
    }

    async fn watch(&self, query: &str) -> EventStream {
        EventStream::new(request(&self.app, &format!("{ALL}?watch=true&{query}")).await)
    }
}

fn record_path(ns: &str, name: &str) -> String {
    format!("{}/{name}", ns_path(ns))
}

/// `(seq, id)` of a composite version `<epoch>.<seq>_p<id>`.
fn parts(rv: &str) -> (String, u64, u64) {
    let (mem, id) = rv
        .split_once("_p")
        .unwrap_or_else(|| panic!("not composite: {rv}"));
    let (epoch, seq) = mem.split_once('.').unwrap();
    assert_eq!(epoch.len(), 12, "{rv}");
    (epoch.to_string(), seq.parse().unwrap(), id.parse().unwrap())
}

fn data_v(item: &Value) -> &str {
    item["spec"]["data"]["v"].as_str().unwrap_or("")
}

fn insert(table: &str, ns: &str, name: &str, labels: &str, v: &str) -> String {
    format!(
        "INSERT INTO {table} (namespace, name, labels, data) VALUES ('{ns}', '{name}', '{{{labels}}}', '{{\"v\":\"{v}\"}}')"
    )
}

/// Reads events until `n` non-bookmark ones arrived (panics after 10 s).
/// "TYPE name" of each watch event, in order.
fn event_kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["type"].as_str().unwrap(),
                e["object"]["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

async fn events(w: &mut EventStream, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let e = w
            .next(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("only {} of {n} events: {out:?}", out.len()));
        if e["type"] != "BOOKMARK" {
            out.push(e);
        }
    }
    out
}

/// Every page of a list with `limit`, running `between` after the first page.
async fn pages(
    u: &Union,
    query: &str,
    limit: usize,
    between: impl AsyncFnOnce(),
) -> (Vec<String>, usize, String) {
    let mut between = Some(between);
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    let mut count = 0;
    let mut first_rv = String::new();
    loop {
        let mut path = format!("{ALL}?limit={limit}&{query}");
        if let Some(t) = &token {
            path.push_str(&format!("&continue={t}"));
        }
        let (code, page, _) = u.get(&path).await;
        assert_eq!(code, 200, "{page}");
        count += 1;
        let rv = page["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        if first_rv.is_empty() {
            first_rv = rv.clone();
        }
        assert_eq!(rv, first_rv, "every page shows the first page's version");
        assert!(page["items"].as_array().unwrap().len() <= limit);
        for i in page["items"].as_array().unwrap() {
            all.push(format!(
                "{}/{}={}",
                i["metadata"]["namespace"].as_str().unwrap(),
                i["metadata"]["name"].as_str().unwrap(),
                data_v(i)
            ));
        }
        if let Some(f) = between.take() {
            f().await;
        }
        match page["metadata"]["continue"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return (all, count, first_rv),
        }
    }
}

fn file_records() -> String {
    [
        record_yaml("default", "a-file", "app: web", "f1"),
        record_yaml("team-b", "m-file", "app: api", "f2"),
        record_yaml("zz", "last-file", "app: web", "f3"),
    ]
    .concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_are_listed_got_and_paged_at_one_version() {
    let pg = shared_pg();
    let u = union_on(&pg, "u_list", First::File, &file_records()).await;
    let t = u.table();
    pg.psql(&insert(&t, "default", "b-row", "\"app\":\"web\"", "r1"));
    pg.psql(&insert(&t, "team-b", "a-row", "\"app\":\"api\"", "r2"));
    pg.psql(&insert(&t, "team-b", "z-row", "\"app\":\"web\"", "r3"));

    let (code, list, _) = u.get(ALL).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(
        names(&list),
        [
            "default/a-file",
            "default/b-row",
            "team-b/a-row",
            "team-b/m-file",
            "team-b/z-row",
            "zz/last-file"
        ]
    );
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap();
    let (epoch, seq, id) = parts(rv);
    assert_eq!(epoch, u.records.epoch().to_string());
    assert_eq!(seq, u.records.snapshot().seq);
    // The list reads the change log's head itself; the one listener may see that change's
    // NOTIFY a moment later. Once it has, both name the same change (never one beyond it).
    let deadline = Instant::now() + Duration::from_secs(10);
    while u.running.feed.last() < id && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(id, u.running.feed.last());

    // Selectors apply to both sides; a namespace path scopes both.
    let (_, web, _) = u.get(&format!("{ALL}?labelSelector=app%3Dweb")).await;
    assert_eq!(
        names(&web),
        [
            "default/a-file",
            "default/b-row",
            "team-b/z-row",
            "zz/last-file"
        ]
    );
    let (_, team_b, _) = u
        .get(&format!("{}?labelSelector=app%21%3Dweb", ns_path("team-b")))
        .await;
    assert_eq!(names(&team_b), ["team-b/a-row", "team-b/m-file"]);
    let (_, by_name, _) = u
        .get(&format!("{ALL}?fieldSelector=metadata.name%3Dz-row"))
        .await;
    assert_eq!(names(&by_name), ["team-b/z-row"]);

    // Get answers from either side.
    let (code, a, _) = u.get(&record_path("default", "a-file")).await;
    assert_eq!((code, data_v(&a)), (200, "f1"));
    let (code, b, _) = u.get(&record_path("team-b", "a-row")).await;
    assert_eq!((code, data_v(&b)), (200, "r2"));
    let (code, missing, _) = u.get(&record_path("default", "nope")).await;
    assert_eq!(code, 404, "{missing}");

    // Pages of 2: writes on both sides after the first page do not show in the later
    // pages (they show the first page's state: the set's kept snapshot, the table's
    // change log undone).
    let before: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}/{}={}",
                i["metadata"]["namespace"].as_str().unwrap(),
                i["metadata"]["name"].as_str().unwrap(),
                data_v(i)
            )
        })
        .collect();
    let (paged, count, first_rv) = pages(&u, "", 2, async || {
        pg.psql(&insert(&t, "team-b", "n-row", "", "new"));
        pg.psql(&format!(
            "UPDATE {t} SET data = '{{\"v\":\"changed\"}}' WHERE name = 'z-row'"
        ));
        pg.psql(&format!("DELETE FROM {t} WHERE name = 'a-row'"));
        let mut edited = file_records().replace("f3", "f3-changed");
        edited.push_str(&record_yaml("team-b", "c-file", "", "added"));
        u.write_file(&edited).await;
    })
    .await;
    assert_eq!(paged, before, "a consistent list across pages");
    assert_eq!(count, 3);
    assert_eq!(first_rv, rv);

    // A new list shows every write.
    let (_, after, _) = u.get(ALL).await;
    assert_eq!(
        names(&after),
        [
            "default/a-file",
            "default/b-row",
            "team-b/c-file",
            "team-b/m-file",
            "team-b/n-row",
            "team-b/z-row",
            "zz/last-file"
        ]
    );
    let z = &after["items"][5];
    assert_eq!(data_v(z), "changed");
    assert_eq!(data_v(&after["items"][6]), "f3-changed");

    // Paging with a selector across both sides.
    let (web_pages, _, _) = pages(&u, "labelSelector=app%3Dweb", 1, async || {}).await;
    assert_eq!(
        web_pages,
        [
            "default/a-file=f1",
            "default/b-row=r1",
            "team-b/z-row=changed",
            "zz/last-file=f3-changed"
        ]
    );

    // resourceVersionMatch: Exact at the current version, NotOlderThan an older one.
    let rv = after["metadata"]["resourceVersion"].as_str().unwrap();
    let (code, exact, _) = u
        .get(&format!(
            "{ALL}?resourceVersion={rv}&resourceVersionMatch=Exact"
        ))
        .await;
    assert_eq!(code, 200, "{exact}");
    assert_eq!(names(&exact), names(&after));
    let (code, old_exact, _) = u
        .get(&format!(
            "{ALL}?resourceVersion={first_rv}&resourceVersionMatch=Exact"
        ))
        .await;
    assert_eq!(code, 200, "the set keeps recent snapshots: {old_exact}");
    assert_eq!(names(&old_exact), names(&list));
    let (code, newer, _) = u
        .get(&format!(
            "{ALL}?resourceVersion={first_rv}&resourceVersionMatch=NotOlderThan"
        ))
        .await;
    assert_eq!(code, 200);
    assert_eq!(names(&newer), names(&after));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_watch_sees_psql_and_file_changes_and_resumes() {
    let pg = shared_pg();
    let u = union_on(&pg, "u_watch", First::File, &file_records()).await;
    let t = u.table();
    pg.psql(&insert(&t, "default", "b-row", "\"app\":\"web\"", "r1"));
    let (_, list, _) = u.get(ALL).await;
    let list_rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    // From scratch: every served object as ADDED, then changes.
    let mut fresh = u.watch("").await;
    let added = events(&mut fresh, 4).await;
    assert!(added.iter().all(|e| e["type"] == "ADDED"));
    let mut state = BTreeMap::new();
    for e in &added {
        apply(&mut state, e);
    }
    assert_eq!(state.len(), 4);

    let mut w = u.watch(&format!("resourceVersion={list_rv}")).await;
    let mut sel = u
        .watch(&format!(
            "resourceVersion={list_rv}&labelSelector=app%3Dweb"
        ))
        .await;
    // One change at a time (the two sides reach the watcher independently).
    let mut got = Vec::new();
    pg.psql(&insert(&t, "team-b", "new-row", "\"app\":\"web\"", "n1"));
    got.extend(events(&mut w, 1).await);
    u.write_file(&file_records().replace("f2", "f2-changed"))
        .await;
    got.extend(events(&mut w, 1).await);
    pg.psql(&format!(
        "UPDATE {t} SET data = '{{\"v\":\"r1b\"}}', labels = '{{}}' WHERE name = 'b-row'"
    ));
    got.extend(events(&mut w, 1).await);
    u.write_file(
        &file_records()
            .replace("f2", "f2-changed")
            .replace(&record_yaml("zz", "last-file", "app: web", "f3"), ""),
    )
    .await;
    got.extend(events(&mut w, 1).await);
    pg.psql(&format!("DELETE FROM {t} WHERE name = 'new-row'"));
    got.extend(events(&mut w, 1).await);
    let kinds = event_kinds(&got);
    assert_eq!(
        kinds,
        [
            "ADDED new-row",
            "MODIFIED m-file",
            "MODIFIED b-row",
            "DELETED last-file",
            "DELETED new-row"
        ]
    );
    // Composite versions, each part monotonic, both moving.
    let versions: Vec<(String, u64, u64)> = got
        .iter()
        .map(|e| parts(e["object"]["metadata"]["resourceVersion"].as_str().unwrap()))
        .collect();
    let (_, seq0, id0) = parts(&list_rv);
    let mut last = (seq0, id0);
    for (_, seq, id) in &versions {
        assert!(*seq >= last.0 && *id >= last.1, "{versions:?}");
        assert!((*seq, *id) != last, "each event moves a part: {versions:?}");
        last = (*seq, *id);
    }
    assert!(last.0 > seq0 && last.1 > id0);
    assert_eq!(data_v(&got[2]["object"]), "r1b");

    // With a selector: b-row leaving it is DELETED, last-file's deletion too.
    let got_sel = events(&mut sel, 4).await;
    let kinds = event_kinds(&got_sel);
    assert_eq!(
        kinds,
        [
            "ADDED new-row",
            "DELETED b-row",
            "DELETED last-file",
            "DELETED new-row"
        ]
    );

    // Resuming from the version of the second event replays the rest (the set's
    // history and the table's log; the two sides may interleave differently, each in
    // its order) and ends in the same state.
    let resume = got[1]["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap();
    let mut again = u.watch(&format!("resourceVersion={resume}")).await;
    let replayed = events(&mut again, 3).await;
    let summary = |events: &[Value]| {
        let mut v: Vec<String> = events
            .iter()
            .map(|e| {
                format!(
                    "{} {} {}",
                    e["type"],
                    e["object"]["metadata"]["name"],
                    data_v(&e["object"])
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(summary(&replayed), summary(&got[2..]));
    let mut last = parts(resume);
    for e in &replayed {
        let p = parts(e["object"]["metadata"]["resourceVersion"].as_str().unwrap());
        assert!(
            p.1 >= last.1 && p.2 >= last.2,
            "monotonic per part: {replayed:?}"
        );
        last = p;
    }
    assert_eq!((last.1, last.2), (versions[4].1, versions[4].2));
    assert!(again.next(Duration::from_millis(300)).await.is_none());

    // The fresh watcher's view equals a new list.
    for e in events(&mut fresh, 5).await {
        apply(&mut state, &e);
    }
    let (_, now, _) = u.get(ALL).await;
    let listed: BTreeMap<String, Value> = now["items"]
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
                i["spec"]["data"].clone(),
            )
        })
        .collect();
    assert_eq!(state, listed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_earlier_source_wins_a_name_in_get_list_and_watch() {
    let pg = shared_pg();
    // The file comes first: its records hide rows of the same name.
    let records = [
        record_yaml("default", "same", "app: file", "from-file"),
        record_yaml("default", "other", "", "o"),
    ]
    .concat();
    let u = union_on(&pg, "u_conf_a", First::File, &records).await;
    let t = u.table();
    let (_, list, _) = u.get(ALL).await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut w = u.watch(&format!("resourceVersion={rv}")).await;
    let conflicts = u.records.conflicts_seen();
    pg.psql(&insert(
        &t,
        "default",
        "same",
        "\"app\":\"row\"",
        "from-row",
    ));
    pg.psql(&insert(&t, "default", "zrow", "", "z"));
    let (code, got, _) = u.get(&record_path("default", "same")).await;
    assert_eq!((code, data_v(&got)), (200, "from-file"));
    let (_, list, _) = u.get(ALL).await;
    assert_eq!(
        names(&list),
        ["default/other", "default/same", "default/zrow"]
    );
    assert_eq!(data_v(&list["items"][1]), "from-file");
    // The hidden row matches this selector, the served record does not: not listed.
    let (_, by_label, _) = u.get(&format!("{ALL}?labelSelector=app%3Drow")).await;
    assert_eq!(names(&by_label), Vec::<String>::new());
    // The watch never saw the hidden row.
    let e = events(&mut w, 1).await;
    assert_eq!(e[0]["object"]["metadata"]["name"], "zrow");
    assert_eq!(u.records.conflicts_seen(), conflicts + 1, "counted once");
    for _ in 0..3 {
        u.get(ALL).await;
        u.get(&record_path("default", "same")).await;
    }
    assert_eq!(u.records.conflicts_seen(), conflicts + 1, "not per request");
    // The file drops it: the row shows (one MODIFIED, no flapping).
    u.write_file(&record_yaml("default", "other", "", "o"))
        .await;
    let e = events(&mut w, 1).await;
    assert_eq!(e[0]["type"], "MODIFIED");
    assert_eq!(data_v(&e[0]["object"]), "from-row");
    let (_, got, _) = u.get(&record_path("default", "same")).await;
    assert_eq!(data_v(&got), "from-row");

    // The table comes first: its rows hide the file's records.
    let records = [
        record_yaml("default", "same", "app: file", "from-file"),
        record_yaml("default", "solo", "app: file", "s"),
    ]
    .concat();
    let u = union_on(&pg, "u_conf_b", First::Postgres, &records).await;
    let t = u.table();
    let (_, list, _) = u.get(ALL).await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut w = u.watch(&format!("resourceVersion={rv}")).await;
    let mut sel = u
        .watch(&format!("resourceVersion={rv}&labelSelector=app%3Dfile"))
        .await;
    pg.psql(&insert(
        &t,
        "default",
        "same",
        "\"app\":\"row\"",
        "from-row",
    ));
    let (_, got, _) = u.get(&record_path("default", "same")).await;
    assert_eq!(data_v(&got), "from-row");
    // The row that wins does not match; the file's record it hides does: not listed.
    let (_, by_label, _) = u.get(&format!("{ALL}?labelSelector=app%3Dfile")).await;
    assert_eq!(names(&by_label), ["default/solo"]);
    let (_, paged, _) = u
        .get(&format!("{ALL}?labelSelector=app%3Dfile&limit=1"))
        .await;
    assert_eq!(names(&paged), ["default/solo"]);
    // The row taking over is one MODIFIED for a plain watch, a DELETED for one whose
    // selector it leaves; its deletion brings the file's record back.
    let e = events(&mut w, 1).await;
    assert_eq!(
        (e[0]["type"].as_str(), data_v(&e[0]["object"])),
        (Some("MODIFIED"), "from-row")
    );
    let e = events(&mut sel, 1).await;
    assert_eq!(
        (
            e[0]["type"].as_str(),
            e[0]["object"]["metadata"]["name"].as_str()
        ),
        (Some("DELETED"), Some("same"))
    );
    // A file change under the row is invisible.
    u.write_file(&records.replace("from-file", "from-file-2"))
        .await;
    let (_, got, _) = u.get(&record_path("default", "same")).await;
    assert_eq!(data_v(&got), "from-row");
    pg.psql(&format!("DELETE FROM {t} WHERE name = 'same'"));
    let e = events(&mut w, 1).await;
    assert_eq!(
        (e[0]["type"].as_str(), data_v(&e[0]["object"])),
        (Some("MODIFIED"), "from-file-2")
    );
    let e = events(&mut sel, 1).await;
    assert_eq!(
        (e[0]["type"].as_str(), data_v(&e[0]["object"])),
        (Some("ADDED"), "from-file-2")
    );
    let (_, got, _) = u.get(&record_path("default", "same")).await;
    assert_eq!(data_v(&got), "from-file-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_part_answers_410_the_future_504_and_garbage_400() {
    let pg = shared_pg();
    let u = union_on(&pg, "u_versions", First::File, &file_records()).await;
    let t = u.table();
    for i in 0..5 {
        pg.psql(&insert(&t, "default", &format!("r{i}"), "", "x"));
    }
    let (_, list, _) = u.get(ALL).await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let (epoch, seq, id) = parts(&rv);

    // Another epoch (a restart, another replica): the in-memory part cannot be served.
    let other = format!(
        "{}{}",
        if epoch.starts_with('0') { "1" } else { "0" },
        &epoch[1..]
    );
    let foreign = format!("{other}.{seq}_p{id}");
    let (code, e, _) = u
        .get(&format!(
            "{ALL}?resourceVersion={foreign}&resourceVersionMatch=Exact"
        ))
        .await;
    assert_eq!((code, e["reason"].as_str()), (410, Some("Expired")), "{e}");
    let mut w = u.watch(&format!("resourceVersion={foreign}")).await;
    let e = w.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (e["type"].as_str(), e["object"]["code"].as_i64()),
        (Some("ERROR"), Some(410))
    );
    // A plain in-memory version or a bare table id is not a version of the union.
    for rv in [format!("{epoch}.{seq}"), id.to_string()] {
        let mut w = u.watch(&format!("resourceVersion={rv}")).await;
        let e = w.next(Duration::from_secs(5)).await.unwrap();
        assert_eq!(e["object"]["code"], 410, "{rv}: {e}");
    }

    // The table part compacted away.
    pg.psql(&format!("SELECT {}.compact(1)", u.schema));
    let old = format!("{epoch}.{seq}_p{}", id - 3);
    let mut w = u.watch(&format!("resourceVersion={old}")).await;
    let e = w.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (e["type"].as_str(), e["object"]["code"].as_i64()),
        (Some("ERROR"), Some(410)),
        "{e}"
    );
    let (code, e, _) = u
        .get(&format!(
            "{ALL}?resourceVersion={old}&resourceVersionMatch=Exact"
        ))
        .await;
    assert_eq!(code, 410, "{e}");

    // From the future, on either part.
    for rv in [
        format!("{epoch}.{}_p{id}", seq + 1),
        format!("{epoch}.{seq}_p{}", id + 100),
    ] {
        let (code, e, headers) = u.get(&format!("{ALL}?resourceVersion={rv}")).await;
        assert_eq!(code, 504, "{rv}: {e}");
        assert_eq!(
            e["details"]["causes"][0]["reason"],
            "ResourceVersionTooLarge"
        );
        assert_eq!(headers["retry-after"], "1");
        let mut w = u.watch(&format!("resourceVersion={rv}")).await;
        let e = w.next(Duration::from_secs(5)).await.unwrap();
        assert_eq!(e["object"]["code"], 504, "{rv}: {e}");
    }

    // Garbage versions and continue tokens: 400, never a panic.
    for rv in [
        "x_p1",
        &format!("{epoch}.{seq}_p"),
        &format!("{epoch}.{seq}_p1_p2"),
        "-1",
    ] {
        let (code, e, _) = u.get(&format!("{ALL}?resourceVersion={rv}")).await;
        assert_eq!(code, 400, "{rv}: {e}");
        let resp = request(&u.app, &format!("{ALL}?watch=true&resourceVersion={rv}")).await;
        assert_eq!(resp.status(), 400, "{rv}");
    }
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    for token in [
        "!!!".to_string(),
        b64("{}"),
        b64(r#"{"v":"kubedojo/v1","rv":"12","ns":"a","name":"b"}"#),
        b64(r#"{"v":"kubedojo/v1","rv":"zz_p1","ns":"a","name":"b"}"#),
    ] {
        let (code, e, _) = u.get(&format!("{ALL}?limit=1&continue={token}")).await;
        assert_eq!(code, 400, "{token}: {e}");
    }
    // A token of another process (epoch): 410 with a token to go on inconsistently.
    let token = b64(&format!(
        r#"{{"v":"kubedojo/v1","rv":"{foreign}","ns":"default","name":"a"}}"#
    ));
    let (code, e, _) = u.get(&format!("{ALL}?limit=1&continue={token}")).await;
    assert_eq!((code, e["reason"].as_str()), (410, Some("Expired")), "{e}");
    let resume = e["metadata"]["continue"]
        .as_str()
        .expect("a resumable token");
    let (code, page, _) = u.get(&format!("{ALL}?limit=100&continue={resume}")).await;
    assert_eq!(code, 200, "{page}");
    assert_eq!(names(&page)[0], "default/a-file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_or_a_restart_answers_410_and_the_relist_misses_nothing() {
    let pg = shared_pg();
    let first = union_on(&pg, "u_restart", First::File, &file_records()).await;
    let t = first.table();
    pg.psql(&insert(&t, "default", "r1", "", "1"));
    let (_, list, _) = first.get(ALL).await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    drop(first);
    // Written while no server runs.
    pg.psql(&insert(&t, "default", "r2", "", "2"));
    let second = union_on(&pg, "u_restart", First::File, &file_records()).await;
    let mut w = second
        .watch(&format!("resourceVersion={rv}&allowWatchBookmarks=true"))
        .await;
    let e = w.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (e["type"].as_str(), e["object"]["code"].as_i64()),
        (Some("ERROR"), Some(410)),
        "{e}"
    );
    assert!(
        w.next(Duration::from_millis(200)).await.is_none(),
        "the stream ends"
    );
    // The client relists (as client-go's reflector does) and watches from there.
    let (_, relist, _) = second.get(ALL).await;
    assert!(names(&relist).contains(&"default/r2".to_string()));
    let rv2 = relist["metadata"]["resourceVersion"].as_str().unwrap();
    let mut w = second.watch(&format!("resourceVersion={rv2}")).await;
    pg.psql(&insert(&t, "default", "r3", "", "3"));
    let e = events(&mut w, 1).await;
    assert_eq!(
        (
            e[0]["type"].as_str(),
            e[0]["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("r3"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_down_lists_are_503_and_winning_records_are_still_got() {
    let mut pg = TestPostgres::start();
    let u = union_on(&pg, "u_down", First::File, &file_records()).await;
    pg.psql(&insert(&u.table(), "default", "row", "", "r"));
    pg.stop();
    let (code, e, headers) = u.get(ALL).await;
    assert_eq!(code, 503, "{e}");
    assert!(headers.contains_key("retry-after"));
    let resp = request(&u.app, &format!("{ALL}?watch=true")).await;
    assert_eq!(resp.status(), 503);
    // The file comes first: its records need no database.
    let (code, a, _) = u.get(&record_path("default", "a-file")).await;
    assert_eq!((code, data_v(&a)), (200, "f1"));
    let (code, _, _) = u.get(&record_path("default", "row")).await;
    assert_eq!(code, 503);
    let resp = request(&u.app, "/readyz").await;
    assert_eq!(resp.status(), 200, "readiness stays up");
    pg.resume();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, list, _) = u.get(ALL).await;
        if code == 200 {
            assert!(names(&list).contains(&"default/row".to_string()));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the list did not come back: {list}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
