//! DataRecords as a watching client sees them: resourceVersions that survive no restart
//! are refused (so the client relists), and selector watches see objects enter and leave.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::TestServer;
use common::read_events;
use serde_json::Value;

const DR: &str = "/apis/data.kubedojo.io/v1alpha1";

fn name(e: &Value) -> String {
    e["object"]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn write_records(t: &TestServer, text: &str) {
    std::fs::write(t.dir.path().join("records.yaml"), text).unwrap();
}

/// A reflector's cache: name → spec.source, with the last resourceVersion it saw.
#[derive(Default)]
struct Cache {
    items: BTreeMap<String, String>,
    rv: String,
}

impl Cache {
    async fn relist(&mut self, t: &TestServer) {
        let (code, list) = t
            .get_json(&format!("{DR}/namespaces/default/datarecords"), None)
            .await;
        assert_eq!(code, 200, "{list}");
        self.items = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["metadata"]["name"].as_str().unwrap().to_string(),
                    i["spec"]["source"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        self.rv = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
    }

    fn apply(&mut self, e: &Value) {
        let n = name(e);
        match e["type"].as_str().unwrap() {
            "ADDED" | "MODIFIED" => {
                self.items
                    .insert(n, e["object"]["spec"]["source"].as_str().unwrap().into());
            }
            "DELETED" => {
                self.items.remove(&n);
            }
            other => panic!("unexpected event {other}: {e}"),
        }
        self.rv = e["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
    }
}

/// Issue 13 §1.2 / issue 10 §4: a watch resumed after a restart used to be accepted by
/// the new process (whose counter restarted at 1) and silently missed every change made
/// while the client was away. Now the old resourceVersion gets 410 Expired, the client
/// relists, and its cache ends up equal to the server's: nothing skipped.
#[tokio::test]
async fn a_watch_resumed_after_a_restart_is_refused_and_the_relist_misses_nothing() {
    let t = TestServer::start(Some(
        "- metadata: {name: a}\n  spec: {source: v1}\n- metadata: {name: b}\n  spec: {source: v1}\n",
    ))
    .await;
    let mut cache = Cache::default();
    cache.relist(&t).await;
    let mut watch = t
        .get(
            &format!(
                "{DR}/namespaces/default/datarecords?watch=1&resourceVersion={}&timeoutSeconds=30",
                cache.rv
            ),
            None,
        )
        .await;
    write_records(
        &t,
        "- metadata: {name: a}\n  spec: {source: v2}\n- metadata: {name: b}\n  spec: {source: v1}\n",
    );
    for e in read_events(&mut watch, 1).await {
        cache.apply(&e);
    }
    assert_eq!(cache.items["a"], "v2");
    let old_rv = cache.rv.clone();
    drop(watch);

    // The server restarts; while the client is away, b changes, c appears, a goes.
    let t = t.restart().await;
    write_records(
        &t,
        "- metadata: {name: b}\n  spec: {source: v3}\n- metadata: {name: c}\n  spec: {source: v1}\n",
    );
    // Wait until the new process serves the edit (the file is re-read every 100 ms).
    for _ in 0..100 {
        let (_, list) = t
            .get_json(&format!("{DR}/namespaces/default/datarecords"), None)
            .await;
        if list["items"].as_array().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Make the new process's counter overtake the old one, as it would after a while.
    for i in 0..5 {
        write_records(
            &t,
            &format!(
                "- metadata: {{name: b}}\n  spec: {{source: v3}}\n- metadata: {{name: c}}\n  spec: {{source: v1}}\n- metadata: {{name: tmp{i}}}\n  spec: {{source: x}}\n"
            ),
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    write_records(
        &t,
        "- metadata: {name: b}\n  spec: {source: v3}\n- metadata: {name: c}\n  spec: {source: v1}\n",
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Resuming with the old resourceVersion: an ERROR event with a 410 Status, as
    // kube-apiserver's watch cache answers, and the stream ends.
    let mut resumed = t
        .get(
            &format!(
                "{DR}/namespaces/default/datarecords?watch=1&resourceVersion={old_rv}&timeoutSeconds=30"
            ),
            None,
        )
        .await;
    assert_eq!(resumed.status(), 200);
    let events = read_events(&mut resumed, 10).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "ERROR");
    let status = &events[0]["object"];
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 410);
    assert_eq!(status["reason"], "Expired");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("too old resource version: {old_rv} (")),
        "{status}"
    );
    // A list at the old version is refused too (a reflector's relist first tries it).
    let (code, s) = t
        .get_json(
            &format!("{DR}/namespaces/default/datarecords?resourceVersion={old_rv}"),
            None,
        )
        .await;
    assert_eq!((code, s["reason"].as_str()), (410, Some("Expired")), "{s}");

    // The client relists and watches from the new version: its cache is the server's.
    cache.relist(&t).await;
    let want: BTreeMap<String, String> = [("b", "v3"), ("c", "v1")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(cache.items, want);
    let mut watch = t
        .get(
            &format!(
                "{DR}/namespaces/default/datarecords?watch=1&resourceVersion={}&timeoutSeconds=30",
                cache.rv
            ),
            None,
        )
        .await;
    write_records(&t, "- metadata: {name: c}\n  spec: {source: v2}\n");
    let mut events = read_events(&mut watch, 2).await;
    events.sort_by_key(name);
    for e in &events {
        cache.apply(e);
    }
    let want: BTreeMap<String, String> = [("c".to_string(), "v2".to_string())].into();
    assert_eq!(cache.items, want);
    t.server.stop().await;
}

#[tokio::test]
async fn versions_from_the_future_get_resource_version_too_large() {
    let t = TestServer::start(Some("- metadata: {name: a}\n  spec: {source: s}\n")).await;
    let (_, list) = t.get_json(&format!("{DR}/datarecords"), None).await;
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap();
    let (epoch, seq) = rv.split_once('.').unwrap();
    let future = format!("{epoch}.{}", seq.parse::<u64>().unwrap() + 1000);

    let resp = t
        .get(&format!("{DR}/datarecords?resourceVersion={future}"), None)
        .await;
    assert_eq!(resp.status(), 504);
    assert_eq!(resp.headers()["retry-after"], "1");
    let s: Value = resp.json().await.unwrap();
    assert_eq!(s["reason"], "Timeout");
    assert_eq!(
        s["message"],
        format!("Timeout: Too large resource version: {future}, current: {rv}")
    );
    assert_eq!(
        s["details"],
        serde_json::json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1})
    );

    let mut watch = t
        .get(
            &format!("{DR}/datarecords?watch=1&resourceVersion={future}&timeoutSeconds=5"),
            None,
        )
        .await;
    assert_eq!(watch.status(), 200);
    let events = read_events(&mut watch, 5).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 504);
    assert_eq!(
        events[0]["object"]["details"]["causes"][0]["reason"],
        "ResourceVersionTooLarge"
    );

    // The current version lists; an exact older one is gone; "0" is anything.
    let (code, _) = t
        .get_json(&format!("{DR}/datarecords?resourceVersion={rv}"), None)
        .await;
    assert_eq!(code, 200);
    let (code, _) = t
        .get_json(
            &format!("{DR}/datarecords?resourceVersion={rv}&resourceVersionMatch=Exact"),
            None,
        )
        .await;
    assert_eq!(code, 200);
    let (code, _) = t
        .get_json(&format!("{DR}/datarecords?resourceVersion=0"), None)
        .await;
    assert_eq!(code, 200);
    t.server.stop().await;
}

/// Issue 13 §1.3: a watch with a selector used to check only the new object, so an
/// update that took a record out of the selector sent nothing (the client kept it
/// forever) and one that brought it back sent MODIFIED for an object it never had.
#[tokio::test]
async fn selector_watches_see_records_leave_and_enter() {
    let labelled = |tier: &str, source: &str| {
        format!(
            "- metadata: {{name: a, labels: {{tier: {tier}}}}}\n  spec: {{source: {source}}}\n- metadata: {{name: other, labels: {{tier: x}}}}\n  spec: {{source: s}}\n"
        )
    };
    let t = TestServer::start(Some(&labelled("x", "s1"))).await;
    let mut watch = t
        .get(
            &format!(
                "{DR}/namespaces/default/datarecords?watch=1&labelSelector=tier%3Dx&timeoutSeconds=30"
            ),
            None,
        )
        .await;
    let initial = read_events(&mut watch, 2).await;
    assert_eq!(initial.len(), 2);

    // a leaves the selector: DELETED, carrying its previous state at the new version.
    write_records(&t, &labelled("y", "s2"));
    let e = &read_events(&mut watch, 1).await[0];
    assert_eq!(
        (e["type"].as_str(), name(e).as_str()),
        (Some("DELETED"), "a")
    );
    assert_eq!(e["object"]["metadata"]["labels"]["tier"], "x");
    assert_eq!(e["object"]["spec"]["source"], "s1");
    let (_, list) = t.get_json(&format!("{DR}/datarecords"), None).await;
    assert_eq!(
        e["object"]["metadata"]["resourceVersion"],
        list["metadata"]["resourceVersion"]
    );

    // A change outside the selector: nothing. Then a comes back: ADDED.
    write_records(&t, &labelled("y", "s3"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    write_records(&t, &labelled("x", "s4"));
    let e = &read_events(&mut watch, 1).await[0];
    assert_eq!((e["type"].as_str(), name(e).as_str()), (Some("ADDED"), "a"));
    assert_eq!(e["object"]["spec"]["source"], "s4");

    // A change inside the selector stays MODIFIED.
    write_records(&t, &labelled("x", "s5"));
    let e = &read_events(&mut watch, 1).await[0];
    assert_eq!(
        (e["type"].as_str(), name(e).as_str()),
        (Some("MODIFIED"), "a")
    );

    // A resumed watch replays the same transitions from the history.
    let rv = initial[0]["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap();
    let mut resumed = t
        .get(
            &format!(
                "{DR}/namespaces/default/datarecords?watch=1&labelSelector=tier%3Dx&resourceVersion={rv}&timeoutSeconds=1"
            ),
            None,
        )
        .await;
    let replay: Vec<(String, String)> = read_events(&mut resumed, 10)
        .await
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_string(), name(e)))
        .collect();
    assert_eq!(
        replay,
        vec![
            ("DELETED".to_string(), "a".to_string()),
            ("ADDED".to_string(), "a".to_string()),
            ("MODIFIED".to_string(), "a".to_string())
        ]
    );
    t.server.stop().await;
}

/// Parses the quantities computed records carry (`1234m`, `5n`, `2`, `4620Ki`, `12Mi`, `-3m`).
fn quantity(q: &str) -> f64 {
    let (sign, q) = match q.strip_prefix('-') {
        Some(rest) => (-1.0, rest),
        None => (1.0, q),
    };
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (n, suffix) = q.split_at(split);
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("quantity {q}"));
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("unit {other} in {q}"),
    };
    sign * n * scale
}

