//! Property tests for the kubelet `/metrics/resource` decoder:
//!
//! (a) rendering a random [`NodeBatch`] as kubelet text and decoding it gives it back exactly;
//! (b) on inputs that prometheus-parse handles, both parsers agree on every series;
//! (c) no input makes the decoder panic, and whatever it returns keeps its invariants.

use std::collections::{BTreeMap, BTreeSet};

use kubedojo_data_api::{
    scrape::decode::{DecodeError, Decoded, SkipReason, decode},
    store::batch::{ContainerPoint, MetricsPoint, NodeBatch, PodPoints},
};
use proptest::{collection::vec, option, prelude::*};

/// The scrape's request time, used by series without a timestamp.
const REQUEST_TIME_MS: i64 = 1_633_253_812_000;
/// Below 2^50, `round(parse(seconds) × 1e9)` gives the nanoseconds back exactly.
const MAX_EXACT_SCALED: u64 = 1 << 50;
/// Below 2^53 an integer is exact as an f64.
const MAX_EXACT_INTEGER: u64 = 1 << 53;

const NODE_CPU: &str = "node_cpu_usage_seconds_total";
const NODE_MEMORY: &str = "node_memory_working_set_bytes";
const CONTAINER_CPU: &str = "container_cpu_usage_seconds_total";
const CONTAINER_MEMORY: &str = "container_memory_working_set_bytes";
const CONTAINER_START: &str = "container_start_time_seconds";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/kubelet/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// A small deterministic generator, so one proptest seed drives all rendering choices.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability 1 / `n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (a) Round trip: render a NodeBatch as kubelet text, decode it back.
// ---------------------------------------------------------------------------------------------

/// Label values: realistic names, the characters that break naive parsers, and any text.
fn label_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9][a-z0-9.-]{0,20}",
        "[a-z\",\\\\\n}={ #\t\r:]{1,12}",
        "(?s).{1,10}",
    ]
}

fn timestamp_ms() -> impl Strategy<Value = i64> {
    prop_oneof![Just(REQUEST_TIME_MS), 1..=i64::MAX]
}

fn node_point() -> impl Strategy<Value = MetricsPoint> {
    (timestamp_ms(), 0..MAX_EXACT_SCALED, 0..MAX_EXACT_INTEGER).prop_map(
        |(timestamp_ms, cumulative_cpu_ns, memory_bytes)| MetricsPoint {
            start_time_ms: 0,
            timestamp_ms,
            cumulative_cpu_ns,
            memory_bytes,
        },
    )
}

fn container_point() -> impl Strategy<Value = MetricsPoint> {
    let start_time_ms = prop_oneof![Just(0), 0..MAX_EXACT_SCALED as i64];
    (node_point(), start_time_ms).prop_map(|(point, start_time_ms)| MetricsPoint {
        start_time_ms,
        ..point
    })
}

fn node_batch() -> impl Strategy<Value = NodeBatch> {
    let containers = proptest::collection::btree_map(label_value(), container_point(), 1..4);
    let pods = proptest::collection::btree_map((label_value(), label_value()), containers, 0..8);
    (option::of(node_point()), pods).prop_map(|(node, pods)| NodeBatch {
        node,
        pods: pods
            .into_iter()
            .map(|((namespace, name), containers)| PodPoints {
                namespace,
                name,
                containers: containers
                    .into_iter()
                    .map(|(name, point)| ContainerPoint { name, point })
                    .collect(),
            })
            .collect(),
    })
}

/// `digits × 10^-scale` in Go's `%e` style, e.g. `1.253376e+07`.
fn scientific(digits: u64, scale: i32) -> String {
    let text = digits.to_string();
    let (first, rest) = text.split_at(1);
    let rest = rest.trim_end_matches('0');
    let exponent = if digits == 0 {
        0
    } else {
        text.len() as i32 - 1 - scale
    };
    let sign = if exponent < 0 { '-' } else { '+' };
    let mantissa = if rest.is_empty() {
        first.to_owned()
    } else {
        format!("{first}.{rest}")
    };
    format!("{mantissa}e{sign}{:02}", exponent.abs())
}

/// `digits × 10^-scale` as a plain decimal, e.g. `4.710169000`.
fn plain_decimal(digits: u64, scale: u32) -> String {
    let unit = 10u64.pow(scale);
    if scale == 0 {
        return digits.to_string();
    }
    format!(
        "{}.{:0width$}",
        digits / unit,
        digits % unit,
        width = scale as usize
    )
}

