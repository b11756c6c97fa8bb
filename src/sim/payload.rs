//! Renders one node's kubelet `/metrics/resource` body (Prometheus text format 0.0.4).
//!
//! Mirrors kubernetes `pkg/kubelet/metrics/collectors/resource_metrics.go` as encoded by
//! client_golang's text encoder (see `tests/fixtures/kubelet/*.prom`):
//! - families in alphabetical order, each with `# HELP <name> [STABLE|ALPHA] …` and
//!   `# TYPE`; empty families are left out;
//! - series sorted by label values, label names sorted (`container`, `namespace`, `pod`);
//! - values formatted like Go's `strconv.FormatFloat(v, 'g', -1, 64)` (`1.253376e+07`,
//!   `577536`, `40.384910049`);
//! - an explicit millisecond timestamp per series, a few ms apart like a real kubelet,
//!   except `container_start_time_seconds` and the scrape-error gauge, which have none.
//!
//! Every CPU value is computed *at its own timestamp*, so between two renders the rate
//! `Δvalue / Δtimestamp` is exactly the container's
//! [`SimContainer::mean_cpu_nanocores`](super::SimContainer::mean_cpu_nanocores) over that
//! time (its constant `cpu_nanocores` without a wave).

use super::fleet::{SimNode, SimPod, cumulative_ns, mix, saturating_sum};

/// The `Content-Type` of a kubelet metrics response.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Per-series timestamps lie in `now - JITTER_MS + 1 ..= now`.
const JITTER_MS: u64 = 25;

/// Which kubelet generation's exposition to produce.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KubeletFormat {
    /// Kubernetes ≥ 1.30: `[STABLE]` families, the `[ALPHA]` swap families (all 0) and
    /// `resource_scrape_error`.
    #[default]
    Modern,
    /// Kubernetes 1.23–1.28, as in the metrics-server fixtures: everything `[ALPHA]`,
    /// no swap families, `scrape_error`.
    Legacy,
}

/// What a family is made of.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Container,
    Node,
    Pod,
    Scrape,
}

/// The value a family reports for one series.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quantity {
    Cpu,
    Memory,
    StartTime,
    Zero,
}

/// One metric family of the resource collector.
#[derive(Clone, Copy)]
struct Family {
    name: &'static str,
    help: &'static str,
    counter: bool,
    stable: bool,
    scope: Scope,
    quantity: Quantity,
}

const fn family(
    name: &'static str,
    help: &'static str,
    scope: Scope,
    quantity: Quantity,
) -> Family {
    Family {
        name,
        help,
        counter: matches!(quantity, Quantity::Cpu),
        stable: true,
        scope,
        quantity,
    }
}

const fn alpha(f: Family) -> Family {
    Family { stable: false, ..f }
}

const CONTAINER_CPU: Family = family(
    "container_cpu_usage_seconds_total",
    "Cumulative cpu time consumed by the container in core-seconds",
    Scope::Container,
    Quantity::Cpu,
);
const CONTAINER_MEMORY: Family = family(
    "container_memory_working_set_bytes",
    "Current working set of the container in bytes",
    Scope::Container,
    Quantity::Memory,
);
const CONTAINER_START: Family = family(
    "container_start_time_seconds",
    "Start time of the container since unix epoch in seconds",
    Scope::Container,
    Quantity::StartTime,
);
const CONTAINER_SWAP_LIMIT: Family = alpha(family(
    "container_swap_limit_bytes",
    "Current amount of the container swap limit in bytes. Reported only on non-windows systems",
    Scope::Container,
    Quantity::Zero,
));
const CONTAINER_SWAP: Family = alpha(family(
    "container_swap_usage_bytes",
    "Current amount of the container swap usage in bytes. Reported only on non-windows systems",
    Scope::Container,
    Quantity::Zero,
));
const NODE_CPU: Family = family(
    "node_cpu_usage_seconds_total",
    "Cumulative cpu time consumed by the node in core-seconds",
    Scope::Node,
    Quantity::Cpu,
);
const NODE_MEMORY: Family = family(
    "node_memory_working_set_bytes",
    "Current working set of the node in bytes",
    Scope::Node,
    Quantity::Memory,
);
const NODE_SWAP: Family = alpha(family(
    "node_swap_usage_bytes",
    "Current swap usage of the node in bytes. Reported only on non-windows systems",
    Scope::Node,
    Quantity::Zero,
));
const POD_CPU: Family = family(
    "pod_cpu_usage_seconds_total",
    "Cumulative cpu time consumed by the pod in core-seconds",
    Scope::Pod,
    Quantity::Cpu,
);
const POD_MEMORY: Family = family(
    "pod_memory_working_set_bytes",
    "Current working set of the pod in bytes",
    Scope::Pod,
    Quantity::Memory,
);
const POD_SWAP: Family = alpha(family(
    "pod_swap_usage_bytes",
    "Current amount of the pod swap usage in bytes. Reported only on non-windows systems",
    Scope::Pod,
    Quantity::Zero,
));
const RESOURCE_SCRAPE_ERROR: Family = family(
    "resource_scrape_error",
    "1 if there was an error while getting container metrics, 0 otherwise",
    Scope::Scrape,
    Quantity::Zero,
);
const SCRAPE_ERROR: Family = alpha(family(
    "scrape_error",
    "1 if there was an error while getting container metrics, 0 otherwise",
    Scope::Scrape,
    Quantity::Zero,
));

