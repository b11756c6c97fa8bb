//! Kubelet `/metrics/resource` decode throughput: our scanner
//! (`kubedojo_data_api::scrape::decode::decode`) vs prometheus-parse 0.2.5 vs a byte-scan floor
//! (count newlines with memchr; sum the bytes).
//!
//! Inputs: the real kind node payload (70 pods) and generated kubelet text for 30, 70 and 110
//! pods × 2 containers, rendered like a current kubelet (HELP/TYPE lines with `[STABLE]`,
//! families in alphabetical order, series sorted by `container`,`namespace`,`pod`, Go float
//! formatting, ms timestamps, swap families and `resource_scrape_error`).
//!
//! Run: `cargo bench --bench decode`.

use std::{collections::BTreeMap, fmt::Write as _, sync::LazyLock};

use divan::{Bencher, black_box, counter::BytesCount};
use kubedojo_data_api::scrape::decode::decode;

fn main() {
    divan::main();
}

const REQUEST_TIME_MS: i64 = 1_633_253_812_000;

/// Bench inputs by name; the argument names of every bench below.
const PAYLOADS: &[&str] = &["kind-70-real", "gen-30", "gen-70", "gen-110"];

static BODIES: LazyLock<BTreeMap<&'static str, Vec<u8>>> = LazyLock::new(|| {
    let real = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kubelet/kind-node-70-pods.prom"
    ))
    .expect("the real kubelet payload is readable");
    BTreeMap::from([
        ("kind-70-real", real),
        ("gen-30", generated_payload(30)),
        ("gen-70", generated_payload(70)),
        ("gen-110", generated_payload(110)),
    ])
});

fn body(name: &str) -> &'static [u8] {
    BODIES.get(name).expect("known payload name")
}

#[divan::bench(args = PAYLOADS)]
fn kubedojo_decode(bencher: Bencher<'_, '_>, name: &str) {
    let body = body(name);
    bencher
        .counter(BytesCount::of_slice(body))
        .bench(|| decode(black_box(body), REQUEST_TIME_MS));
}

#[divan::bench(args = PAYLOADS)]
fn prometheus_parse(bencher: Bencher<'_, '_>, name: &str) {
    let text = std::str::from_utf8(body(name)).expect("payloads are UTF-8");
    bencher.counter(BytesCount::of_str(text)).bench(|| {
        prometheus_parse::Scrape::parse(black_box(text).lines().map(|l| Ok(l.to_owned())))
    });
}

#[divan::bench(args = PAYLOADS)]
fn floor_count_newlines(bencher: Bencher<'_, '_>, name: &str) {
    let body = body(name);
    bencher
        .counter(BytesCount::of_slice(body))
        .bench(|| memchr::memchr_iter(b'\n', black_box(body)).count());
}

#[divan::bench(args = PAYLOADS)]
fn floor_sum_bytes(bencher: Bencher<'_, '_>, name: &str) {
    let body = body(name);
    bencher
        .counter(BytesCount::of_slice(body))
        .bench(|| black_box(body).iter().map(|&b| u64::from(b)).sum::<u64>());
}

// ---------------------------------------------------------------------------------------------
// Payload generator
// ---------------------------------------------------------------------------------------------

/// A small deterministic generator, so every run benches the same bytes.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float in `[low, high)` with 6 significant-ish decimals, like cAdvisor's numbers.
    fn float(&mut self, low: f64, high: f64) -> f64 {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((low + unit * (high - low)) * 1e6).round() / 1e6
    }

    fn timestamp_ms(&mut self) -> i64 {
        REQUEST_TIME_MS - 20_000 + (self.next() % 20_000) as i64
    }

    fn pod_suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..5)
            .map(|_| char::from(ALPHABET[(self.next() % ALPHABET.len() as u64) as usize]))
            .collect()
    }
}

/// Formats like Go's `strconv.FormatFloat(v, 'g', -1, 64)`, which the kubelet's exposition uses:
/// shortest digits, `e` notation from 1e6 up and below 1e-4 (`1.253376e+07`).
fn go_float(value: f64) -> String {
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("integer exponent");
    if value == 0.0 || (-4..6).contains(&exponent) {
        return format!("{value}");
    }
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.abs())
}

struct Container {
    name: &'static str,
    namespace: String,
    pod: String,
}