fn number(digits: u64, scale: u32, rng: &mut SplitMix) -> String {
    if rng.one_in(2) {
        scientific(digits, scale as i32)
    } else {
        plain_decimal(digits, scale)
    }
}

fn escape_label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `{container="..",namespace="..",pod=".."}` in a random order, sometimes with an extra label
/// and a trailing comma.
fn container_labels(namespace: &str, pod: &str, container: &str, rng: &mut SplitMix) -> String {
    let mut labels = vec![
        format!("container=\"{}\"", escape_label_value(container)),
        format!("namespace=\"{}\"", escape_label_value(namespace)),
        format!("pod=\"{}\"", escape_label_value(pod)),
    ];
    if rng.one_in(4) {
        labels.push("image=\"a,b=\\\"c\\\"}{\"".to_owned());
    }
    rng.shuffle(&mut labels);
    let trailing_comma = if rng.one_in(4) { "," } else { "" };
    format!("{{{}{trailing_comma}}}", labels.join(","))
}

/// ` <ms>`, or nothing when the point's timestamp is the request time and the kubelet may omit it.
fn timestamp_suffix(timestamp_ms: i64, rng: &mut SplitMix) -> String {
    if timestamp_ms == REQUEST_TIME_MS && rng.one_in(2) {
        String::new()
    } else {
        format!(" {timestamp_ms}")
    }
}

/// A timestamp that must not matter: memory timestamps (valid, but not the point's).
fn other_valid_timestamp(rng: &mut SplitMix) -> String {
    if rng.one_in(3) {
        String::new()
    } else {
        format!(" {}", rng.next() % (1 << 62) + 1)
    }
}

/// One metric family: its HELP/TYPE header and its series.
struct Family {
    header: String,
    series: Vec<String>,
}

impl Family {
    fn new(name: &str, kind: &str) -> Self {
        Self {
            header: format!("# HELP {name} [STABLE] {name} help text\n# TYPE {name} {kind}\n"),
            series: Vec::new(),
        }
    }
}

fn render_node(node: &MetricsPoint, cpu: &mut Family, memory: &mut Family, rng: &mut SplitMix) {
    let seconds = number(node.cumulative_cpu_ns, 9, rng);
    let timestamp = timestamp_suffix(node.timestamp_ms, rng);
    cpu.series.push(format!("{NODE_CPU} {seconds}{timestamp}"));
    let bytes = number(node.memory_bytes, 0, rng);
    let timestamp = other_valid_timestamp(rng);
    memory
        .series
        .push(format!("{NODE_MEMORY} {bytes}{timestamp}"));
}

fn render_container(
    pod: &PodPoints,
    container: &ContainerPoint,
    families: &mut [Family; 3],
    rng: &mut SplitMix,
) {
    let point = &container.point;
    let [cpu, memory, start] = families;
    let labels =
        |rng: &mut SplitMix| container_labels(&pod.namespace, &pod.name, &container.name, rng);
    let seconds = number(point.cumulative_cpu_ns, 9, rng);
    let timestamp = timestamp_suffix(point.timestamp_ms, rng);
    cpu.series.push(format!(
        "{CONTAINER_CPU}{} {seconds}{timestamp}",
        labels(rng)
    ));
    let bytes = number(point.memory_bytes, 0, rng);
    let timestamp = other_valid_timestamp(rng);
    memory.series.push(format!(
        "{CONTAINER_MEMORY}{} {bytes}{timestamp}",
        labels(rng)
    ));
    if point.start_time_ms != 0 || rng.one_in(2) {
        let seconds = number(point.start_time_ms as u64, 3, rng);
        // The start time's own timestamp is ignored, even a negative one.
        let timestamp = match rng.below(3) {
            0 => String::new(),
            1 => " -62135596800000".to_owned(),
            _ => format!(" {}", rng.next() % (1 << 40)),
        };
        start.series.push(format!(
            "{CONTAINER_START}{} {seconds}{timestamp}",
            labels(rng)
        ));
    }
}

/// Series of other families the decoder must skip.
fn noise_families(batch: &NodeBatch) -> Vec<Family> {
    let mut pod_cpu = Family::new("pod_cpu_usage_seconds_total", "counter");
    let mut swap = Family::new("container_swap_usage_bytes", "gauge");
    for pod in &batch.pods {
        let labels = format!(
            "{{namespace=\"{}\",pod=\"{}\"}}",
            escape_label_value(&pod.namespace),
            escape_label_value(&pod.name)
        );
        pod_cpu.series.push(format!(
            "pod_cpu_usage_seconds_total{labels} 1.5 1633253803935"
        ));
        swap.series
            .push(format!("container_swap_usage_bytes{labels} NaN"));
    }
    let mut scrape_error = Family::new("resource_scrape_error", "gauge");
    scrape_error
        .series
        .push("resource_scrape_error 0".to_owned());
    vec![pod_cpu, swap, scrape_error]
}