const MODERN: [&Family; 12] = [
    &CONTAINER_CPU,
    &CONTAINER_MEMORY,
    &CONTAINER_START,
    &CONTAINER_SWAP_LIMIT,
    &CONTAINER_SWAP,
    &NODE_CPU,
    &NODE_MEMORY,
    &NODE_SWAP,
    &POD_CPU,
    &POD_MEMORY,
    &POD_SWAP,
    &RESOURCE_SCRAPE_ERROR,
];
const LEGACY: [&Family; 8] = [
    &CONTAINER_CPU,
    &CONTAINER_MEMORY,
    &CONTAINER_START,
    &NODE_CPU,
    &NODE_MEMORY,
    &POD_CPU,
    &POD_MEMORY,
    &SCRAPE_ERROR,
];

impl KubeletFormat {
    fn families(self) -> &'static [&'static Family] {
        match self {
            Self::Modern => &MODERN,
            Self::Legacy => &LEGACY,
        }
    }

    fn stability(self, family: &Family) -> &'static str {
        match (self, family.stable) {
            (Self::Modern, true) => "[STABLE] ",
            _ => "[ALPHA] ",
        }
    }
}

/// Appends `node`'s `/metrics/resource` body at `now_ms` (ms since the epoch) to `out`.
///
/// Cumulative CPU of a container at timestamp `t` is
/// [`SimContainer::cumulative_cpu_ns`](super::SimContainer::cumulative_cpu_ns) (for constant
/// usage `cpu_nanocores × (t − started_at_ms) / 1000` ns), printed in seconds; pods sum their
/// containers, and the node adds `system_cpu_nanocores × (t − booted_at_ms)`. Memory is the
/// working set at the series' timestamp. Timestamps are `now_ms` minus a deterministic
/// jitter below 25 ms.
pub fn render(node: &SimNode, now_ms: i64, out: &mut Vec<u8>) {
    let plan = Plan::new(node, now_ms);
    out.reserve(estimate_len(node, &plan));
    let mut w = Writer { out };
    for family in node.format.families() {
        if plan.is_empty(family.scope) {
            continue;
        }
        w.header(family, node.format.stability(family));
        match family.scope {
            Scope::Container => w.containers(family, node, &plan),
            Scope::Pod => w.pods(family, node, &plan),
            Scope::Node => w.node(family, node, &plan),
            Scope::Scrape => w.series_prefix(family.name).value(0, 0).end(),
        }
    }
}

/// Series order and timestamps for one render.
struct Plan {
    /// (pod index, container index, timestamp), sorted by (container, namespace, pod).
    containers: Vec<(u32, u32, i64)>,
    /// (pod index, timestamp), sorted by (namespace, pod).
    pods: Vec<(u32, i64)>,
    node_ts: i64,
}

