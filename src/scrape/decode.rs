//! Decoder for the kubelet's `/metrics/resource` endpoint (Prometheus text format 0.0.4) into a
//! [`NodeBatch`].
//!
//! It mirrors metrics-server's `pkg/scraper/client/resource/decode.go`
//! (<https://github.com/kubernetes-sigs/metrics-server/blob/master/pkg/scraper/client/resource/decode.go>)
//! and fixes its known flaws:
//!
//! - **Per-series errors.** A bad series is reported in [`Decoded::skipped`] and never discards
//!   the node's good series. Only a body that is not Prometheus text at all fails the whole node
//!   ([`DecodeError`]).
//! - **CPU timestamp.** [`MetricsPoint::timestamp_ms`] is the timestamp of the CPU sample, not of
//!   whichever line came last.
//! - **Idle containers.** A CPU or memory value of 0 is valid.
//! - **Whole pods only.** A pod with any incomplete container is left out entirely, and the
//!   reason is recorded.
//! - **Real label parsing.** Label values may contain `,`, `=`, `{`, `}` and the escapes `\\`,
//!   `\"` and `\n`. Labels can come in any order, and a trailing comma is allowed.
//!
//! Only five metrics are read (`metrics-server-notes.md` §1.4):
//!
//! | metric | becomes |
//! |---|---|
//! | `node_cpu_usage_seconds_total` | node CPU: seconds × 1e9 ns, and the node timestamp |
//! | `node_memory_working_set_bytes` | node memory in bytes |
//! | `container_cpu_usage_seconds_total` | container CPU: seconds × 1e9 ns, and the container timestamp |
//! | `container_memory_working_set_bytes` | container memory in bytes |
//! | `container_start_time_seconds` | container start: seconds × 1000 ms (its own timestamp is ignored) |
//!
//! Container series are keyed by their `namespace`, `pod` and `container` labels. Names must
//! match exactly, so `container_cpu_usage_seconds_totalx` is a different metric. Every other
//! series (`pod_*`, `*_swap_*`, `scrape_error`, `resource_scrape_error`, …) is skipped after
//! reading its name, without parsing its labels.
//!
//! A sample timestamp is in milliseconds since the epoch. A series without one falls back to
//! the scrape's request time. A CPU or memory series whose timestamp is zero or negative is
//! rejected, as is a NaN, infinite or negative value, or a negative start time. A rejected
//! container series still names its container, which then lacks that metric, so its pod is left
//! out unless a valid sample of the same series is also present (the last valid sample wins).
//!
//! The scan is zero-copy: it walks the body's lines as bytes and borrows label values from the
//! body, allocating only for values with escapes and for the owned output. It never panics,
//! whatever the input, and limits nothing (the HTTP client caps the body size).
#![warn(missing_docs)]

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
};

use memchr::{memchr, memchr2};

use crate::store::batch::{ContainerPoint, MetricsPoint, NodeBatch, PodPoints};

/// What [`decode`] made of one kubelet response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// The node's point and its complete pods.
    pub batch: NodeBatch,
    /// Series and pods that were left out, and why, sorted by line.
    pub skipped: Vec<SeriesError>,
}

/// A series that was rejected, or a container or node that was left out because a metric was
/// missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {metric}: {reason}")]
pub struct SeriesError {
    /// The 1-based line number in the response body. For [`SkipReason::MissingSeries`] this is
    /// the first line of the container or node.
    pub line: usize,
    /// The metric the series belongs to, or the metric that was missing.
    pub metric: &'static str,
    /// Why it was left out.
    pub reason: SkipReason,
}

/// Why [`decode`] left a series, container or node out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    /// The `{...}` label block is malformed: a bad label name, a missing `=` or quote, or an
    /// unterminated value.
    #[error("malformed label block")]
    MalformedLabels,
    /// A label value the decoder needs is not valid UTF-8.
    #[error("label value is not valid UTF-8")]
    InvalidUtf8,
    /// A container series lacks this label or has it empty. If the series names its pod, the
    /// whole pod is left out.
    #[error("missing or empty label `{0}`")]
    MissingLabel(&'static str),
    /// The line has no sample value.
    #[error("no sample value")]
    MissingValue,
    /// The sample value is not a number.
    #[error("sample value is not a number")]
    MalformedValue,
    /// The sample value is NaN or infinite.
    #[error("sample value is NaN or infinite")]
    NotFinite,
    /// The sample value is negative.
    #[error("sample value is negative")]
    Negative,
    /// The sample value is too large for its unit.
    #[error("sample value is too large")]
    OutOfRange,
    /// The timestamp is not an integer number of milliseconds.
    #[error("timestamp is not an integer")]
    MalformedTimestamp,
    /// The timestamp is zero or negative.
    #[error("timestamp is zero or negative")]
    NonPositiveTimestamp,
    /// Something follows the timestamp.
    #[error("unexpected data after the sample")]
    TrailingData,
    /// A container (or the node) has no valid sample of this metric, so its pod (or the node
    /// point) is left out.
    #[error("no valid sample for this container or node; its pod or node point is left out")]
    MissingSeries,
}

/// Why a whole kubelet response could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A line is neither a comment nor a sample, so the body is something else: HTML, JSON,
    /// a plain-text error, binary data.
    #[error("kubelet response is not Prometheus text: line {line} starts with {excerpt:?}")]
    NotPrometheusText {
        /// The 1-based line number.
        line: usize,
        /// The start of that line, lossily decoded as UTF-8.
        excerpt: String,
    },
    /// The body holds no series of the node and container metrics at all: it is empty, has
    /// only comments, or has only other metrics (e.g. `resource_scrape_error 1`).
    ///
    /// An empty 200 response is an error rather than an empty batch, so a kubelet that returns
    /// nothing shows as a failed scrape with this message instead of silently emptying the
    /// node's pods.
    #[error(
        "kubelet response has no resource metrics: no node_* or container_* series in {lines} lines"
    )]
    NoMetrics {
        /// How many lines the body had.
        lines: usize,
    },
}