/// Kubelet `/metrics/resource` text for `pods` pods × 2 containers.
fn generated_payload(pods: usize) -> Vec<u8> {
    let mut rng = SplitMix(pods as u64);
    let mut containers = Vec::with_capacity(pods * 2);
    let mut pod_names = Vec::with_capacity(pods);
    for i in 0..pods {
        let namespace = format!("team-{}", i % 7);
        let pod = format!("service-{i}-7d9f8c6b5-{}", rng.pod_suffix());
        for name in ["app", "istio-proxy"] {
            containers.push(Container {
                name,
                namespace: namespace.clone(),
                pod: pod.clone(),
            });
        }
        pod_names.push((namespace, pod));
    }
    containers.sort_by(|a, b| (a.name, &a.namespace, &a.pod).cmp(&(b.name, &b.namespace, &b.pod)));
    pod_names.sort();

    let mut text = String::new();
    let container_families = [
        (
            "container_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the container in core-seconds",
            (0.01, 5000.0),
        ),
        (
            "container_memory_working_set_bytes",
            "gauge",
            "Current working set of the container in bytes",
            (4e6, 2e9),
        ),
        (
            "container_start_time_seconds",
            "gauge",
            "Start time of the container since unix epoch in seconds",
            (1.63e9, 1.6332e9),
        ),
        (
            "container_swap_usage_bytes",
            "gauge",
            "Current amount of the container swap usage in bytes. Reported only on non-windows systems",
            (0.0, 0.0),
        ),
    ];
    for (family, kind, help, (low, high)) in container_families {
        header(&mut text, family, kind, help);
        for c in &containers {
            let value = go_float(rng.float(low, high));
            let labels = format!(
                "container=\"{}\",namespace=\"{}\",pod=\"{}\"",
                c.name, c.namespace, c.pod
            );
            if family == "container_start_time_seconds" {
                writeln!(text, "{family}{{{labels}}} {value}").expect("write to String");
            } else {
                writeln!(text, "{family}{{{labels}}} {value} {}", rng.timestamp_ms())
                    .expect("write to String");
            }
        }
    }
    let node_families = [
        (
            "node_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the node in core-seconds",
            (1e4, 9e5),
        ),
        (
            "node_memory_working_set_bytes",
            "gauge",
            "Current working set of the node in bytes",
            (1e9, 6e10),
        ),
        (
            "node_swap_usage_bytes",
            "gauge",
            "Current swap usage of the node in bytes. Reported only on non-windows systems",
            (0.0, 0.0),
        ),
    ];
    for (family, kind, help, (low, high)) in node_families {
        header(&mut text, family, kind, help);
        writeln!(
            text,
            "{family} {} {}",
            go_float(rng.float(low, high)),
            rng.timestamp_ms()
        )
        .expect("write to String");
    }
    let pod_families = [
        (
            "pod_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the pod in core-seconds",
            (0.02, 9000.0),
        ),
        (
            "pod_memory_working_set_bytes",
            "gauge",
            "Current working set of the pod in bytes",
            (8e6, 4e9),
        ),
        (
            "pod_swap_usage_bytes",
            "gauge",
            "Current amount of the pod swap usage in bytes. Reported only on non-windows systems",
            (0.0, 0.0),
        ),
    ];
    for (family, kind, help, (low, high)) in pod_families {
        header(&mut text, family, kind, help);
        for (namespace, pod) in &pod_names {
            let value = go_float(rng.float(low, high));
            writeln!(
                text,
                "{family}{{namespace=\"{namespace}\",pod=\"{pod}\"}} {value} {}",
                rng.timestamp_ms()
            )
            .expect("write to String");
        }
    }
    header(
        &mut text,
        "resource_scrape_error",
        "gauge",
        "1 if there was an error while getting container metrics, 0 otherwise",
    );
    text.push_str("resource_scrape_error 0\n");

    let decoded = decode(text.as_bytes(), REQUEST_TIME_MS).expect("generated payload decodes");
    assert_eq!(
        decoded.batch.pods.len(),
        pods,
        "every generated pod is complete"
    );
    assert!(decoded.skipped.is_empty(), "{:?}", decoded.skipped);
    text.into_bytes()
}

fn header(text: &mut String, family: &str, kind: &str, help: &str) {
    writeln!(
        text,
        "# HELP {family} [STABLE] {help}\n# TYPE {family} {kind}"
    )
    .expect("write to String");
}