impl Plan {
    fn new(node: &SimNode, now_ms: i64) -> Self {
        let ts = |key: u64| {
            now_ms.saturating_sub_unsigned(mix(&[node.seed, key, now_ms as u64]) % JITTER_MS)
        };
        let mut pods: Vec<u32> = (0..node.pods.len() as u32).collect();
        if !node.pods.is_sorted_by(|a, b| pod_key(a) <= pod_key(b)) {
            pods.sort_by(|&a, &b| {
                pod_key(&node.pods[a as usize]).cmp(&pod_key(&node.pods[b as usize]))
            });
        }
        let mut containers: Vec<(u32, u32, i64)> = pods
            .iter()
            .flat_map(|&p| (0..node.pods[p as usize].containers.len() as u32).map(move |c| (p, c)))
            .map(|(p, c)| (p, c, ts(u64::from(p) << 32 | u64::from(c + 1))))
            .collect();
        // Stable: within one container name the (namespace, pod) order is kept.
        containers.sort_by(|a, b| container_name(node, a).cmp(container_name(node, b)));
        Self {
            containers,
            pods: pods
                .into_iter()
                .map(|p| (p, ts(u64::from(p) << 32)))
                .collect(),
            node_ts: ts(u64::MAX),
        }
    }

    fn is_empty(&self, scope: Scope) -> bool {
        match scope {
            Scope::Container => self.containers.is_empty(),
            Scope::Pod => self.pods.is_empty(),
            Scope::Node | Scope::Scrape => false,
        }
    }
}

fn pod_key(pod: &SimPod) -> (&str, &str) {
    (&pod.namespace, &pod.name)
}

fn container_name<'a>(node: &'a SimNode, &(p, c, _): &(u32, u32, i64)) -> &'a str {
    &node.pods[p as usize].containers[c as usize].name
}

/// A generous guess of the body size, so `out` grows once.
fn estimate_len(node: &SimNode, plan: &Plan) -> usize {
    let names: usize = node
        .pods
        .iter()
        .map(|p| p.namespace.len() + p.name.len())
        .sum();
    let per_container = 5 * (120 + names / node.pods.len().max(1));
    2_000 + plan.containers.len() * per_container + plan.pods.len() * 3 * 110
}

/// Appends text to the body; every method writes one syntactic piece.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    fn put(&mut self, s: &str) -> &mut Self {
        self.out.extend_from_slice(s.as_bytes());
        self
    }

    fn header(&mut self, f: &Family, stability: &str) {
        let kind = if f.counter { "counter" } else { "gauge" };
        self.put("# HELP ")
            .put(f.name)
            .put(" ")
            .put(stability)
            .put(f.help);
        self.put("\n# TYPE ")
            .put(f.name)
            .put(" ")
            .put(kind)
            .put("\n");
    }

    fn containers(&mut self, f: &Family, node: &SimNode, plan: &Plan) {
        for &(p, c, ts) in &plan.containers {
            let pod = &node.pods[p as usize];
            let container = &pod.containers[c as usize];
            if f.quantity == Quantity::StartTime && container.started_at_ms <= 0 {
                continue; // the kubelet omits unknown start times
            }
            self.put(f.name).put("{container=\"").label(&container.name);
            self.put("\",namespace=\"")
                .label(&pod.namespace)
                .put("\",pod=\"")
                .label(&pod.name)
                .put("\"} ");
            match f.quantity {
                Quantity::Cpu => self
                    .value(container.cumulative_cpu_ns(ts), -9)
                    .timestamp(ts),
                Quantity::Memory => self.value(container.memory_bytes_at(ts), 0).timestamp(ts),
                Quantity::StartTime => self.value(container.started_at_ms as u64, -3),
                Quantity::Zero => self.value(0, 0).timestamp(ts),
            }
            .end();
        }
    }

    fn pods(&mut self, f: &Family, node: &SimNode, plan: &Plan) {
        for &(p, ts) in &plan.pods {
            let pod = &node.pods[p as usize];
            self.put(f.name).put("{namespace=\"").label(&pod.namespace);
            self.put("\",pod=\"").label(&pod.name).put("\"} ");
            match f.quantity {
                Quantity::Cpu => self.value(pod_cpu_ns(pod, ts), -9),
                Quantity::Memory => self.value(pod.memory_bytes_at(ts), 0),
                Quantity::StartTime | Quantity::Zero => self.value(0, 0),
            }
            .timestamp(ts)
            .end();
        }
    }

    fn node(&mut self, f: &Family, node: &SimNode, plan: &Plan) {
        let ts = plan.node_ts;
        let (mantissa, exp) = match f.quantity {
            Quantity::Cpu => (node_cpu_ns(node, ts), -9),
            Quantity::Memory => (node.memory_bytes_at(ts), 0),
            Quantity::StartTime | Quantity::Zero => (0, 0),
        };
        self.series_prefix(f.name)
            .value(mantissa, exp)
            .timestamp(ts)
            .end();
    }

    fn series_prefix(&mut self, name: &str) -> &mut Self {
        self.put(name).put(" ")
    }

    /// A label value, escaped as the text format requires.
    fn label(&mut self, value: &str) -> &mut Self {
        if !value.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
            return self.put(value);
        }
        for ch in value.chars() {
            match ch {
                '\\' => self.put("\\\\"),
                '"' => self.put("\\\""),
                '\n' => self.put("\\n"),
                ch => self.put(ch.encode_utf8(&mut [0; 4])),
            };
        }
        self
    }

    /// The value `mantissa × 10^exp`, formatted like Go's `FormatFloat(v, 'g', -1, 64)`.
    fn value(&mut self, mantissa: u64, exp: i32) -> &mut Self {
        write_go_float(self.out, mantissa, exp);
        self
    }

    fn timestamp(&mut self, ts: i64) -> &mut Self {
        self.put(" ");
        write_i64(self.out, ts);
        self
    }

    fn end(&mut self) {
        self.out.push(b'\n');
    }
}