/// Decodes a kubelet `/metrics/resource` body.
///
/// `request_time_ms` (milliseconds since the epoch) is used as the timestamp of series that
/// carry none.
///
/// # Errors
///
/// [`DecodeError::NotPrometheusText`] if any line is neither blank, a `#` comment nor a
/// sample (a metric name followed by `{` or whitespace), and [`DecodeError::NoMetrics`] if no
/// line is a series of the five metrics read (an empty body included). Problems with single
/// series are not errors: they are listed in [`Decoded::skipped`].
pub fn decode(body: &[u8], request_time_ms: i64) -> Result<Decoded, DecodeError> {
    let mut scan = Scan::new(request_time_ms);
    let mut lines = 0;
    for (number, line) in numbered_lines(body) {
        lines = number;
        scan.line(number, line)?;
    }
    scan.finish(lines)
}

/// The metrics this decoder reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    NodeCpu,
    NodeMemory,
    ContainerCpu,
    ContainerMemory,
    ContainerStartTime,
}

impl Family {
    fn from_name(name: &[u8]) -> Option<Self> {
        match name {
            b"node_cpu_usage_seconds_total" => Some(Self::NodeCpu),
            b"node_memory_working_set_bytes" => Some(Self::NodeMemory),
            b"container_cpu_usage_seconds_total" => Some(Self::ContainerCpu),
            b"container_memory_working_set_bytes" => Some(Self::ContainerMemory),
            b"container_start_time_seconds" => Some(Self::ContainerStartTime),
            _ => None,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Self::NodeCpu => "node_cpu_usage_seconds_total",
            Self::NodeMemory => "node_memory_working_set_bytes",
            Self::ContainerCpu => "container_cpu_usage_seconds_total",
            Self::ContainerMemory => "container_memory_working_set_bytes",
            Self::ContainerStartTime => "container_start_time_seconds",
        }
    }
}

/// One parsed sample: the value and the optional timestamp in ms.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Sample {
    value: f64,
    timestamp_ms: Option<i64>,
}

/// A CPU reading; its timestamp becomes the point's timestamp.
#[derive(Clone, Copy, Debug)]
struct CpuReading {
    cumulative_ns: u64,
    timestamp_ms: i64,
}

/// A container seen while scanning; complete once it has both CPU and memory.
#[derive(Clone, Copy, Debug)]
struct PartialContainer {
    first_line: usize,
    cpu: Option<CpuReading>,
    memory_bytes: Option<u64>,
    start_time_ms: i64,
}

impl PartialContainer {
    fn new(first_line: usize) -> Self {
        Self {
            first_line,
            cpu: None,
            memory_bytes: None,
            start_time_ms: 0,
        }
    }

    fn point(&self) -> Option<MetricsPoint> {
        let cpu = self.cpu?;
        Some(MetricsPoint {
            start_time_ms: self.start_time_ms,
            timestamp_ms: cpu.timestamp_ms,
            cumulative_cpu_ns: cpu.cumulative_ns,
            memory_bytes: self.memory_bytes?,
        })
    }

    fn missing_series(&self, cpu: Family, memory: Family) -> impl Iterator<Item = SeriesError> {
        let missing_cpu = self.cpu.is_none().then_some(cpu);
        let missing_memory = self.memory_bytes.is_none().then_some(memory);
        let line = self.first_line;
        missing_cpu
            .into_iter()
            .chain(missing_memory)
            .map(move |family| SeriesError {
                line,
                metric: family.name(),
                reason: SkipReason::MissingSeries,
            })
    }
}

/// A container's identity, borrowed from the body unless a label value had escapes.
/// Field order gives the output order: namespace, pod, container.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ContainerKey<'a> {
    namespace: Cow<'a, str>,
    pod: Cow<'a, str>,
    container: Cow<'a, str>,
}

/// A pod's identity: (namespace, pod).
type PodKey<'a> = (Cow<'a, str>, Cow<'a, str>);

/// The three labels of a container series, as raw label values.
#[derive(Clone, Copy, Default)]
struct RawContainerLabels<'a> {
    namespace: Option<RawValue<'a>>,
    pod: Option<RawValue<'a>>,
    container: Option<RawValue<'a>>,
}

/// A quoted label value without its quotes, still escaped if `escaped`.
#[derive(Clone, Copy)]
struct RawValue<'a> {
    bytes: &'a [u8],
    escaped: bool,
}

/// The decoder's state while it walks the body.
struct Scan<'a> {
    request_time_ms: i64,
    consumed_series: usize,
    node_first_line: Option<usize>,
    node_cpu: Option<CpuReading>,
    node_memory_bytes: Option<u64>,
    containers: HashMap<ContainerKey<'a>, PartialContainer>,
    pods_with_unnamed_container: HashSet<PodKey<'a>>,
    skipped: Vec<SeriesError>,
}

impl<'a> Scan<'a> {
    fn new(request_time_ms: i64) -> Self {
        Self {
            request_time_ms,
            consumed_series: 0,
            node_first_line: None,
            node_cpu: None,
            node_memory_bytes: None,
            containers: HashMap::new(),
            pods_with_unnamed_container: HashSet::new(),
            skipped: Vec::new(),
        }
    }

    fn line(&mut self, number: usize, raw: &'a [u8]) -> Result<(), DecodeError> {
        let line = trim_ascii_blank_start(raw.strip_suffix(b"\r").unwrap_or(raw));
        if matches!(line.first(), None | Some(b'#')) {
            return Ok(());
        }
        let (name, after_name) = split_metric_name(line);
        if name.is_empty() || !matches!(after_name.first(), Some(b'{' | b' ' | b'\t')) {
            return Err(not_prometheus_text(number, line));
        }
        let Some(family) = Family::from_name(name) else {
            return Ok(());
        };
        self.consumed_series += 1;
        if let Err(reason) = self.series(family, number, after_name) {
            self.skipped.push(SeriesError {
                line: number,
                metric: family.name(),
                reason,
            });
        }
        Ok(())
    }

    fn series(
        &mut self,
        family: Family,
        line: usize,
        after_name: &'a [u8],
    ) -> Result<(), SkipReason> {
        match family {
            Family::NodeCpu | Family::NodeMemory => self.node_series(family, line, after_name),
            Family::ContainerCpu | Family::ContainerMemory | Family::ContainerStartTime => {
                self.container_series(family, line, after_name)
            }
        }
    }

