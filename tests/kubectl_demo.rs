//! The real kubectl (pinned, built by tests/e2e/tools.sh) against the real
//! `kubedojo-data-api demo` binary: what a user sees.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The pinned kubectl: `$KUBECTL`, else built (once, cached) by tests/e2e/tools.sh.
fn kubectl_binary() -> PathBuf {
    if let Ok(p) = std::env::var("KUBECTL") {
        return PathBuf::from(p);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/tools.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("kubectl")
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/e2e/tools.sh");
    assert!(out.status.success(), "tests/e2e/tools.sh kubectl failed");
    let path = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .lines()
        .last()
        .unwrap()
        .to_string();
    PathBuf::from(path)
}

struct Demo {
    child: Child,
    kubeconfig: PathBuf,
    cache: PathBuf,
    kubectl: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Demo {
    fn start() -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("demo.kubeconfig");
        let mut child = Command::new(env!("CARGO_BIN_EXE_kubedojo-data-api"))
            .args([
                "demo",
                "--secure-port",
                "0",
                "--metric-resolution",
                "1s",
                "--nodes",
                "3",
                "--pods-per-node",
                "4",
            ])
            .arg("--write-kubeconfig")
            .arg(&kubeconfig)
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
            .recv_timeout(Duration::from_secs(30))
            .expect("the demo printed nothing within 30s");
        assert!(
            first.starts_with("kubedojo-data-api demo is serving on https://127.0.0.1:"),
            "unexpected first line: {first}"
        );
        assert!(first.contains(&kubeconfig.display().to_string()), "{first}");
        Demo {
            child,
            kubeconfig,
            cache: dir.path().join("cache"),
            kubectl: kubectl_binary(),
            _dir: dir,
        }
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        let started = Instant::now();
        let out = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .output()
            .expect("run kubectl");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "kubectl {args:?} took too long"
        );
        out
    }

    /// Runs kubectl and returns stdout, failing the test on a non-zero exit or stderr noise.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "kubectl {args:?} failed: {stderr}");
        assert!(
            stderr.trim().is_empty(),
            "kubectl {args:?} wrote to stderr: {stderr}"
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn kubectl_against_demo() {
    let demo = Demo::start();

    let out = demo.ok(&["api-resources", "--api-group=data.kubedojo.io"]);
    let r = rows(&out);
    assert_eq!(
        r[0],
        vec!["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"],
        "{out}"
    );
    assert_eq!(
        r[1],
        vec![
            "datarecords",
            "dr",
            "data.kubedojo.io/v1alpha1",
            "true",
            "DataRecord"
        ],
        "{out}"
    );

    let out = demo.ok(&["get", "dr", "-A", "-l", "!data.kubedojo.io/source"]);
    let r = rows(&out);
    assert_eq!(
        r[0],
        vec!["NAMESPACE", "NAME", "SOURCE", "SYNC", "STATUS", "AGE"],
        "{out}"
    );
    let keys: Vec<(String, String)> = r[1..]
        .iter()
        .map(|row| (row[0].clone(), row[1].clone()))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("default".into(), "feature-flags".into()),
            ("default".into(), "user-config".into()),
            ("monitoring".into(), "metrics-config".into())
        ],
        "{out}"
    );

    let out = demo.ok(&[
        "get",
        "dr",
        "-n",
        "default",
        "-l",
        "!data.kubedojo.io/source",
    ]);
    let names: Vec<String> = rows(&out)[1..].iter().map(|r| r[0].clone()).collect();
    assert_eq!(names, vec!["feature-flags", "user-config"], "{out}");

    let out = demo.ok(&["get", "datarecords", "-n", "default", "-o", "wide"]);
    assert!(out.lines().next().unwrap().contains("QUERY"), "{out}");
    assert!(
        out.contains("SELECT * FROM config WHERE env='production'"),
        "{out}"
    );

    let out = demo.ok(&["get", "dr", "user-config", "-n", "default", "-o", "yaml"]);
    for want in [
        "apiVersion: data.kubedojo.io/v1alpha1",
        "kind: DataRecord",
        "name: user-config",
        "namespace: default",
        "uid: a1b2c3d4-0001-0001-0001-000000000001",
        "resourceVersion: ",
        "creationTimestamp: ",
        "source: postgres",
        "max_connections: \"100\"",
        "timeout_ms: \"5000\"",
        "log_level: info",
        "syncStatus: Current",
        "lastSyncTime: ",
    ] {
        assert!(out.contains(want), "-o yaml lacks {want:?}:\n{out}");
    }

    let out = demo.ok(&[
        "get",
        "dr",
        "user-config",
        "-n",
        "default",
        "-o",
        "jsonpath={.spec.data}",
    ]);
    let data: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(
        data,
        serde_json::json!({"max_connections": "100", "timeout_ms": "5000", "log_level": "info"})
    );

    let out = demo.ok(&[
        "get",
        "dr",
        "-A",
        "--field-selector",
        "metadata.name=feature-flags",
        "-o",
        "name",
    ]);
    assert_eq!(out, "datarecord.data.kubedojo.io/feature-flags\n");

    let out = demo.ok(&[
        "get",
        "dr",
        "metrics-config",
        "-n",
        "monitoring",
        "-o",
        "yaml",
    ]);
    assert!(out.contains("syncStatus: Stale"), "{out}");

    let out = demo.ok(&["describe", "dr", "user-config", "-n", "default"]);
    for want in [
        "Name:",
        "user-config",
        "Namespace:",
        "default",
        "Spec:",
        "Source:",
        "postgres",
        "Sync Status:",
        "Current",
    ] {
        assert!(out.contains(want), "describe lacks {want:?}:\n{out}");
    }

    let out = demo.ok(&["explain", "dr.spec"]);
    assert!(out.contains("KIND:       DataRecord"), "{out}");
    for field in ["source", "query", "data"] {
        assert!(out.contains(field), "explain lacks {field}:\n{out}");
    }

    let out = demo.kubectl(&["get", "dr", "nope", "-n", "default"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "Error from server (NotFound): datarecords.data.kubedojo.io \"nope\" not found"
        ),
        "{stderr}"
    );

    for path in [
        "/apis",
        "/apis/data.kubedojo.io",
        "/apis/data.kubedojo.io/v1alpha1",
        "/version",
    ] {
        let out = demo.ok(&["get", "--raw", path]);
        let doc: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{path}: {e}: {out}"));
        assert!(doc.is_object(), "{path}");
    }
    let out = demo.ok(&["get", "--raw", "/apis/data.kubedojo.io/v1alpha1"]);
    assert!(out.contains("\"shortNames\":[\"dr\"]"), "{out}");
}