fn pod_cpu_ns(pod: &SimPod, ts: i64) -> u64 {
    saturating_sum(pod.containers.iter().map(|c| c.cumulative_cpu_ns(ts)))
}

fn node_cpu_ns(node: &SimNode, ts: i64) -> u64 {
    let system = cumulative_ns(node.system_cpu_nanocores, node.booted_at_ms, ts);
    saturating_sum(node.pods.iter().map(|p| pod_cpu_ns(p, ts))).saturating_add(system)
}

/// Decimal digits of `v`, most significant first, in `buf[start..]`; returns `start`.
fn digits(mut v: u64, buf: &mut [u8; 20]) -> usize {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return i;
        }
    }
}

fn write_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    let mut buf = [0; 20];
    let start = digits(v.unsigned_abs(), &mut buf);
    out.extend_from_slice(&buf[start..]);
}

/// Writes `mantissa × 10^exp` exactly, in the shape of Go's shortest `%g`: plain decimal
/// when the decimal exponent is in `-4..6`, otherwise `d.ddde±XX`. For values with at
/// most 15 significant digits this is byte-identical to what a kubelet prints for the
/// same float64.
pub(crate) fn write_go_float(out: &mut Vec<u8>, mantissa: u64, exp: i32) {
    if mantissa == 0 {
        out.push(b'0');
        return;
    }
    let mut buf = [0; 20];
    let start = digits(mantissa, &mut buf);
    let all = &buf[start..];
    let significant = all.len() - all.iter().rev().take_while(|&&d| d == b'0').count();
    let digs = &all[..significant];
    // The value is 0.digs × 10^point.
    let point = all.len() as i32 + exp;
    let exponent = point - 1;
    if (-4..6).contains(&exponent) {
        write_fixed(out, digs, point);
    } else {
        write_exponent(out, digs, exponent);
    }
}

fn write_fixed(out: &mut Vec<u8>, digs: &[u8], point: i32) {
    if point <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', point.unsigned_abs() as usize));
        out.extend_from_slice(digs);
        return;
    }
    let point = point as usize;
    if point >= digs.len() {
        out.extend_from_slice(digs);
        out.extend(std::iter::repeat_n(b'0', point - digs.len()));
    } else {
        out.extend_from_slice(&digs[..point]);
        out.push(b'.');
        out.extend_from_slice(&digs[point..]);
    }
}