    fn node_series(
        &mut self,
        family: Family,
        line: usize,
        after_name: &'a [u8],
    ) -> Result<(), SkipReason> {
        let after_labels = parse_label_block(after_name, |_, _| {})?;
        self.node_first_line.get_or_insert(line);
        let sample = parse_sample(after_labels)?;
        if family == Family::NodeCpu {
            self.node_cpu = Some(cpu_reading(sample, self.request_time_ms)?);
        } else {
            self.node_memory_bytes = Some(memory_bytes(sample, self.request_time_ms)?);
        }
        Ok(())
    }

    fn container_series(
        &mut self,
        family: Family,
        line: usize,
        after_name: &'a [u8],
    ) -> Result<(), SkipReason> {
        let mut labels = RawContainerLabels::default();
        let after_labels = parse_label_block(after_name, |name, value| match name {
            b"namespace" => labels.namespace = Some(value),
            b"pod" => labels.pod = Some(value),
            b"container" => labels.container = Some(value),
            _ => {}
        })?;
        let key = self.container_key(labels)?;
        // The container exists from now on, so a rejected sample below leaves it incomplete
        // (and its pod out) instead of silently vanishing from its pod.
        let container = self
            .containers
            .entry(key)
            .or_insert_with(|| PartialContainer::new(line));
        let sample = parse_sample(after_labels)?;
        match family {
            Family::ContainerCpu => {
                container.cpu = Some(cpu_reading(sample, self.request_time_ms)?);
            }
            Family::ContainerMemory => {
                container.memory_bytes = Some(memory_bytes(sample, self.request_time_ms)?);
            }
            // Family::ContainerStartTime; the node families never get here.
            _ => container.start_time_ms = start_time_ms(sample.value)?,
        }
        Ok(())
    }

    /// Builds the container key; a series that names its pod but not its container marks the
    /// pod, so the pod is left out rather than returned without that container.
    fn container_key(
        &mut self,
        labels: RawContainerLabels<'a>,
    ) -> Result<ContainerKey<'a>, SkipReason> {
        let namespace = required_label(labels.namespace, "namespace")?;
        let pod = required_label(labels.pod, "pod")?;
        match required_label(labels.container, "container") {
            Ok(container) => Ok(ContainerKey {
                namespace,
                pod,
                container,
            }),
            Err(reason) => {
                self.pods_with_unnamed_container.insert((namespace, pod));
                Err(reason)
            }
        }
    }

    fn finish(self, lines: usize) -> Result<Decoded, DecodeError> {
        if self.consumed_series == 0 {
            return Err(DecodeError::NoMetrics { lines });
        }
        let mut skipped = self.skipped;
        let node = node_point(
            self.node_first_line,
            self.node_cpu,
            self.node_memory_bytes,
            &mut skipped,
        );
        let pods = complete_pods(
            self.containers,
            &self.pods_with_unnamed_container,
            &mut skipped,
        );
        skipped.sort_by_key(|error| error.line);
        Ok(Decoded {
            batch: NodeBatch { node, pods },
            skipped,
        })
    }
}

/// The node point, when both node series were read; records what is missing otherwise.
fn node_point(
    first_line: Option<usize>,
    cpu: Option<CpuReading>,
    memory_bytes: Option<u64>,
    skipped: &mut Vec<SeriesError>,
) -> Option<MetricsPoint> {
    let first_line = first_line?;
    let node = PartialContainer {
        first_line,
        cpu,
        memory_bytes,
        start_time_ms: 0,
    };
    let point = node.point();
    if point.is_none() {
        skipped.extend(node.missing_series(Family::NodeCpu, Family::NodeMemory));
    }
    point
}

/// Groups the containers into pods sorted by (namespace, name), keeping complete pods only.
fn complete_pods(
    containers: HashMap<ContainerKey<'_>, PartialContainer>,
    pods_with_unnamed_container: &HashSet<PodKey<'_>>,
    skipped: &mut Vec<SeriesError>,
) -> Vec<PodPoints> {
    let mut containers: Vec<_> = containers.into_iter().collect();
    containers.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
    containers
        .chunk_by(|(a, _), (b, _)| a.namespace == b.namespace && a.pod == b.pod)
        .filter_map(|pod| complete_pod(pod, pods_with_unnamed_container, skipped))
        .collect()
}

/// One pod from its containers (all with the same namespace and pod, sorted by name), or
/// `None` if any container is incomplete.
fn complete_pod(
    containers: &[(ContainerKey<'_>, PartialContainer)],
    pods_with_unnamed_container: &HashSet<PodKey<'_>>,
    skipped: &mut Vec<SeriesError>,
) -> Option<PodPoints> {
    let (first, _) = containers.first()?;
    let pod_key = (first.namespace.clone(), first.pod.clone());
    if pods_with_unnamed_container.contains(&pod_key) {
        return None;
    }
    let points: Option<Vec<ContainerPoint>> = containers
        .iter()
        .map(|(key, container)| {
            let point = container.point()?;
            Some(ContainerPoint {
                name: key.container.clone().into_owned(),
                point,
            })
        })
        .collect();
    let Some(containers_points) = points else {
        for (_, container) in containers {
            skipped.extend(container.missing_series(Family::ContainerCpu, Family::ContainerMemory));
        }
        return None;
    };
    Some(PodPoints {
        namespace: pod_key.0.into_owned(),
        name: pod_key.1.into_owned(),
        containers: containers_points,
    })
}

fn cpu_reading(sample: Sample, request_time_ms: i64) -> Result<CpuReading, SkipReason> {
    let cumulative_ns = scale_to_u64(sample.value, 1e9)?;
    let timestamp_ms = sample_timestamp_ms(sample.timestamp_ms, request_time_ms)?;
    Ok(CpuReading {
        cumulative_ns,
        timestamp_ms,
    })
}

/// Memory in bytes; its timestamp is checked but not kept (the point carries the CPU one).
fn memory_bytes(sample: Sample, request_time_ms: i64) -> Result<u64, SkipReason> {
    let bytes = scale_to_u64(sample.value, 1.0)?;
    sample_timestamp_ms(sample.timestamp_ms, request_time_ms)?;
    Ok(bytes)
}

/// `container_start_time_seconds` in ms; the sample's own timestamp is ignored.
fn start_time_ms(seconds: f64) -> Result<i64, SkipReason> {
    /// 2^63: the first f64 beyond `i64::MAX`.
    const I64_END: f64 = 9_223_372_036_854_775_808.0;
    let ms = checked_scale(seconds, 1e3)?;
    if ms >= I64_END {
        return Err(SkipReason::OutOfRange);
    }
    // In range and integral after the check above, so the cast is exact.
    Ok(ms as i64)
}

/// `value × factor`, rounded to the nearest integer, as a `u64`.
fn scale_to_u64(value: f64, factor: f64) -> Result<u64, SkipReason> {
    /// 2^64: the first f64 beyond `u64::MAX`.
    const U64_END: f64 = 18_446_744_073_709_551_616.0;
    let scaled = checked_scale(value, factor)?;
    if scaled >= U64_END {
        return Err(SkipReason::OutOfRange);
    }
    // In range and integral after the check above, so the cast is exact.
    Ok(scaled as u64)
}

/// Rejects NaN, infinite and negative values, then scales and rounds.
fn checked_scale(value: f64, factor: f64) -> Result<f64, SkipReason> {
    if !value.is_finite() {
        return Err(SkipReason::NotFinite);
    }
    if value < 0.0 {
        return Err(SkipReason::Negative);
    }
    Ok((value * factor).round())
}

fn sample_timestamp_ms(timestamp_ms: Option<i64>, request_time_ms: i64) -> Result<i64, SkipReason> {
    match timestamp_ms {
        None => Ok(request_time_ms),
        Some(ms) if ms > 0 => Ok(ms),
        Some(_) => Err(SkipReason::NonPositiveTimestamp),
    }
}

fn required_label<'a>(
    raw: Option<RawValue<'a>>,
    label: &'static str,
) -> Result<Cow<'a, str>, SkipReason> {
    let value = unescape_label_value(raw.ok_or(SkipReason::MissingLabel(label))?)?;
    if value.is_empty() {
        // An empty label value is the same as no label in Prometheus.
        return Err(SkipReason::MissingLabel(label));
    }
    Ok(value)
}