#[test]
fn kubectl_without_the_token_is_refused() {
    let demo = Demo::start();
    let text = std::fs::read_to_string(&demo.kubeconfig).unwrap();
    let token_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("token:"))
        .unwrap();
    std::fs::write(
        &demo.kubeconfig,
        text.replace(token_line, "    token: not-the-token"),
    )
    .unwrap();
    let out = demo.kubectl(&["get", "dr", "-A"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Unauthorized") || stderr.contains("must be logged in"),
        "{stderr}"
    );
}

/// Runs kubectl until it succeeds (metrics need two scrapes), then returns stdout.
fn eventually(demo: &Demo, args: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = demo.kubectl(args);
        if out.status.success() {
            return String::from_utf8(out.stdout).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "kubectl {args:?} kept failing: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn kubectl_top_against_demo() {
    let demo = Demo::start();
    let out = eventually(&demo, &["top", "node"]);
    let r = rows(&out);
    assert_eq!(
        r[0],
        vec!["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"],
        "{out}"
    );
    let nodes: Vec<&str> = r[1..].iter().map(|row| row[0].as_str()).collect();
    assert_eq!(
        nodes,
        vec!["sim-node-0001", "sim-node-0002", "sim-node-0003"],
        "{out}"
    );
    for row in &r[1..] {
        assert!(row[1].ends_with('m'), "cpu in millicores: {out}");
        assert!(
            row[2].ends_with('%') && row[4].ends_with('%'),
            "percentages from allocatable: {out}"
        );
        assert!(!out.contains("<unknown>"), "{out}");
    }

    let out = eventually(&demo, &["top", "pod", "-A"]);
    let r = rows(&out);
    assert_eq!(
        r[0],
        vec!["NAMESPACE", "NAME", "CPU(cores)", "MEMORY(bytes)"],
        "{out}"
    );
    assert_eq!(r.len() - 1, 12, "every simulated pod: {out}");
    let (ns, pod) = (r[1][0].clone(), r[1][1].clone());
    let app = pod.split('-').next().unwrap().to_string();

    let raw = demo.ok(&[
        "get",
        "--raw",
        &format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods?labelSelector=app%3D{app}"),
    ]);
    let list: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let want: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(want.contains(&pod), "{raw}");
    let out = eventually(
        &demo,
        &["top", "pod", "-n", &ns, "-l", &format!("app={app}")],
    );
    let got: Vec<String> = rows(&out)[1..].iter().map(|row| row[0].clone()).collect();
    assert_eq!(got, want, "{out}");

    let out = eventually(&demo, &["top", "pod", &pod, "-n", &ns, "--containers"]);
    let r = rows(&out);
    assert_eq!(
        r[0],
        vec!["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"],
        "{out}"
    );
    assert!(r.len() >= 3, "two containers per pod: {out}");
    assert!(r[1..].iter().all(|row| row[0] == pod), "{out}");

    for path in [
        "/apis/metrics.k8s.io/v1beta1",
        "/apis/metrics.k8s.io/v1beta1/nodes",
        "/apis/metrics.k8s.io/v1beta1/pods",
    ] {
        let out = demo.ok(&["get", "--raw", path]);
        let doc: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(doc["kind"].is_string(), "{path}: {out}");
    }
    let out = demo.kubectl(&["top", "pod", "nope", "-n", "default"]);
    assert!(!out.status.success());
}

/// `kubectl top` in protobuf (its default since 1.22; said explicitly here): the real Go
/// decoder reads our bytes, and `-v=8` shows the response really was protobuf.
#[test]
fn kubectl_top_in_protobuf() {
    let demo = Demo::start();
    let _ = eventually(&demo, &["top", "node"]);
    for (args, want_rows) in [
        (&["top", "node"][..], 3usize),
        (&["top", "pod", "-A"][..], 12),
    ] {
        let mut full = args.to_vec();
        full.extend(["--use-protocol-buffers=true", "-v=8"]);
        let out = demo.kubectl(&full);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "kubectl {full:?}: {stderr}");
        assert!(
            stderr.contains("Accept: application/vnd.kubernetes.protobuf"),
            "kubectl asked for protobuf: {stderr}"
        );
        assert!(
            stderr.contains("Content-Type: application/vnd.kubernetes.protobuf"),
            "and got it: {stderr}"
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let r = rows(&stdout);
        assert_eq!(r.len() - 1, want_rows, "{stdout}");
        assert!(!stdout.contains("<unknown>"), "{stdout}");
    }
    // The same rows as with JSON.
    let json = eventually(&demo, &["top", "pod", "-A", "--use-protocol-buffers=false"]);
    let pb = eventually(&demo, &["top", "pod", "-A", "--use-protocol-buffers=true"]);
    let names = |t: &str| -> Vec<(String, String)> {
        rows(t)[1..]
            .iter()
            .map(|r| (r[0].clone(), r[1].clone()))
            .collect()
    };
    assert_eq!(names(&json), names(&pb));
}