fn write_exponent(out: &mut Vec<u8>, digs: &[u8], exponent: i32) {
    out.push(digs[0]);
    if digs.len() > 1 {
        out.push(b'.');
        out.extend_from_slice(&digs[1..]);
    }
    out.extend_from_slice(if exponent < 0 { b"e-" } else { b"e+" });
    let e = exponent.unsigned_abs();
    if e < 10 {
        out.push(b'0');
    }
    write_i64(out, i64::from(e));
}

#[cfg(test)]
mod tests {
    use std::{
        collections::{BTreeMap, BTreeSet},
        io::BufRead,
    };

    use prometheus_parse::{Scrape, Value};

    use super::*;
    use crate::sim::{Fleet, FleetSpec};

    const T0: i64 = 1_750_705_770_000;

    fn go(mantissa: u64, exp: i32) -> String {
        let mut out = Vec::new();
        write_go_float(&mut out, mantissa, exp);
        String::from_utf8(out).unwrap()
    }

    fn body(node: &SimNode, now: i64) -> String {
        let mut out = Vec::new();
        render(node, now, &mut out);
        String::from_utf8(out).expect("utf-8")
    }

    fn parse(text: &str) -> Scrape {
        Scrape::parse(text.as_bytes().lines()).expect("prometheus-parse accepts the body")
    }

    fn fleet(spec: &FleetSpec) -> Fleet {
        Fleet::new(spec, T0 - 60_000).unwrap()
    }

    #[test]
    fn floats_are_formatted_like_go() {
        // Expected strings are what Go's strconv.FormatFloat(v, 'g', -1, 64) prints
        // (seen in real kubelet payloads).
        let cases = [
            ((12_533_760, 0), "1.253376e+07"),
            ((577_536, 0), "577536"),
            ((1_000_000, 0), "1e+06"),
            ((3_555_328, 0), "3.555328e+06"),
            ((1_137_475_584, 0), "1.137475584e+09"),
            ((4_710_169_000, -9), "4.710169"),
            ((357_354_910_000, -9), "357.35491"),
            ((40_384_910_049, -9), "40.384910049"),
            ((6_197_005_020_909, -9), "6197.005020909"),
            ((1_633_252_712_000, -3), "1.633252712e+09"),
            ((1_750_607_841_829, -3), "1.750607841829e+09"),
            ((100_000, -9), "0.0001"),
            ((50_000, -9), "5e-05"),
            ((1, -9), "1e-09"),
            ((0, -9), "0"),
            ((120, 0), "120"),
            ((999_999, 0), "999999"),
        ];
        for ((m, e), want) in cases {
            assert_eq!(go(m, e), want, "{m}e{e}");
            // The same float64 a kubelet would format (`float64(ns) / 1e9`).
            let exact = if e < 0 {
                m as f64 / 10f64.powi(-e)
            } else {
                m as f64 * 10f64.powi(e)
            };
            assert_eq!(want.parse::<f64>().unwrap(), exact, "{want} round-trips");
        }
    }