/// Lines of `body` with their 1-based numbers, split on `\n` (a trailing `\r` is left on).
fn numbered_lines(body: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut rest = body;
    let mut number = 0;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (line, after) = match memchr(b'\n', rest) {
            Some(end) => (rest.get(..end)?, rest.get(end + 1..)?),
            None => (rest, &[][..]),
        };
        rest = after;
        number += 1;
        Some((number, line))
    })
}

fn not_prometheus_text(line: usize, text: &[u8]) -> DecodeError {
    const EXCERPT_BYTES: usize = 40;
    let excerpt = text.get(..EXCERPT_BYTES).unwrap_or(text);
    DecodeError::NotPrometheusText {
        line,
        excerpt: String::from_utf8_lossy(excerpt).into_owned(),
    }
}

fn is_blank(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

fn trim_ascii_blank_start(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| !is_blank(b))
        .unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

/// Splits `bytes` after the longest prefix whose bytes satisfy `keep`.
fn split_while(bytes: &[u8], keep: impl Fn(u8) -> bool) -> (&[u8], &[u8]) {
    let end = bytes.iter().position(|&b| !keep(b)).unwrap_or(bytes.len());
    bytes.split_at_checked(end).unwrap_or((bytes, &[]))
}

/// Splits off a metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`); the name is empty if there is none.
fn split_metric_name(line: &[u8]) -> (&[u8], &[u8]) {
    if line.first().is_some_and(u8::is_ascii_digit) {
        return (&[], line);
    }
    split_while(line, |b| {
        b.is_ascii_alphanumeric() || b == b'_' || b == b':'
    })
}

/// Splits off a label name (`[a-zA-Z_][a-zA-Z0-9_]*`); the name is empty if there is none.
fn split_label_name(text: &[u8]) -> (&[u8], &[u8]) {
    if text.first().is_some_and(u8::is_ascii_digit) {
        return (&[], text);
    }
    split_while(text, |b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Walks the optional `{name="value",...}` block at the start of `text`, handing each label to
/// `visit`, and returns what follows the block. Blanks are allowed around names, `=` and `,`,
/// and a trailing comma is allowed.
fn parse_label_block<'a>(
    text: &'a [u8],
    mut visit: impl FnMut(&'a [u8], RawValue<'a>),
) -> Result<&'a [u8], SkipReason> {
    let Some(mut rest) = text.strip_prefix(b"{") else {
        return Ok(text);
    };
    loop {
        rest = trim_ascii_blank_start(rest);
        if let Some(after_block) = rest.strip_prefix(b"}") {
            return Ok(after_block);
        }
        let (name, after_name) = split_label_name(rest);
        if name.is_empty() {
            return Err(SkipReason::MalformedLabels);
        }
        let after_eq = expect_byte(after_name, b'=')?;
        let after_quote = expect_byte(after_eq, b'"')?;
        let (value, after_value) = split_quoted(after_quote)?;
        visit(name, value);
        rest = trim_ascii_blank_start(after_value);
        if let Some(after_comma) = rest.strip_prefix(b",") {
            rest = after_comma;
        } else if rest.first() != Some(&b'}') {
            return Err(SkipReason::MalformedLabels);
        }
    }
}

/// Skips blanks, then `expected`.
fn expect_byte(text: &[u8], expected: u8) -> Result<&[u8], SkipReason> {
    trim_ascii_blank_start(text)
        .strip_prefix(&[expected])
        .ok_or(SkipReason::MalformedLabels)
}

/// Splits a quoted value (the opening quote already consumed) at its closing quote, honouring
/// backslash escapes. Returns the raw value and what follows the closing quote.
fn split_quoted(text: &[u8]) -> Result<(RawValue<'_>, &[u8]), SkipReason> {
    let mut escaped = false;
    let mut from = 0;
    loop {
        let offset = text.get(from..).and_then(|rest| memchr2(b'"', b'\\', rest));
        let at = from + offset.ok_or(SkipReason::MalformedLabels)?;
        if text.get(at) == Some(&b'"') {
            let (bytes, quote_and_rest) = text
                .split_at_checked(at)
                .ok_or(SkipReason::MalformedLabels)?;
            let after_quote = quote_and_rest.get(1..).unwrap_or_default();
            return Ok((RawValue { bytes, escaped }, after_quote));
        }
        // A backslash: the next byte is escaped, whatever it is.
        escaped = true;
        from = at + 2;
    }
}

/// The label value as text: borrowed when it has no escapes, unescaped otherwise.
/// `\\`, `\"` and `\n` are unescaped; any other backslash is kept as is (as Prometheus does).
fn unescape_label_value(raw: RawValue<'_>) -> Result<Cow<'_, str>, SkipReason> {
    let text = std::str::from_utf8(raw.bytes).map_err(|_| SkipReason::InvalidUtf8)?;
    if !raw.escaped {
        return Ok(Cow::Borrowed(text));
    }
    let mut unescaped = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            unescaped.push(c);
            continue;
        }
        match chars.next() {
            // A lone trailing backslash cannot occur (`split_quoted` escapes the quote).
            Some('\\') | None => unescaped.push('\\'),
            Some('"') => unescaped.push('"'),
            Some('n') => unescaped.push('\n'),
            Some(other) => {
                unescaped.push('\\');
                unescaped.push(other);
            }
        }
    }
    Ok(Cow::Owned(unescaped))
}