/// Kubelet text for `batch`, with families, series and label order shuffled by `seed`, and
/// random CRLF line ends and blank lines.
fn render(batch: &NodeBatch, seed: u64) -> String {
    let mut rng = SplitMix(seed);
    let mut node_cpu = Family::new(NODE_CPU, "counter");
    let mut node_memory = Family::new(NODE_MEMORY, "gauge");
    if let Some(node) = &batch.node {
        render_node(node, &mut node_cpu, &mut node_memory, &mut rng);
    }
    let mut container_families = [
        Family::new(CONTAINER_CPU, "counter"),
        Family::new(CONTAINER_MEMORY, "gauge"),
        Family::new(CONTAINER_START, "gauge"),
    ];
    for pod in &batch.pods {
        for container in &pod.containers {
            render_container(pod, container, &mut container_families, &mut rng);
        }
    }
    let mut families: Vec<Family> = container_families.into_iter().collect();
    families.extend([node_cpu, node_memory]);
    families.extend(noise_families(batch));
    rng.shuffle(&mut families);

    let mut text = String::new();
    for mut family in families {
        rng.shuffle(&mut family.series);
        text += &family.header;
        for series in family.series {
            text += &series;
            text += if rng.one_in(3) { "\r\n" } else { "\n" };
            if rng.one_in(10) {
                text += "\n";
            }
        }
    }
    text
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn rendered_batch_decodes_to_itself(batch in node_batch(), seed in any::<u64>()) {
        let body = render(&batch, seed);
        let decoded = decode(body.as_bytes(), REQUEST_TIME_MS);
        if batch == NodeBatch::default() {
            prop_assert!(matches!(decoded, Err(DecodeError::NoMetrics { .. })), "{decoded:?}");
        } else {
            prop_assert_eq!(decoded, Ok(Decoded { batch, skipped: vec![] }), "body:\n{}", body);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (b) Differential oracle: prometheus-parse, on the label values and layouts it handles.
// ---------------------------------------------------------------------------------------------

/// One series line: metric name, labels, value text, timestamp.
#[derive(Clone, Debug)]
struct OracleSeries {
    metric: &'static str,
    labels: Vec<(&'static str, String)>,
    value: String,
    timestamp_ms: i64,
}

impl OracleSeries {
    fn render(&self) -> String {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        let block = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", labels.join(","))
        };
        format!(
            "{}{block} {} {}",
            self.metric, self.value, self.timestamp_ms
        )
    }
}

/// Label values prometheus-parse keeps intact (no `,=\"}{` or newline), mostly from a small
/// pool so that containers get both their series and pods get several containers.
fn simple_label_value(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        12 => prop::sample::select(pool).prop_map(str::to_owned),
        1 => "[a-zA-Z0-9_./: -]{1,12}",
    ]
}

/// A value as the kubelet or another exporter may print it.
fn value_text() -> impl Strategy<Value = String> {
    // Up to 2e9: seconds × 1e9 still fits a u64, so no value is out of range.
    let magnitude = prop_oneof![0.0..10.0f64, 0.0..1e6f64, 0.0..2e9f64, Just(0.0)];
    (magnitude, 0..4u8).prop_map(|(v, style)| match style {
        0 => format!("{v}"),
        1 => format!("{v:e}"),
        2 => format!("{v:.3}"),
        _ => format!("{v:E}"),
    })
}

fn oracle_series() -> impl Strategy<Value = OracleSeries> {
    let metric = prop::sample::select(vec![
        NODE_CPU,
        NODE_MEMORY,
        CONTAINER_CPU,
        CONTAINER_CPU,
        CONTAINER_MEMORY,
        CONTAINER_MEMORY,
        CONTAINER_START,
        "pod_cpu_usage_seconds_total",
        "container_swap_usage_bytes",
        "scrape_error",
    ]);
    let label = |name: &'static str, pool: &'static [&'static str]| {
        option::weighted(0.99, simple_label_value(pool)).prop_map(move |v| v.map(|v| (name, v)))
    };
    (
        metric,
        label("container", &["app", "sidecar"]),
        label("namespace", &["default", "kube-system"]),
        label("pod", &["web-0", "coredns-558bd4d5db-4dpjz"]),
        value_text(),
        1..=4_000_000_000_000i64,
    )
        .prop_map(|(metric, container, namespace, pod, value, timestamp_ms)| {
            let labels = if metric.starts_with("node_") || metric == "scrape_error" {
                vec![]
            } else {
                [container, namespace, pod].into_iter().flatten().collect()
            };
            OracleSeries {
                metric,
                labels,
                value,
                timestamp_ms,
            }
        })
}

/// What the oracle knows about one container.
#[derive(Default)]
struct OracleContainer {
    cpu: Option<(u64, i64)>,
    memory: Option<u64>,
    start_time_ms: i64,
}

/// Applies the decoder's documented rules to prometheus-parse's samples.
fn oracle_batch(scrape: &prometheus_parse::Scrape) -> NodeBatch {
    let mut node_cpu = None;
    let mut node_memory = None;
    let mut containers: BTreeMap<(String, String), BTreeMap<String, OracleContainer>> =
        BTreeMap::new();
    let mut pods_with_unnamed_container = BTreeSet::new();
    for sample in &scrape.samples {
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        let timestamp_ms = sample.timestamp.timestamp_millis();
        let cpu = ((value * 1e9).round() as u64, timestamp_ms);
        let bytes = value.round() as u64;
        match sample.metric.as_str() {
            NODE_CPU => node_cpu = Some(cpu),
            NODE_MEMORY => node_memory = Some(bytes),
            CONTAINER_CPU | CONTAINER_MEMORY | CONTAINER_START => {
                let label = |name| {
                    sample
                        .labels
                        .get(name)
                        .filter(|v| !v.is_empty())
                        .map(str::to_owned)
                };
                let (Some(namespace), Some(pod)) = (label("namespace"), label("pod")) else {
                    continue;
                };
                let Some(name) = label("container") else {
                    pods_with_unnamed_container.insert((namespace, pod));
                    continue;
                };
                let container = containers
                    .entry((namespace, pod))
                    .or_default()
                    .entry(name)
                    .or_default();
                match sample.metric.as_str() {
                    CONTAINER_CPU => container.cpu = Some(cpu),
                    CONTAINER_MEMORY => container.memory = Some(bytes),
                    _ => container.start_time_ms = (value * 1e3).round() as i64,
                }
            }
            _ => {}
        }
    }
    let node =
        node_cpu
            .zip(node_memory)
            .map(
                |((cumulative_cpu_ns, timestamp_ms), memory_bytes)| MetricsPoint {
                    start_time_ms: 0,
                    timestamp_ms,
                    cumulative_cpu_ns,
                    memory_bytes,
                },
            );
    let pods = containers
        .into_iter()
        .filter(|(key, _)| !pods_with_unnamed_container.contains(key))
        .filter_map(|((namespace, name), containers)| {
            let containers = containers
                .into_iter()
                .map(|(name, c)| {
                    let (cumulative_cpu_ns, timestamp_ms) = c.cpu?;
                    let point = MetricsPoint {
                        start_time_ms: c.start_time_ms,
                        timestamp_ms,
                        cumulative_cpu_ns,
                        memory_bytes: c.memory?,
                    };
                    Some(ContainerPoint { name, point })
                })
                .collect::<Option<Vec<_>>>()?;
            Some(PodPoints {
                namespace,
                name,
                containers,
            })
        })
        .collect();
    NodeBatch { node, pods }
}

fn oracle_text(series: &[OracleSeries]) -> String {
    let mut text = String::new();
    for (i, s) in series.iter().enumerate() {
        if i % 7 == 0 {
            text += &format!("# HELP {} some help\n# TYPE {} gauge\n", s.metric, s.metric);
        }
        text += &s.render();
        text += "\n";
    }
    text
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_agrees_with_prometheus_parse(series in vec(oracle_series(), 0..60)) {
        let text = oracle_text(&series);
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .expect("prometheus-parse reads a string");
        let consumed = series.iter().any(|s| {
            [NODE_CPU, NODE_MEMORY, CONTAINER_CPU, CONTAINER_MEMORY, CONTAINER_START].contains(&s.metric)
        });
        match decode(text.as_bytes(), REQUEST_TIME_MS) {
            Ok(decoded) => {
                prop_assert!(consumed);
                prop_assert_eq!(&decoded.batch, &oracle_batch(&scrape), "body:\n{}", text);
                // Only completeness can drop anything on these inputs, never a series error.
                let series_errors: Vec<_> = decoded
                    .skipped
                    .iter()
                    .filter(|e| !matches!(e.reason, SkipReason::MissingSeries | SkipReason::MissingLabel(_)))
                    .collect();
                prop_assert!(series_errors.is_empty(), "{series_errors:?}");
            }
            Err(error) => {
                prop_assert!(!consumed, "{error}");
                prop_assert!(matches!(error, DecodeError::NoMetrics { .. }), "{error}");
            }
        }
    }
}

#[test]
fn real_payloads_agree_with_prometheus_parse() {
    for name in ["normal.prom", "kind-node-70-pods.prom"] {
        let body = fixture(name);
        let text = std::str::from_utf8(&body).expect("utf-8");
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .expect("parses");
        let decoded = decode(&body, REQUEST_TIME_MS).expect("decodes");
        assert_eq!(decoded.batch, oracle_batch(&scrape), "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// (c) No input panics, and every result keeps the batch's invariants.
// ---------------------------------------------------------------------------------------------

/// What any successful decode guarantees.
fn assert_invariants(decoded: &Decoded, body: &[u8]) -> Result<(), TestCaseError> {
    let pods = &decoded.batch.pods;
    prop_assert!(
        pods.windows(2)
            .all(|w| (&w[0].namespace, &w[0].name) < (&w[1].namespace, &w[1].name))
    );
    for pod in pods {
        prop_assert!(!pod.containers.is_empty());
        prop_assert!(!pod.namespace.is_empty() && !pod.name.is_empty());
        prop_assert!(pod.containers.windows(2).all(|w| w[0].name < w[1].name));
        prop_assert!(
            pod.containers.iter().all(|c| !c.name.is_empty()
                && c.point.timestamp_ms > 0
                && c.point.start_time_ms >= 0)
        );
    }
    prop_assert!(
        decoded
            .batch
            .node
            .is_none_or(|n| n.timestamp_ms > 0 && n.start_time_ms == 0)
    );
    let lines = body.split(|&b| b == b'\n').count();
    prop_assert!(decoded.skipped.windows(2).all(|w| w[0].line <= w[1].line));
    prop_assert!(
        decoded
            .skipped
            .iter()
            .all(|e| e.line >= 1 && e.line <= lines)
    );
    Ok(())
}

/// Lines built from the pieces of kubelet text, so the fuzzing reaches deep into the parser.
fn kubelet_like_line() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec![
        NODE_CPU,
        NODE_MEMORY,
        CONTAINER_CPU,
        CONTAINER_MEMORY,
        CONTAINER_START,
        "pod_cpu_usage_seconds_total",
        "# TYPE x gauge",
        "",
    ]);
    let labels = "(\\{([a-z]{0,9} ?= ?\"([a-z,=}{ ]|\\\\.){0,6}\" ?,?){0,4}\\}?)?";
    let value = "[ \t]{0,2}(-?[0-9.]{0,6}(e[+-]?[0-9]{1,3})?|NaN|[+-]Inf|x)";
    let timestamp = "([ \t]{1,2}-?[0-9]{0,14})?[ \t]{0,2}\r?";
    (name, labels, value, timestamp).prop_map(|(n, l, v, t)| format!("{n}{l}{v}{t}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_bytes_never_panic(body in vec(any::<u8>(), 0..2048)) {
        if let Ok(decoded) = decode(&body, REQUEST_TIME_MS) {
            assert_invariants(&decoded, &body)?;
        }
    }

}

proptest! {
    // Fewer cases: generating these lines from regexes is slow in debug builds.
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn kubelet_like_text_never_panics(lines in vec(kubelet_like_line(), 0..40)) {
        let body = lines.join("\n");
        if let Ok(decoded) = decode(body.as_bytes(), REQUEST_TIME_MS) {
            assert_invariants(&decoded, body.as_bytes())?;
        }
    }

    #[test]
    fn mutated_real_payload_never_panics(
        edits in vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..16),
        truncate in any::<prop::sample::Index>(),
    ) {
        let mut body = fixture("kind-node-70-pods.prom");
        for (at, byte, kind) in edits {
            let at = at.index(body.len());
            match kind {
                0 => body[at] = byte,
                1 => body.insert(at, byte),
                _ => { body.remove(at); }
            }
        }
        body.truncate(truncate.index(body.len() + 1));
        if let Ok(decoded) = decode(&body, REQUEST_TIME_MS) {
            assert_invariants(&decoded, &body)?;
        }
    }
}