    #[test]
    fn families_are_sorted_with_help_type_and_sorted_labels() {
        let f = fleet(&FleetSpec {
            nodes: 1,
            pods_per_node: 10,
            containers_per_pod: 3,
            ..FleetSpec::default()
        });
        let text = body(&f.nodes[0], T0);
        let helps: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# HELP "))
            .collect();
        let names: Vec<&str> = helps.iter().map(|h| h.split(' ').next().unwrap()).collect();
        assert!(names.is_sorted(), "{names:?}");
        assert_eq!(names.len(), 12);
        assert!(
            helps.iter().any(|h| h.contains(" [STABLE] "))
                && helps.iter().any(|h| h.contains(" [ALPHA] "))
        );
        assert!(text.contains("\n# TYPE container_cpu_usage_seconds_total counter\n"));
        assert!(text.ends_with("resource_scrape_error 0\n"));
        for line in text.lines().filter(|l| l.starts_with("container_")) {
            let labels = &line[line.find('{').unwrap()..line.find('}').unwrap()];
            let keys: Vec<&str> = labels
                .split("=\"")
                .map(|s| s.rsplit([',', '{']).next().unwrap())
                .collect();
            assert_eq!(&keys[..3], ["container", "namespace", "pod"], "{line}");
        }
        // Series within a family are sorted by label values (container, namespace, pod).
        let cpu: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("container_cpu"))
            .collect();
        assert_eq!(cpu.len(), 30);
        assert!(cpu.iter().map(|l| l.split('}').next().unwrap()).is_sorted());
    }

    #[test]
    fn body_parses_and_carries_the_fleet_values() {
        let f = fleet(&FleetSpec {
            nodes: 1,
            pods_per_node: 30,
            ..FleetSpec::default()
        });
        let node = &f.nodes[0];
        let scrape = parse(&body(node, T0));
        let by_key = samples(&scrape, "container_memory_working_set_bytes");
        assert_eq!(by_key.len(), 60);
        for pod in &node.pods {
            for c in &pod.containers {
                let key = (
                    pod.namespace.to_string(),
                    pod.name.clone(),
                    c.name.to_string(),
                );
                assert_eq!(by_key[&key].0, c.memory_bytes as f64);
                let start = samples(&scrape, "container_start_time_seconds")[&key].0;
                assert_eq!(start, c.started_at_ms as f64 / 1000.0);
            }
        }
        let node_mem = samples(&scrape, "node_memory_working_set_bytes");
        assert_eq!(
            node_mem.values().next().unwrap().0,
            node.memory_bytes as f64
        );
        assert_eq!(samples(&scrape, "pod_memory_working_set_bytes").len(), 30);
    }

    #[test]
    fn cpu_rate_between_two_renders_is_exact() {
        let f = fleet(&FleetSpec {
            nodes: 1,
            pods_per_node: 40,
            containers_per_pod: 3,
            ..FleetSpec::default()
        });
        let node = &f.nodes[0];
        let (first, second) = (parse(&body(node, T0)), parse(&body(node, T0 + 15_000)));
        let (a, b) = (
            samples(&first, "container_cpu_usage_seconds_total"),
            samples(&second, "container_cpu_usage_seconds_total"),
        );
        for pod in &node.pods {
            for c in &pod.containers {
                let key = (
                    pod.namespace.to_string(),
                    pod.name.clone(),
                    c.name.to_string(),
                );
                let rate = rate_nanocores(a[&key], b[&key]);
                assert_eq!(rate, c.cpu_nanocores as f64, "{key:?}");
            }
            let key = (pod.namespace.to_string(), pod.name.clone(), String::new());
            let pods = (
                samples(&first, "pod_cpu_usage_seconds_total"),
                samples(&second, "pod_cpu_usage_seconds_total"),
            );
            assert_eq!(
                rate_nanocores(pods.0[&key], pods.1[&key]),
                pod.cpu_nanocores() as f64
            );
        }
        let node_key = (String::new(), String::new(), String::new());
        let nodes = (
            samples(&first, "node_cpu_usage_seconds_total"),
            samples(&second, "node_cpu_usage_seconds_total"),
        );
        assert_eq!(
            rate_nanocores(nodes.0[&node_key], nodes.1[&node_key]),
            node.cpu_nanocores as f64
        );
    }

    #[test]
    fn timestamps_are_per_series_recent_and_absent_on_start_time() {
        let f = fleet(&FleetSpec {
            nodes: 1,
            ..FleetSpec::default()
        });
        let text = body(&f.nodes[0], T0);
        let mut stamps = BTreeSet::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let fields: Vec<&str> = line.rsplitn(3, ' ').collect();
            if line.starts_with("container_start_time_seconds") || line.contains("scrape_error") {
                assert!(
                    !fields[0]
                        .parse::<i64>()
                        .is_ok_and(|t| t > 1_000_000_000_000),
                    "{line}"
                );
                continue;
            }
            let ts: i64 = fields[0].parse().unwrap();
            assert!((T0 - JITTER_MS as i64 + 1..=T0).contains(&ts), "{line}");
            stamps.insert(ts);
        }
        assert!(
            stamps.len() > 5,
            "timestamps vary between series: {stamps:?}"
        );
        assert_eq!(body(&f.nodes[0], T0), text, "rendering is deterministic");
    }

    #[test]
    fn legacy_format_matches_the_metrics_server_fixture_headers() {
        let f = fleet(&FleetSpec {
            nodes: 1,
            format: KubeletFormat::Legacy,
            ..FleetSpec::default()
        });
        let text = body(&f.nodes[0], T0);
        let fixture = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/kubelet/kind-node-70-pods.prom"
        ))
        .expect("tests/fixtures/kubelet is in the repository");
        let ours: BTreeSet<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
        let theirs: BTreeSet<&str> = fixture.lines().filter(|l| l.starts_with('#')).collect();
        let missing: Vec<_> = theirs.difference(&ours).collect();
        assert!(missing.is_empty(), "fixture headers we lack: {missing:?}");
        let extra: Vec<_> = ours.difference(&theirs).collect();
        assert!(
            extra
                .iter()
                .all(|l| l.contains("container_start_time_seconds")),
            "{extra:?}"
        );
        assert!(text.ends_with("# TYPE scrape_error gauge\nscrape_error 0\n"));
        assert!(!text.contains("swap"));
    }

    #[test]
    fn empty_node_has_only_node_and_error_families() {
        let f = fleet(&FleetSpec {
            nodes: 1,
            pods_per_node: 0,
            ..FleetSpec::default()
        });
        let text = body(&f.nodes[0], T0);
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        assert_eq!(
            families,
            [
                "node_cpu_usage_seconds_total counter",
                "node_memory_working_set_bytes gauge",
                "node_swap_usage_bytes gauge",
                "resource_scrape_error gauge"
            ]
        );
    }

    #[test]
    fn label_values_are_escaped_and_unsorted_pods_are_sorted() {
        let mut f = fleet(&FleetSpec {
            nodes: 1,
            pods_per_node: 3,
            ..FleetSpec::default()
        });
        let node = &mut f.nodes[0];
        node.pods[0].name = "we\"ird\\pod".into();
        node.pods.reverse();
        let text = body(node, T0);
        assert!(text.contains(r#"pod="we\"ird\\pod""#));
        let pods: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("pod_memory"))
            .collect();
        assert!(pods.is_sorted(), "{pods:#?}");
    }

    #[test]
    fn extreme_times_and_values_do_not_panic() {
        for start in [i64::MIN, -1, 0, 1, i64::MAX] {
            let mut f = Fleet::new(
                &FleetSpec {
                    nodes: 1,
                    pods_per_node: 3,
                    ..FleetSpec::default()
                },
                start,
            )
            .unwrap();
            f.nodes[0].pods[0].containers[0].cpu_nanocores = u64::MAX;
            f.nodes[0].pods[1].containers[0].memory_bytes = u64::MAX;
            f.nodes[0].update_totals();
            for now in [i64::MIN, -1, 0, T0, i64::MAX] {
                assert!(body(&f.nodes[0], now).ends_with("resource_scrape_error 0\n"));
            }
        }
    }

    type Key = (String, String, String);

    /// (value, timestamp ms) per (namespace, pod, container) of one family.
    fn samples(scrape: &Scrape, name: &str) -> BTreeMap<Key, (f64, i64)> {
        let label =
            |s: &prometheus_parse::Sample, k: &str| s.labels.get(k).unwrap_or_default().to_owned();
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .map(|s| {
                let (Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) = s.value else {
                    panic!("unexpected value type");
                };
                let key = (
                    label(s, "namespace"),
                    label(s, "pod"),
                    label(s, "container"),
                );
                (key, (v, s.timestamp.timestamp_millis()))
            })
            .collect()
    }

    /// Rate in nanocores between two (seconds, ms) samples, from exact nanoseconds.
    fn rate_nanocores(a: (f64, i64), b: (f64, i64)) -> f64 {
        let ns = |v: f64| (v * 1e9).round();
        (ns(b.0) - ns(a.0)) * 1000.0 / (b.1 - a.1) as f64
    }
}