/// Parses `value [timestamp]` after the metric name or label block.
fn parse_sample(text: &[u8]) -> Result<Sample, SkipReason> {
    let (value, rest) = split_token(trim_ascii_blank_start(text));
    if value.is_empty() {
        return Err(SkipReason::MissingValue);
    }
    let value = parse_ascii::<f64>(value).ok_or(SkipReason::MalformedValue)?;
    let (timestamp, rest) = split_token(trim_ascii_blank_start(rest));
    let timestamp_ms = if timestamp.is_empty() {
        None
    } else {
        Some(parse_ascii::<i64>(timestamp).ok_or(SkipReason::MalformedTimestamp)?)
    };
    if !trim_ascii_blank_start(rest).is_empty() {
        return Err(SkipReason::TrailingData);
    }
    Ok(Sample {
        value,
        timestamp_ms,
    })
}

/// Splits off the bytes up to the next blank.
fn split_token(text: &[u8]) -> (&[u8], &[u8]) {
    split_while(text, |b| !is_blank(b))
}

/// Parses a token with `FromStr` (`f64` accepts `1.5e+07`, `+Inf`, `-Inf` and `NaN`).
fn parse_ascii<T: std::str::FromStr>(token: &[u8]) -> Option<T> {
    std::str::from_utf8(token).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST_TIME_MS: i64 = 1_700_000_000_000;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/kubelet/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
    }

    fn decode_ok(body: &str) -> Decoded {
        decode(body.as_bytes(), REQUEST_TIME_MS).expect("body decodes")
    }

    fn point(
        start_time_ms: i64,
        timestamp_ms: i64,
        cumulative_cpu_ns: u64,
        memory_bytes: u64,
    ) -> MetricsPoint {
        MetricsPoint {
            start_time_ms,
            timestamp_ms,
            cumulative_cpu_ns,
            memory_bytes,
        }
    }

    fn pod(namespace: &str, name: &str, containers: &[(&str, MetricsPoint)]) -> PodPoints {
        PodPoints {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            containers: containers
                .iter()
                .map(|&(name, point)| ContainerPoint {
                    name: name.to_owned(),
                    point,
                })
                .collect(),
        }
    }

    fn series_error(line: usize, metric: &'static str, reason: SkipReason) -> SeriesError {
        SeriesError {
            line,
            metric,
            reason,
        }
    }

    /// A container's cpu and memory lines.
    fn container_lines(
        namespace: &str,
        pod: &str,
        container: &str,
        cpu: &str,
        memory: &str,
    ) -> String {
        format!(
            "container_cpu_usage_seconds_total{{container=\"{container}\",namespace=\"{namespace}\",pod=\"{pod}\"}} {cpu} 1000\n\
             container_memory_working_set_bytes{{container=\"{container}\",namespace=\"{namespace}\",pod=\"{pod}\"}} {memory} 1000\n"
        )
    }

    const NODE_LINES: &str =
        "node_cpu_usage_seconds_total 10 2000\nnode_memory_working_set_bytes 20 2000\n";

    const COREDNS_NAMESPACE: &str = "kube-system";
    const COREDNS_POD: &str = "coredns-558bd4d5db-4dpjz";

    #[test]
    fn normal_payload_gives_node_and_container_with_exact_values() {
        let decoded = decode(&fixture("normal.prom"), REQUEST_TIME_MS).expect("decodes");
        let expected = NodeBatch {
            node: Some(point(0, 1_633_253_809_720, 357_354_910_000, 1_616_273_408)),
            pods: vec![pod(
                COREDNS_NAMESPACE,
                COREDNS_POD,
                &[(
                    "coredns",
                    point(
                        1_633_252_712_000,
                        1_633_253_812_125,
                        4_710_169_000,
                        12_533_760,
                    ),
                )],
            )],
        };
        assert_eq!(
            decoded,
            Decoded {
                batch: expected,
                skipped: vec![]
            }
        );
    }

    #[test]
    fn payload_without_timestamps_uses_request_time() {
        let decoded = decode(&fixture("no-timestamps.prom"), REQUEST_TIME_MS).expect("decodes");
        let expected = NodeBatch {
            node: Some(point(0, REQUEST_TIME_MS, 357_354_910_000, 1_616_273_408)),
            pods: vec![pod(
                COREDNS_NAMESPACE,
                COREDNS_POD,
                &[(
                    "coredns",
                    point(
                        1_633_252_712_000,
                        REQUEST_TIME_MS,
                        4_710_169_000,
                        12_533_760,
                    ),
                )],
            )],
        };
        assert_eq!(
            decoded,
            Decoded {
                batch: expected,
                skipped: vec![]
            }
        );
    }

    #[test]
    fn kind_node_payload_gives_node_and_70_sorted_pods() {
        let decoded = decode(&fixture("kind-node-70-pods.prom"), REQUEST_TIME_MS).expect("decodes");
        assert_eq!(decoded.skipped, vec![]);
        let batch = decoded.batch;
        assert_eq!(
            batch.node,
            Some(point(0, 1_633_253_809_720, 357_354_910_000, 1_616_273_408))
        );
        assert_eq!(batch.pods.len(), 70);
        assert!(batch.pods.iter().all(|pod| pod.containers.len() == 1));
        assert!(
            batch
                .pods
                .is_sorted_by_key(|pod| (pod.namespace.clone(), pod.name.clone()))
        );
        let find = |name: &str| batch.pods.iter().find(|pod| pod.name == name).cloned();
        assert_eq!(
            find("etcd-e2e-control-plane"),
            Some(pod(
                "kube-system",
                "etcd-e2e-control-plane",
                &[(
                    "etcd",
                    point(0, 1_633_253_814_387, 31_349_402_000, 40_783_872)
                )]
            ))
        );
        assert_eq!(
            find("kindnet-blbtj"),
            Some(pod(
                "kube-system",
                "kindnet-blbtj",
                &[(
                    "kindnet-cni",
                    point(0, 1_633_253_806_022, 960_551_000, 8_495_104)
                )]
            ))
        );
    }

    #[test]
    fn negative_start_time_rejects_exactly_that_series() {
        let decoded =
            decode(&fixture("bad-negative-timestamp.prom"), REQUEST_TIME_MS).expect("decodes");
        let series_errors: Vec<_> = decoded
            .skipped
            .iter()
            .filter(|e| e.reason != SkipReason::MissingSeries)
            .copied()
            .collect();
        assert_eq!(
            series_errors,
            vec![series_error(
                3,
                "container_start_time_seconds",
                SkipReason::Negative
            )]
        );
        // Both containers have a start time only, so neither pod is complete.
        assert_eq!(decoded.batch, NodeBatch::default());
        assert_eq!(
            decoded
                .skipped
                .iter()
                .filter(|e| e.reason == SkipReason::MissingSeries)
                .count(),
            4
        );
    }

    #[test]
    fn negative_start_time_keeps_the_good_complete_container() {
        let mut body = String::from_utf8(fixture("bad-negative-timestamp.prom")).expect("utf-8");
        for pod_name in ["fppzx", "tpx4v"] {
            let pod_name = format!("kubernetes-dashboard-metrics-server-77db45cdf4-{pod_name}");
            body += &container_lines(
                "kubernetes-dashboard",
                &pod_name,
                "metrics-server",
                "1.5",
                "1e6",
            );
        }
        let decoded = decode_ok(&body);
        assert_eq!(
            decoded.skipped,
            vec![series_error(
                3,
                "container_start_time_seconds",
                SkipReason::Negative
            )]
        );
        let pods = decoded.batch.pods;
        assert_eq!(pods.len(), 2);
        // The bad start time is dropped, its container kept with an unknown start time.
        assert_eq!(
            pods[0].containers[0].point,
            point(0, 1000, 1_500_000_000, 1_000_000)
        );
        assert_eq!(
            pods[1].containers[0].point,
            point(1_650_974_202_419, 1000, 1_500_000_000, 1_000_000)
        );
    }

    #[test]
    fn escaped_label_values_are_unescaped() {
        let body = format!(
            "{NODE_LINES}container_cpu_usage_seconds_total{{container=\"a\\\"b\\\\c\\nd\",namespace=\"n,s=}}{{\",pod=\"p\\tq\"}} 1 5\n\
             container_memory_working_set_bytes{{pod=\"p\\tq\",namespace=\"n,s=}}{{\",container=\"a\\\"b\\\\c\\nd\"}} 2 6\n"
        );
        let decoded = decode_ok(&body);
        assert_eq!(decoded.skipped, vec![]);
        assert_eq!(
            decoded.batch.pods,
            vec![pod(
                "n,s=}{",
                "p\\tq",
                &[("a\"b\\c\nd", point(0, 5, 1_000_000_000, 2))]
            )]
        );
    }

    #[test]
    fn label_values_without_escapes_are_borrowed() {
        let plain = RawValue {
            bytes: b"coredns",
            escaped: false,
        };
        assert!(matches!(
            unescape_label_value(plain),
            Ok(Cow::Borrowed("coredns"))
        ));
        let escaped = RawValue {
            bytes: br#"a\"b"#,
            escaped: true,
        };
        assert_eq!(
            unescape_label_value(escaped),
            Ok(Cow::Owned("a\"b".to_owned()))
        );
    }

    #[test]
    fn labels_in_any_order_with_blanks_extra_labels_and_trailing_comma() {
        let body = format!(
            "{NODE_LINES}container_cpu_usage_seconds_total{{ pod = \"p\" , image=\"x}}\", container=\"c\",namespace=\"n\",}} 1\n\
             container_memory_working_set_bytes{{namespace=\"n\",container=\"c\",pod=\"p\"}}\t2\n"
        );
        let decoded = decode_ok(&body);
        assert_eq!(decoded.skipped, vec![]);
        assert_eq!(
            decoded.batch.pods,
            vec![pod(
                "n",
                "p",
                &[("c", point(0, REQUEST_TIME_MS, 1_000_000_000, 2))]
            )]
        );
    }

    #[test]
    fn crlf_line_endings_decode_like_lf() {
        let lf = fixture("normal.prom");
        let crlf = String::from_utf8(lf.clone())
            .expect("utf-8")
            .replace('\n', "\r\n");
        assert_eq!(
            decode(crlf.as_bytes(), REQUEST_TIME_MS),
            decode(&lf, REQUEST_TIME_MS)
        );
    }

    #[test]
    fn series_missing_namespace_or_pod_is_rejected() {
        let body = format!(
            "{NODE_LINES}container_cpu_usage_seconds_total{{container=\"c\",pod=\"p\"}} 1\n\
             container_cpu_usage_seconds_total{{container=\"c\",namespace=\"n\",pod=\"\"}} 1\n"
        );
        let decoded = decode_ok(&body);
        let metric = "container_cpu_usage_seconds_total";
        assert_eq!(
            decoded.skipped,
            vec![
                series_error(3, metric, SkipReason::MissingLabel("namespace")),
                series_error(4, metric, SkipReason::MissingLabel("pod")),
            ]
        );
        assert_eq!(decoded.batch.pods, vec![]);
    }

    #[test]
    fn series_missing_container_label_leaves_its_pod_out() {
        let body = format!(
            "{}{}container_memory_working_set_bytes{{namespace=\"n\",pod=\"p\"}} 3\n",
            container_lines("n", "p", "good", "1", "2"),
            container_lines("n", "other", "c", "1", "2"),
        );
        let decoded = decode_ok(&body);
        assert_eq!(
            decoded.skipped,
            vec![series_error(
                5,
                "container_memory_working_set_bytes",
                SkipReason::MissingLabel("container")
            )]
        );
        assert_eq!(
            decoded.batch.pods,
            vec![pod(
                "n",
                "other",
                &[("c", point(0, 1000, 1_000_000_000, 2))]
            )]
        );
    }

    #[test]
    fn pod_with_an_incomplete_container_is_left_out_entirely() {
        let body = format!(
            "{}{}container_cpu_usage_seconds_total{{container=\"sidecar\",namespace=\"n\",pod=\"p\"}} 1 1000\n\
             container_start_time_seconds{{container=\"idle\",namespace=\"n\",pod=\"q\"}} 1e9\n",
            container_lines("n", "p", "app", "1", "2"),
            container_lines("n", "q", "app", "1", "2"),
        );
        let decoded = decode_ok(&body);
        assert_eq!(decoded.batch.pods, vec![]);
        assert_eq!(
            decoded.skipped,
            vec![
                series_error(
                    5,
                    "container_memory_working_set_bytes",
                    SkipReason::MissingSeries
                ),
                series_error(
                    6,
                    "container_cpu_usage_seconds_total",
                    SkipReason::MissingSeries
                ),
                series_error(
                    6,
                    "container_memory_working_set_bytes",
                    SkipReason::MissingSeries
                ),
            ]
        );
    }

    #[test]
    fn zero_cpu_and_memory_are_valid() {
        let body = format!(
            "node_cpu_usage_seconds_total 0\nnode_memory_working_set_bytes 0\n{}",
            container_lines("n", "p", "idle", "0", "0e+00")
        );
        let decoded = decode_ok(&body);
        assert_eq!(decoded.skipped, vec![]);
        assert_eq!(decoded.batch.node, Some(point(0, REQUEST_TIME_MS, 0, 0)));
        assert_eq!(
            decoded.batch.pods,
            vec![pod("n", "p", &[("idle", point(0, 1000, 0, 0))])]
        );
    }

    #[test]
    fn nan_infinite_and_negative_values_are_rejected() {
        let cases = [
            ("NaN", SkipReason::NotFinite),
            ("+Inf", SkipReason::NotFinite),
            ("-Inf", SkipReason::NotFinite),
            ("-1", SkipReason::Negative),
            ("-1e-9", SkipReason::Negative),
            ("1e300", SkipReason::OutOfRange),
            ("x1", SkipReason::MalformedValue),
        ];
        for (value, reason) in cases {
            let body = format!("{NODE_LINES}{}", container_lines("n", "p", "c", value, "2"));
            let decoded = decode_ok(&body);
            assert_eq!(decoded.batch.pods, vec![], "cpu {value}");
            assert_eq!(
                decoded.skipped.first(),
                Some(&series_error(
                    3,
                    "container_cpu_usage_seconds_total",
                    reason
                )),
                "cpu {value}"
            );

            let body =
                format!("node_cpu_usage_seconds_total 1\nnode_memory_working_set_bytes {value}\n");
            let decoded = decode_ok(&body);
            assert_eq!(decoded.batch.node, None, "memory {value}");
            assert_eq!(
                decoded.skipped,
                vec![
                    series_error(
                        1,
                        "node_memory_working_set_bytes",
                        SkipReason::MissingSeries
                    ),
                    series_error(2, "node_memory_working_set_bytes", reason),
                ],
                "memory {value}"
            );
        }
    }

    #[test]
    fn scientific_notation_and_signs_are_read() {
        let body = "node_cpu_usage_seconds_total +1.5e+00 7\nnode_memory_working_set_bytes 1.616273408E+09 8\n";
        assert_eq!(
            decode_ok(body).batch.node,
            Some(point(0, 7, 1_500_000_000, 1_616_273_408))
        );
    }

    #[test]
    fn point_timestamp_is_the_cpu_one_and_start_time_timestamp_is_ignored() {
        let body = "container_memory_working_set_bytes{container=\"c\",namespace=\"n\",pod=\"p\"} 2 9000\n\
                    container_cpu_usage_seconds_total{container=\"c\",namespace=\"n\",pod=\"p\"} 1 5000\n\
                    container_start_time_seconds{container=\"c\",namespace=\"n\",pod=\"p\"} 1.5 -62135596800000\n";
        let decoded = decode_ok(body);
        assert_eq!(decoded.skipped, vec![]);
        assert_eq!(
            decoded.batch.pods,
            vec![pod("n", "p", &[("c", point(1500, 5000, 1_000_000_000, 2))])]
        );
    }

    #[test]
    fn zero_or_negative_timestamps_reject_their_series() {
        let body = format!(
            "node_cpu_usage_seconds_total 1 0\nnode_memory_working_set_bytes 2 3\n{}",
            container_lines("n", "p", "c", "1", "2").replace("2 1000", "2 -1000")
        );
        let decoded = decode_ok(&body);
        assert_eq!(decoded.batch, NodeBatch::default());
        assert_eq!(
            decoded.skipped,
            vec![
                series_error(
                    1,
                    "node_cpu_usage_seconds_total",
                    SkipReason::NonPositiveTimestamp
                ),
                series_error(1, "node_cpu_usage_seconds_total", SkipReason::MissingSeries),
                series_error(
                    3,
                    "container_memory_working_set_bytes",
                    SkipReason::MissingSeries
                ),
                series_error(
                    4,
                    "container_memory_working_set_bytes",
                    SkipReason::NonPositiveTimestamp
                ),
            ]
        );
    }

    #[test]
    fn malformed_series_are_reported_and_the_rest_is_kept() {
        let metric = "container_cpu_usage_seconds_total";
        let cases = [
            (
                "{container=\"c\",namespace=\"n\",pod=\"p} 1",
                SkipReason::MalformedLabels,
            ),
            (
                "{container=\"c\" namespace=\"n\"} 1",
                SkipReason::MalformedLabels,
            ),
            ("{container=c} 1", SkipReason::MalformedLabels),
            ("{0container=\"c\"} 1", SkipReason::MalformedLabels),
            ("{,} 1", SkipReason::MalformedLabels),
            ("{container=\"c\\", SkipReason::MalformedLabels),
            (
                "{container=\"c\",namespace=\"n\",pod=\"p\"}",
                SkipReason::MissingValue,
            ),
            (
                "{container=\"c\",namespace=\"n\",pod=\"p\"} 1 1.5e12",
                SkipReason::MalformedTimestamp,
            ),
            (
                "{container=\"c\",namespace=\"n\",pod=\"p\"} 1 2 3",
                SkipReason::TrailingData,
            ),
            (" ", SkipReason::MissingLabel("namespace")),
        ];
        for (rest, reason) in cases {
            let body = format!(
                "{NODE_LINES}{metric}{rest}\n{}",
                container_lines("n", "good", "c", "1", "2")
            );
            let decoded = decode_ok(&body);
            assert_eq!(
                decoded.skipped.first(),
                Some(&series_error(3, metric, reason)),
                "{rest}"
            );
            assert!(decoded.batch.node.is_some(), "{rest}");
            assert_eq!(
                decoded
                    .batch
                    .pods
                    .iter()
                    .filter(|pod| pod.name == "good")
                    .count(),
                1,
                "{rest}"
            );
        }
    }

    #[test]
    fn non_utf8_label_value_is_rejected() {
        let mut body = NODE_LINES.as_bytes().to_vec();
        body.extend_from_slice(
            b"container_cpu_usage_seconds_total{container=\"\xff\",namespace=\"n\",pod=\"p\"} 1\n",
        );
        let decoded = decode(&body, REQUEST_TIME_MS).expect("decodes");
        assert_eq!(
            decoded.skipped,
            vec![series_error(
                3,
                "container_cpu_usage_seconds_total",
                SkipReason::InvalidUtf8
            )]
        );
    }

    #[test]
    fn unknown_escapes_are_kept_verbatim() {
        let raw = RawValue {
            bytes: br"a\tb\\",
            escaped: true,
        };
        assert_eq!(unescape_label_value(raw).as_deref(), Ok("a\\tb\\"));
    }

    #[test]
    fn metric_names_match_exactly() {
        let body = format!(
            "{NODE_LINES}container_cpu_usage_seconds_totalx{{container=\"c\",namespace=\"n\",pod=\"p\"}} 1\n\
             container_cpu_usage_seconds_tota{{container=\"c\",namespace=\"n\",pod=\"p\"}} 1\n\
             node_cpu_usage_seconds_total_x 99\n"
        );
        let decoded = decode_ok(&body);
        assert_eq!(
            decoded,
            Decoded {
                batch: NodeBatch {
                    node: Some(point(0, 2000, 10_000_000_000, 20)),
                    pods: vec![]
                },
                skipped: vec![]
            }
        );
    }

    #[test]
    fn other_families_are_skipped_without_parsing_labels() {
        let body = format!(
            "{NODE_LINES}pod_cpu_usage_seconds_total{{broken 1\ncontainer_swap_usage_bytes{{container=\"c\"}} NaN\n\
             resource_scrape_error 0\n  # indented comment\n\n   \n"
        );
        assert_eq!(decode_ok(&body).skipped, vec![]);
    }

    #[test]
    fn duplicate_series_last_valid_wins() {
        let body = "node_cpu_usage_seconds_total 1 10\nnode_memory_working_set_bytes 2 10\nnode_cpu_usage_seconds_total 3 30\nnode_cpu_usage_seconds_total NaN 40\n";
        let decoded = decode_ok(body);
        assert_eq!(decoded.batch.node, Some(point(0, 30, 3_000_000_000, 2)));
        assert_eq!(
            decoded.skipped,
            vec![series_error(
                4,
                "node_cpu_usage_seconds_total",
                SkipReason::NotFinite
            )]
        );
    }

    #[test]
    fn node_point_needs_both_cpu_and_memory() {
        let decoded = decode_ok("node_memory_working_set_bytes 2 10\n");
        assert_eq!(decoded.batch.node, None);
        assert_eq!(
            decoded.skipped,
            vec![series_error(
                1,
                "node_cpu_usage_seconds_total",
                SkipReason::MissingSeries
            )]
        );
    }

    #[test]
    fn html_json_and_plain_text_bodies_are_not_prometheus_text() {
        let bodies: [&[u8]; 6] = [
            b"<!DOCTYPE html>\n<html><body>502 Bad Gateway</body></html>\n",
            b"{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\"}",
            b"Unauthorized\n",
            b"404 page not found\n",
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00",
            b"node_cpu_usage_seconds_total 1\n<html>\n",
        ];
        for body in bodies {
            let error = decode(body, REQUEST_TIME_MS).expect_err("not Prometheus text");
            assert!(
                matches!(error, DecodeError::NotPrometheusText { .. }),
                "{error:?}"
            );
            assert!(
                error
                    .to_string()
                    .starts_with("kubelet response is not Prometheus text: line "),
                "{error}"
            );
        }
        let error = decode(b"<html>\n", REQUEST_TIME_MS).expect_err("HTML");
        assert_eq!(
            error.to_string(),
            "kubelet response is not Prometheus text: line 1 starts with \"<html>\""
        );
    }

    #[test]
    fn body_without_resource_metrics_is_an_error() {
        let no_metrics = |lines| Err(DecodeError::NoMetrics { lines });
        assert_eq!(decode(b"", REQUEST_TIME_MS), no_metrics(0));
        assert_eq!(decode(b"\n\n", REQUEST_TIME_MS), no_metrics(2));
        assert_eq!(
            decode(b"# HELP scrape_error x\nscrape_error 1\n", REQUEST_TIME_MS),
            no_metrics(2)
        );
        assert_eq!(
            DecodeError::NoMetrics { lines: 0 }.to_string(),
            "kubelet response has no resource metrics: no node_* or container_* series in 0 lines"
        );
    }

    #[test]
    fn errors_display_line_metric_and_reason() {
        let error = series_error(
            7,
            "container_cpu_usage_seconds_total",
            SkipReason::MissingLabel("pod"),
        );
        assert_eq!(
            error.to_string(),
            "line 7: container_cpu_usage_seconds_total: missing or empty label `pod`"
        );
    }
}