fn within_1_percent(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= want.abs() * 0.01 + 1e-3,
        "{what}: got {got}, want {want} (±1%)"
    );
}

/// Computed records against the simulator's known usage: per-namespace totals and counts,
/// the top pods, and per-node headroom, all within 1%; then a node whose kubelet fails
/// turns its headroom record Stale, seen by a watcher as one MODIFIED event.
#[tokio::test]
async fn computed_records_follow_the_simulated_usage_and_go_stale() {
    let t = TestServer::start(None).await;
    let fleet = t.server.sim.as_ref().unwrap().fleet().clone();
    let computed = "labelSelector=data.kubedojo.io%2Fsource%3Dmetrics";
    // Wait for a scrape that gives every node and namespace a usage.
    let mut list = Value::Null;
    for _ in 0..100 {
        let (_, l) = t
            .get_json(&format!("{DR}/datarecords?{computed}"), None)
            .await;
        let n = l["items"].as_array().map_or(0, Vec::len);
        let all_current = l["items"].as_array().is_some_and(|items| {
            items.iter().all(|i| {
                i["status"]["syncStatus"] == "Current"
                    && i["spec"]["data"]["cpuUsage"] != Value::Null
                    || i["metadata"]["name"] == "resource-usage"
            })
        });
        list = l;
        if n == 3 + fleet.nodes.len() && all_current {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let items = list["items"].as_array().unwrap().clone();
    let find = |ns: &str, name: &str| -> Value {
        items
            .iter()
            .find(|i| i["metadata"]["namespace"] == ns && i["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no record {ns}/{name} in {list}"))
            .clone()
    };
    for ns in ["default", "team-a", "team-b"] {
        let r = find(ns, "resource-usage");
        assert_eq!(
            r["metadata"]["labels"]["data.kubedojo.io/source"],
            "metrics"
        );
        assert_eq!(r["spec"]["source"], "metrics");
        assert_eq!(r["status"]["syncStatus"], "Current", "{r}");
        let d = &r["spec"]["data"];
        let pods: Vec<_> = fleet
            .pods()
            .filter(|(_, p)| &*p.namespace == ns)
            .map(|(_, p)| p)
            .collect();
        assert_eq!(d["pods"], pods.len().to_string(), "{r}");
        let containers: usize = pods.iter().map(|p| p.containers.len()).sum();
        assert_eq!(d["containers"], containers.to_string(), "{r}");
        let cpu: f64 = pods.iter().map(|p| p.cpu_nanocores() as f64 / 1e9).sum();
        let mem: f64 = pods.iter().map(|p| p.memory_bytes() as f64).sum();
        within_1_percent(
            quantity(d["cpu"].as_str().unwrap()),
            cpu,
            &format!("{ns} cpu"),
        );
        within_1_percent(
            quantity(d["memory"].as_str().unwrap()),
            mem,
            &format!("{ns} memory"),
        );
        // The top pod by CPU is the simulator's busiest pod of the namespace.
        let busiest = pods.iter().map(|p| p.cpu_nanocores()).max().unwrap();
        let top = d["topPodsByCpu"].as_str().unwrap();
        assert_eq!(top.split(',').count(), pods.len().min(5), "{top}");
        let first = top.split(',').next().unwrap();
        let (name, q) = first.split_once('=').unwrap();
        let pod = pods.iter().find(|p| &*p.name == name).unwrap();
        assert_eq!(pod.cpu_nanocores(), busiest, "{top}");
        within_1_percent(quantity(q), busiest as f64 / 1e9, "top pod cpu");
        assert_eq!(
            d["topPodsByMemory"].as_str().unwrap().split(',').count(),
            pods.len().min(5)
        );
    }
    for node in &fleet.nodes {
        let r = find("kubedojo-metrics", &format!("node-headroom-{}", node.name));
        assert_eq!(
            r["metadata"]["labels"]["data.kubedojo.io/node"],
            node.name.as_str()
        );
        assert_eq!(r["status"]["syncStatus"], "Current", "{r}");
        let d = &r["spec"]["data"];
        let alloc_cpu = node.capacity_cpu_millicores as f64 / 1000.0;
        let used_cpu = node.cpu_nanocores as f64 / 1e9;
        within_1_percent(
            quantity(d["cpuAllocatable"].as_str().unwrap()),
            alloc_cpu,
            "alloc",
        );
        within_1_percent(
            quantity(d["cpuUsage"].as_str().unwrap()),
            used_cpu,
            "node cpu",
        );
        within_1_percent(
            quantity(d["cpuHeadroom"].as_str().unwrap()),
            alloc_cpu - used_cpu,
            "cpu headroom",
        );
        let pct: f64 = d["cpuHeadroomPercent"].as_str().unwrap().parse().unwrap();
        assert!(
            (pct - (alloc_cpu - used_cpu) / alloc_cpu * 100.0).abs() < 1.0,
            "{r}"
        );
        let alloc_mem = quantity(d["memoryAllocatable"].as_str().unwrap());
        within_1_percent(
            quantity(d["memoryHeadroom"].as_str().unwrap()),
            alloc_mem - node.memory_bytes as f64,
            "memory headroom",
        );
    }

    // The first node's kubelet fails: its headroom record turns Stale, as one MODIFIED.
    let target = format!("node-headroom-{}", fleet.nodes[0].name);
    let mut watch = t
        .get(
            &format!(
                "{DR}/namespaces/kubedojo-metrics/datarecords?watch=1&fieldSelector=metadata.name%3D{target}&resourceVersion={}&timeoutSeconds=30",
                list["metadata"]["resourceVersion"].as_str().unwrap()
            ),
            None,
        )
        .await;
    t.server
        .sim
        .as_ref()
        .unwrap()
        .set_behaviour(0, kubedojo_data_api::sim::Behaviour::Status(500))
        .await
        .unwrap();
    let mut stale = None;
    for _ in 0..20 {
        let events = read_events(&mut watch, 1).await;
        let Some(e) = events.first() else { break };
        assert_eq!(e["type"], "MODIFIED", "{e}");
        if e["object"]["status"]["syncStatus"] == "Stale" {
            stale = Some(e.clone());
            break;
        }
    }
    let stale = stale.expect("the failing node's headroom record never turned Stale");
    assert_eq!(name(&stale), target);
    // The healthy nodes stay Current.
    let (_, l) = t
        .get_json(
            &format!("{DR}/namespaces/kubedojo-metrics/datarecords?{computed}"),
            None,
        )
        .await;
    for i in l["items"].as_array().unwrap() {
        if name(&serde_json::json!({"object": i})) != target {
            assert_eq!(i["status"]["syncStatus"], "Current", "{i}");
        }
    }
    t.server.stop().await;
}

/// Every watch event that arrives within `period` (none is fine).
async fn events_within(resp: &mut reqwest::Response, period: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + period;
    let mut buf = Vec::new();
    let mut events = Vec::new();
    while let Ok(chunk) = tokio::time::timeout_at(deadline, resp.chunk()).await {
        let Some(chunk) = chunk.unwrap() else { break };
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            events.push(serde_json::from_slice(&line).unwrap());
        }
    }
    events
}

/// Waits until every computed record is Current with a usage; returns the list.
async fn settled_computed_records(t: &TestServer) -> Value {
    let nodes = t.server.sim.as_ref().unwrap().fleet().nodes.len();
    for _ in 0..150 {
        let (_, l) = t
            .get_json(
                &format!("{DR}/datarecords?labelSelector=data.kubedojo.io%2Fsource%3Dmetrics"),
                None,
            )
            .await;
        let items = l["items"].as_array().cloned().unwrap_or_default();
        let ready = items.len() == 3 + nodes
            && items.iter().all(|i| {
                i["status"]["syncStatus"] == "Current"
                    && (i["spec"]["data"]["cpuUsage"] != Value::Null
                        || i["spec"]["data"]["cpu"] != Value::Null)
            });
        if ready {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("computed records never settled");
}

/// A watch of the `resource-usage` records of every namespace from `list`'s version.
async fn watch_resource_usage(t: &TestServer, list: &Value) -> reqwest::Response {
    t.get(
        &format!(
            "{DR}/datarecords?watch=1&labelSelector=data.kubedojo.io%2Fcomputed%3Dresource-usage&resourceVersion={}&timeoutSeconds=60",
            list["metadata"]["resourceVersion"].as_str().unwrap()
        ),
        None,
    )
    .await
}

/// With the usage moving (`--sim-usage wave`, the demo's default), every scrape tick
/// changes every namespace's `resource-usage` record: a watcher sees one MODIFIED per
/// record per scrape cycle (not per store publish: issue #15), and each carries totals within 1% of what the simulator used
/// over the scrape window. A node's failing kubelet still turns its headroom record Stale.
#[tokio::test]
async fn computed_records_change_every_tick_when_the_usage_moves() {
    let t = TestServer::start_with(None, |a| {
        a.sim_usage = kubedojo_data_api::sim::UsageModel::Wave;
    })
    .await;
    let sim = t.server.sim.as_ref().unwrap();
    let fleet = sim.fleet().clone();
    let store = t.server.replicas[0].store.clone();
    let list = settled_computed_records(&t).await;
    let mut watch = watch_resource_usage(&t, &list).await;
    let mut publishes = store.subscribe_cycles();
    let first_publish = *publishes.borrow_and_update();
    let mut per_ns: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut checked = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < deadline {
        for e in events_within(&mut watch, Duration::from_millis(50)).await {
            assert_eq!(e["type"], "MODIFIED", "{e}");
            let ns = e["object"]["metadata"]["namespace"]
                .as_str()
                .unwrap()
                .to_string();
            let d = &e["object"]["spec"]["data"];
            // The snapshot behind this event (if the store has not moved on yet): compare
            // its totals with the simulator's usage over each pod's own window.
            let snapshot = store.snapshot();
            let pods: Vec<_> = snapshot.pods_in(&ns).collect();
            let cpu: u64 = pods.iter().map(|p| p.total().cpu_nanocores).sum();
            let mem: u64 = pods.iter().map(|p| p.total().memory_bytes).sum();
            let rounded_cpu = ((cpu + 500_000) / 1_000_000) as f64 / 1e3;
            let same = (quantity(d["cpu"].as_str().unwrap()) - rounded_cpu).abs() < 1e-9
                && quantity(d["memory"].as_str().unwrap()) == ((mem + 512) / 1024 * 1024) as f64;
            if same {
                let (mut want_cpu, mut want_mem) = (0.0, 0.0);
                for p in &pods {
                    let (_, sim_pod) = fleet
                        .pods()
                        .find(|(_, s)| &*s.namespace == p.namespace && s.name == p.name)
                        .expect("a simulated pod");
                    let from = p.timestamp_ms - p.window_ms;
                    want_cpu += sim_pod.mean_cpu_nanocores(from, p.timestamp_ms) as f64 / 1e9;
                    want_mem += sim_pod.memory_bytes_at(p.timestamp_ms) as f64;
                }
                within_1_percent(quantity(d["cpu"].as_str().unwrap()), want_cpu, "cpu");
                within_1_percent(quantity(d["memory"].as_str().unwrap()), want_mem, "memory");
                checked += 1;
            }
            per_ns.entry(ns).or_default().push(e);
        }
    }
    let ticks = *publishes.borrow_and_update() - first_publish;
    assert!(ticks >= 4, "{ticks} scrape cycles in 6s");
    assert_eq!(
        per_ns.len(),
        3,
        "every namespace's record changed: {per_ns:?}"
    );
    for (ns, events) in &per_ns {
        let n = events.len() as u64;
        // One per publish (a publish the watch start or end cut in two, or one without a
        // new scrape, may be missed).
        assert!(
            n + 2 >= ticks && n <= ticks + 1 && n >= 3,
            "{ns}: {n} MODIFIED events for {ticks} cycles"
        );
        for pair in events.windows(2) {
            assert_ne!(
                pair[0]["object"]["spec"]["data"], pair[1]["object"]["spec"]["data"],
                "{ns}: an event without a change"
            );
        }
    }
    assert!(
        checked >= 3,
        "only {checked} events could be checked against the simulator"
    );

    // A failing kubelet: its node's headroom record turns Stale while the usage moves.
    let target = format!("node-headroom-{}", fleet.nodes[0].name);
    sim.set_behaviour(0, kubedojo_data_api::sim::Behaviour::Status(500))
        .await
        .unwrap();
    let mut stale = false;
    for _ in 0..100 {
        let (_, r) = t
            .get_json(
                &format!("{DR}/namespaces/kubedojo-metrics/datarecords/{target}"),
                None,
            )
            .await;
        if r["status"]["syncStatus"] == "Stale" {
            stale = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stale, "{target} never turned Stale");
    t.server.stop().await;
}

/// With constant usage nothing changes between ticks, so a watcher of the computed
/// records sees no event at all over several scrape cycles.
#[tokio::test]
async fn computed_records_stay_quiet_while_the_usage_is_constant() {
    let t = TestServer::start(None).await;
    let store = t.server.replicas[0].store.clone();
    settled_computed_records(&t).await;
    // Two more scrape cycles, so the rates of the last pair of scrapes are in.
    let mut publishes = store.subscribe_cycles();
    let first_publish = *publishes.borrow_and_update();
    let list = loop {
        publishes.changed().await.unwrap();
        if *publishes.borrow() >= first_publish + 2 {
            break settled_computed_records(&t).await;
        }
    };
    let mut watch = t
        .get(
            &format!(
                "{DR}/datarecords?watch=1&labelSelector=data.kubedojo.io%2Fsource%3Dmetrics&resourceVersion={}&timeoutSeconds=60",
                list["metadata"]["resourceVersion"].as_str().unwrap()
            ),
            None,
        )
        .await;
    let before = *publishes.borrow_and_update();
    let events = events_within(&mut watch, Duration::from_secs(4)).await;
    let ticks = *publishes.borrow_and_update() - before;
    assert!(ticks >= 3, "{ticks} scrape cycles in 4s");
    assert!(events.is_empty(), "events without a change: {events:?}");
    t.server.stop().await;
}
