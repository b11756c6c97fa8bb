//! The PostgreSQL table source against a real PostgreSQL server (started by the test,
//! see tests/common/postgres.rs): the API answered from SQL, writes made with psql or
//! a second client, the change log, the listener, and the database going away.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kubedojo_data_api::groups::records::DATARECORDS;
use kubedojo_data_api::records::postgres::{TableSourceConfig, start_table};
use serde_json::{Value, json};

use common::pg_app::{ALL, EventStream, apply, connection, names, ns_path, server, shared_pg};
use common::postgres::TestPostgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_are_served_with_selectors_paging_and_versions() {
    let pg = shared_pg();
    let s = server(pg.dsn(), "t_rows").await;
    // Migrating again is a no-op.
    start_table(
        &connection(pg.dsn()),
        &TableSourceConfig::new("t_rows"),
        true,
        &DATARECORDS,
    )
    .await
    .unwrap();
    let t = s.table();
    pg.psql(&format!(
        "INSERT INTO {t} (namespace, name, labels, source, query, data) VALUES
           ('default', 'user-config', '{{\"app\":\"web\",\"tier\":\"front\"}}', 'postgres', 'SELECT 1', '{{\"theme\":\"dark\"}}'),
           ('default', 'flags', '{{\"app\":\"api\"}}', 'redis', '', '{{}}'),
           ('team-b', 'a', '{{}}', 'consul', '', '{{\"k\":\"v\"}}'),
           ('team-b', 'b', '{{\"app\":\"web\"}}', 'consul', '', '{{}}'),
           ('team-c', 'x', '{{\"n\":\"7\"}}', 'consul', '', '{{}}')"
    ));

    let (code, list, _) = s.get(ALL).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["kind"], "DataRecordList");
    assert_eq!(
        names(&list),
        [
            "default/flags",
            "default/user-config",
            "team-b/a",
            "team-b/b",
            "team-c/x"
        ]
    );
    let rv: u64 = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let max_id: u64 = pg
        .psql(&format!("SELECT max(id) FROM {}.changes", s.schema))
        .parse()
        .unwrap();
    assert_eq!(
        rv, max_id,
        "the list resourceVersion is the newest change id"
    );
    // Every item's resourceVersion is its own change id.
    for item in list["items"].as_array().unwrap() {
        let v: u64 = item["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(v > 1 && v <= rv, "{item}");
    }

    // get
    let (code, obj, _) = s.get(&format!("{}/user-config", ns_path("default"))).await;
    assert_eq!(code, 200, "{obj}");
    assert_eq!(obj["spec"]["data"]["theme"], "dark");
    assert_eq!(obj["spec"]["query"], "SELECT 1");
    assert_eq!(obj["status"]["syncStatus"], "Current");
    let (code, obj, _) = s.get(&format!("{}/nope", ns_path("default"))).await;
    assert_eq!(code, 404, "{obj}");
    assert_eq!(obj["reason"], "NotFound");

    // Selectors pushed down.
    for (q, want) in [
        (
            "labelSelector=app%3Dweb",
            vec!["default/user-config", "team-b/b"],
        ),
        (
            "labelSelector=app%21%3Dweb",
            vec!["default/flags", "team-b/a", "team-c/x"],
        ),
        (
            "labelSelector=app+in+(api,web),tier",
            vec!["default/user-config"],
        ),
        (
            "labelSelector=app+notin+(web)",
            vec!["default/flags", "team-b/a", "team-c/x"],
        ),
        ("labelSelector=%21app", vec!["team-b/a", "team-c/x"]),
        ("labelSelector=n%3E5", vec!["team-c/x"]),
        (
            "fieldSelector=metadata.namespace%3Dteam-b",
            vec!["team-b/a", "team-b/b"],
        ),
        (
            "fieldSelector=metadata.name%21%3Da,metadata.namespace%3Dteam-b",
            vec!["team-b/b"],
        ),
    ] {
        let (code, list, _) = s.get(&format!("{ALL}?{q}")).await;
        assert_eq!(code, 200, "{q}: {list}");
        assert_eq!(names(&list), want, "{q}");
    }
    let (_, list, _) = s.get(&ns_path("team-b")).await;
    assert_eq!(names(&list), ["team-b/a", "team-b/b"]);

    // Paging: two items per page; a change between pages does not show up in them.
    let (_, p1, _) = s.get(&format!("{ALL}?limit=2")).await;
    assert_eq!(names(&p1), ["default/flags", "default/user-config"]);
    let token = p1["metadata"]["continue"].as_str().unwrap().to_string();
    let page_rv = p1["metadata"]["resourceVersion"].clone();
    pg.psql(&format!(
        "BEGIN; DELETE FROM {t} WHERE name = 'b'; INSERT INTO {t} (namespace, name) VALUES ('team-b', 'aa');
         UPDATE {t} SET data = '{{\"k\":\"changed\"}}' WHERE name = 'a'; COMMIT;"
    ));
    let (_, p2, _) = s.get(&format!("{ALL}?limit=2&continue={token}")).await;
    assert_eq!(names(&p2), ["team-b/a", "team-b/b"], "{p2}");
    assert_eq!(
        p2["items"][0]["spec"]["data"]["k"], "v",
        "page 2 shows the first page's state"
    );
    assert_eq!(p2["metadata"]["resourceVersion"], page_rv);
    let token = p2["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, p3, _) = s.get(&format!("{ALL}?limit=2&continue={token}")).await;
    assert_eq!(names(&p3), ["team-c/x"]);
    assert!(p3["metadata"].get("continue").is_none());

    // Exact at the old version, and the current state.
    let (_, old, _) = s
        .get(&format!(
            "{ALL}?resourceVersion={}&resourceVersionMatch=Exact",
            page_rv.as_str().unwrap()
        ))
        .await;
    assert_eq!(
        names(&old),
        [
            "default/flags",
            "default/user-config",
            "team-b/a",
            "team-b/b",
            "team-c/x"
        ]
    );
    let (_, now, _) = s.get(ALL).await;
    assert_eq!(
        names(&now),
        [
            "default/flags",
            "default/user-config",
            "team-b/a",
            "team-b/aa",
            "team-c/x"
        ]
    );
    // NotOlderThan a newer version than the database has: 504 ResourceVersionTooLarge.
    let (code, e, _) = s.get(&format!("{ALL}?resourceVersion=999999999")).await;
    assert_eq!(code, 504, "{e}");
    assert_eq!(
        e["details"]["causes"][0]["reason"],
        "ResourceVersionTooLarge"
    );

    // Compaction: the old version is gone; a continue token at it is 410 with a
    // resumable token; Exact is 410.
    pg.psql(&format!("SELECT {}.compact(0)", s.schema));
    let (code, e, _) = s.get(&format!("{ALL}?limit=2&continue={token}")).await;
    assert_eq!(code, 410, "{e}");
    assert!(e["metadata"]["continue"].is_string(), "{e}");
    let (code, _, _) = s
        .get(&format!(
            "{ALL}?resourceVersion={}&resourceVersionMatch=Exact",
            page_rv.as_str().unwrap()
        ))
        .await;
    assert_eq!(code, 410);

    // A bad row is skipped (with a log line and a metric naming it), the list is not.
    pg.psql(&format!(
        "INSERT INTO {t} (namespace, name, data) VALUES ('default', 'bad-data', '{{\"k\": [1, 2]}}'), ('default', 'Bad_Name', '{{}}')"
    ));
    let (code, list, _) = s.get(&ns_path("default")).await;
    assert_eq!(code, 200);
    assert_eq!(names(&list), ["default/flags", "default/user-config"]);
    let metrics = kubedojo_data_api::telemetry::Telemetry::new(10.0).encode();
    assert!(
        metrics.contains("kubedojo_datarecords_bad_rows_total{source=\"postgres:main/t_rows\",namespace=\"default\",name=\"bad-data\"}"),
        "{metrics}"
    );
    // TRUNCATE is refused (it would bypass the change log).
    assert!(pg.psql_fails(&format!("TRUNCATE {t}")));
    assert_eq!(pg.psql(&format!("SELECT count(*) FROM {t}")), "7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_selectors_use_the_gin_index() {
    let pg = shared_pg();
    let _s = server(pg.dsn(), "t_index").await;
    for q in [
        "labels @> '{\"app\":\"web\"}'",
        "labels ? 'app'",
        "(labels @> '{\"app\":\"a\"}' OR labels @> '{\"app\":\"b\"}')",
    ] {
        let plan = pg.psql(&format!(
            "SET enable_seqscan = off; EXPLAIN SELECT * FROM t_index.datarecords WHERE {q}"
        ));
        assert!(plan.contains("datarecords_labels"), "{q}: {plan}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_see_every_change_through_concurrent_writers_and_a_killed_listener() {
    let pg = shared_pg();
    let s = server(pg.dsn(), "t_watch").await;
    let t = s.table();
    pg.psql(&format!(
        "INSERT INTO {t} (namespace, name, labels, data) VALUES ('w', 'seed', '{{\"color\":\"red\"}}', '{{\"v\":\"0\"}}')"
    ));
    let (_, list, _) = s.get(&ns_path("w")).await;
    let list_rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    // Three watchers: all from the list's version, red only, and one from "now" (ADDED first).
    let mut all = EventStream::new(
        s.request(&format!(
            "{}?watch=1&resourceVersion={list_rv}",
            ns_path("w")
        ))
        .await,
    );
    let mut red = EventStream::new(
        s.request(&format!(
            "{}?watch=1&resourceVersion={list_rv}&labelSelector=color%3Dred",
            ns_path("w")
        ))
        .await,
    );
    let mut fresh = EventStream::new(s.request(&format!("{}?watch=1", ns_path("w"))).await);
    // Label changes move records in and out of this one too (`!=` is NOT @> in SQL).
    let mut not_red = EventStream::new(
        s.request(&format!(
            "{}?watch=1&resourceVersion={list_rv}&labelSelector=color%21%3Dred",
            ns_path("w")
        ))
        .await,
    );

    // Writers: four concurrent clients doing inserts, updates (including label moves)
    // and deletes, while the listening connection is killed twice.
    let dsn = pg.dsn();
    let mut writers = Vec::new();
    for w in 0..4 {
        let dsn = dsn.clone();
        let t = t.clone();
        writers.push(tokio::spawn(async move {
            let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            for i in 0..40 {
                let name = format!("r{w}-{}", i % 10);
                let color = if i % 3 == 0 { "red" } else { "blue" };
                let sql = match i % 4 {
                    0 | 1 => format!(
                        "INSERT INTO {t} (namespace, name, labels, data) VALUES ('w', '{name}', '{{\"color\":\"{color}\"}}', '{{\"v\":\"{i}\"}}')
                         ON CONFLICT (namespace, name) DO UPDATE SET labels = EXCLUDED.labels, data = EXCLUDED.data"
                    ),
                    2 => format!(
                        "UPDATE {t} SET labels = '{{\"color\":\"{color}\"}}', data = '{{\"v\":\"u{i}\"}}' WHERE namespace = 'w' AND name = '{name}'"
                    ),
                    _ => format!("DELETE FROM {t} WHERE namespace = 'w' AND name = '{name}'"),
                };
                client.batch_execute(&sql).await.unwrap();
            }
        }));
    }
    let killer = {
        let dsn = dsn.clone();
        tokio::spawn(async move {
            let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut killed = 0u64;
            for _ in 0..2 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                let rows = client
                    .query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'kubedojo-data-api listener t_watch'",
                        &[],
                    )
                    .await
                    .unwrap();
                killed += rows.len() as u64;
            }
            killed
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    let killed = killer.await.unwrap();
    assert!(killed >= 1, "the listening connection was killed");
    // A bad row (a label value Kubernetes would refuse) is skipped by every watcher.
    pg.psql(&format!(
        "INSERT INTO {t} (namespace, name, labels, data) VALUES ('w', 'bad-label', '{{\"color\":\"not valid!\"}}', '{{}}')"
    ));
    pg.psql(&format!(
        "INSERT INTO {t} (namespace, name, labels, data) VALUES ('w', 'done', '{{\"color\":\"red\"}}', '{{}}')"
    ));
    let red_rv: String = pg.psql(&format!("SELECT max(id) FROM {}.changes", s.schema));
    pg.psql(&format!(
        "INSERT INTO {t} (namespace, name, labels, data) VALUES ('w', 'done-blue', '{{\"color\":\"blue\"}}', '{{}}')"
    ));
    let final_rv: String = pg.psql(&format!("SELECT max(id) FROM {}.changes", s.schema));

    // The table as each watcher should see it.
    let rows = pg.psql(&format!(
        "SELECT namespace || '/' || name || ' ' || data::text || ' ' || coalesce(labels->>'color', '') FROM {t} WHERE namespace = 'w' AND name <> 'bad-label' ORDER BY 1"
    ));
    let mut want_all = BTreeMap::new();
    let mut want_red = BTreeMap::new();
    let mut want_not_red = BTreeMap::new();
    for line in rows.lines() {
        let mut parts = line.splitn(2, ' ');
        let key = parts.next().unwrap().to_string();
        let rest = parts.next().unwrap();
        let (data, color) = rest.rsplit_once(' ').unwrap();
        let data: Value = serde_json::from_str(data).unwrap();
        if color == "red" {
            want_red.insert(key.clone(), data.clone());
        } else {
            want_not_red.insert(key.clone(), data.clone());
        }
        want_all.insert(key, data);
    }

    for (label, stream, want, last) in [
        ("all", &mut all, &want_all, &final_rv),
        ("red", &mut red, &want_red, &red_rv),
        ("not red", &mut not_red, &want_not_red, &final_rv),
        ("fresh", &mut fresh, &want_all, &final_rv),
    ] {
        let mut state: BTreeMap<String, Value> = BTreeMap::new();
        if label == "all" || label == "red" {
            // The list at list_rv held the red seed.
            state.insert("w/seed".into(), json!({"v": "0"}));
        }
        let mut last_rv = String::new();
        let mut seen_rvs = std::collections::HashSet::new();
        while last_rv != *last {
            let Some(e) = stream.next(Duration::from_secs(10)).await else {
                panic!("{label}: stream ended at {last_rv}, want {last}");
            };
            assert_ne!(e["type"], "ERROR", "{label}: {e}");
            let key = format!(
                "{}/{}",
                e["object"]["metadata"]["namespace"].as_str().unwrap_or(""),
                e["object"]["metadata"]["name"].as_str().unwrap_or("")
            );
            // As kube-apiserver's watch cache: ADDED for what the watcher lacks (also a
            // record moving into its selector), MODIFIED and DELETED for what it has.
            match e["type"].as_str().unwrap() {
                "ADDED" => assert!(!state.contains_key(&key), "{label}: ADDED for a known {e}"),
                "MODIFIED" | "DELETED" => {
                    assert!(
                        state.contains_key(&key),
                        "{label}: event for an unknown {e}"
                    )
                }
                _ => {}
            }
            assert_ne!(key, "w/bad-label", "{label}: a bad row reached a watcher");
            if let Some(rv) = apply(&mut state, &e) {
                if label != "fresh"
                    || e["type"] != "ADDED"
                    || rv.parse::<u64>().unwrap() > list_rv.parse().unwrap()
                {
                    // No event is delivered twice (initial ADDED events may share versions).
                    assert!(
                        seen_rvs.insert(rv.clone()),
                        "{label}: duplicate event at {rv}: {e}"
                    );
                }
                last_rv = rv;
            }
        }
        assert_eq!(
            &state, want,
            "{label}: the watcher's final state is the table"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_is_503_and_recovers_without_a_restart() {
    // Its own server: this test stops it.
    let mut pg = TestPostgres::start();
    let s = server(pg.dsn(), "t_down").await;
    let t = s.table();
    pg.psql(&format!(
        "INSERT INTO {t} (namespace, name) VALUES ('d', 'one')"
    ));
    let (code, _, _) = s.get(&ns_path("d")).await;
    assert_eq!(code, 200);
    let mut watch = EventStream::new(s.request(&format!("{}?watch=1", ns_path("d"))).await);
    assert_eq!(
        watch.next(Duration::from_secs(5)).await.unwrap()["type"],
        "ADDED"
    );

    pg.stop();
    let started = Instant::now();
    for path in [
        ns_path("d"),
        format!("{}/one", ns_path("d")),
        format!("{}?watch=1", ns_path("d")),
    ] {
        let (code, e, headers) = s.get(&path).await;
        assert_eq!(code, 503, "{path}: {e}");
        assert_eq!(e["reason"], "ServiceUnavailable", "{e}");
        assert_eq!(headers.get("retry-after").unwrap(), "1");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answers came within the timeouts ({:?})",
        started.elapsed()
    );
    // The open watch ends cleanly (no ERROR event pretending anything).
    let end = watch.next(Duration::from_secs(15)).await;
    assert!(end.is_none(), "the watch ended: {end:?}");
    // Discovery and health are untouched: readiness stays up (an unready pod would
    // take the whole API group down through the aggregator).
    let (code, _, _) = s.get("/apis/data.kubedojo.io/v1alpha1").await;
    assert_eq!(code, 200);
    for path in ["/readyz", "/healthz", "/livez"] {
        let (code, body) = s.get_text(path).await;
        assert_eq!(code, 200, "{path} while the database is down: {body}");
    }

    pg.resume();
    pg.psql(&format!(
        "INSERT INTO {t} (namespace, name) VALUES ('d', 'two')"
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, list, _) = s.get(&ns_path("d")).await;
        if code == 200 {
            assert_eq!(names(&list), ["d/one", "d/two"]);
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {list}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.wait_feed_up().await;
    let mut watch = EventStream::new(s.request(&format!("{}?watch=1", ns_path("d"))).await);
    assert_eq!(
        watch.next(Duration::from_secs(5)).await.unwrap()["type"],
        "ADDED"
    );
    assert_eq!(
        watch.next(Duration::from_secs(5)).await.unwrap()["type"],
        "ADDED"
    );
    pg.psql(&format!("DELETE FROM {t} WHERE name = 'one'"));
    let e = watch.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(e["type"], "DELETED", "{e}");
    assert_eq!(e["object"]["metadata"]["name"], "one");
}
