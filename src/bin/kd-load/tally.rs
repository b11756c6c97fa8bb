//! Per-watcher accounting of a metrics watch stream (`kd-load watchers`): the body is split
//! into lines as it arrives (only a partial line is kept between chunks, never the body), each
//! event is mapped to its pod, and a tick ends when a pod repeats.
//!
//! Every pod's served content changes with each scrape (its sample timestamp), so a correct
//! stream carries each pod once per scrape tick. PodMetrics carry no resourceVersion of their
//! own, so ticks are found from the events themselves: the first event for a pod already seen
//! since the last boundary starts the next tick. A tick with a pod missing is short, a repeated
//! pod closes it early (short too), a tick missed as a whole leaves the watcher with fewer ticks
//! than the others; [`check`] turns all of these into errors.
//!
//! Boundaries are exact once a tick was whole (every pod is then seen, so the next tick's first
//! event repeats one), whatever the order of pods within ticks. kd-load therefore resumes every
//! watch from a list taken between two scrapes (`watchers.rs`), so that the first tick is whole;
//! a watch resumed in the middle of a scrape may merge that partial tick with the next one.

use std::collections::HashMap;
use std::time::Instant;

use memchr::memmem;

/// The pods a watch is expected to carry (from the list the watches resume from).
pub struct Pods {
    index: HashMap<Box<[u8]>, u32>,
}

/// `namespace/name`, the key of [`Pods`].
fn pod_key(out: &mut Vec<u8>, namespace: &[u8], name: &[u8]) {
    out.clear();
    out.extend_from_slice(namespace);
    out.push(b'/');
    out.extend_from_slice(name);
}

impl Pods {
    /// The pods `(namespace, name)`; duplicates count once.
    pub fn new<'a>(pods: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut key = Vec::new();
        let mut index = HashMap::new();
        for (ns, name) in pods {
            pod_key(&mut key, ns.as_bytes(), name.as_bytes());
            let next = index.len() as u32;
            index.entry(key.clone().into_boxed_slice()).or_insert(next);
        }
        Pods { index }
    }

    /// Number of pods.
    pub fn len(&self) -> usize {
        self.index.len()
    }
}

/// One tick as a watcher received it.
#[derive(Clone, Debug)]
pub struct TickStat {
    /// Events (one per pod when correct).
    pub events: u32,
    /// Bytes of those events' lines.
    pub bytes: u64,
    /// When its first and last event arrived.
    pub first: Instant,
    /// See `first`.
    pub last: Instant,
}

/// The accounting of one watch stream.
pub struct Tally {
    /// Pods seen since the last tick boundary (a bit per pod index).
    seen: Vec<u64>,
    /// The tick being received (`None` before the first event).
    current: Option<TickStat>,
    /// Ticks closed by a repeat, in order; index 0 is the tick the watch resumed into.
    pub ticks: Vec<TickStat>,
    /// A line split across chunks.
    carry: Vec<u8>,
    key: Vec<u8>,
    /// Every byte of the body.
    pub bytes: u64,
    /// Events for pods not in the list (counted, not fatal).
    pub unknown: u64,
    /// The first unknown pod, for the report.
    pub unknown_example: Option<String>,
    /// Bookmarks (ignored otherwise).
    pub bookmarks: u64,
    /// Why the stream ended before kd-load stopped it (ERROR event, cut off, bad line, status).
    pub ended: Option<String>,
}

/// A line longer than this is an error (a PodMetrics line is well under 4 KiB).
const MAX_LINE: usize = 1 << 20;

impl Tally {
    /// An empty tally for a watch over `pods`.
    pub fn new(pods: &Pods) -> Self {
        Tally {
            seen: vec![0; pods.len().div_ceil(64)],
            current: None,
            ticks: Vec::new(),
            carry: Vec::new(),
            key: Vec::new(),
            bytes: 0,
            unknown: 0,
            unknown_example: None,
            bookmarks: 0,
            ended: None,
        }
    }

    /// Accounts one chunk of the body received at `now`. An error ends the watch (ERROR
    /// event, a line that is not a watch event, a line over 1 MiB) and is kept in `ended`.
    pub fn feed(&mut self, pods: &Pods, chunk: &[u8], now: Instant) -> Result<(), String> {
        let r = self.feed_lines(pods, chunk, now);
        if let Err(e) = &r {
            self.ended.get_or_insert_with(|| e.clone());
        }
        r
    }

    fn feed_lines(&mut self, pods: &Pods, mut chunk: &[u8], now: Instant) -> Result<(), String> {
        self.bytes += chunk.len() as u64;
        if !self.carry.is_empty() {
            let Some(nl) = memchr::memchr(b'\n', chunk) else {
                self.carry.extend_from_slice(chunk);
                return self.check_carry();
            };
            let mut line = std::mem::take(&mut self.carry);
            line.extend_from_slice(&chunk[..nl]);
            let r = self.line(pods, &line, now);
            line.clear();
            self.carry = line;
            r?;
            chunk = &chunk[nl + 1..];
        }
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', chunk) {
            self.line(pods, &chunk[start..nl], now)?;
            start = nl + 1;
        }
        self.carry.extend_from_slice(&chunk[start..]);
        self.check_carry()
    }

    fn check_carry(&self) -> Result<(), String> {
        if self.carry.len() > MAX_LINE {
            return Err(format!("a line over {MAX_LINE} bytes"));
        }
        Ok(())
    }

    /// Ends the stream's accounting: a partial line left over is an error.
    pub fn finish(&mut self, why: &str) {
        if self.ended.is_none() {
            self.ended = Some(if self.carry.is_empty() {
                why.to_string()
            } else {
                format!("{why} (in the middle of a line)")
            });
        }
    }

    fn line(&mut self, pods: &Pods, line: &[u8], now: Instant) -> Result<(), String> {
        if line.is_empty() {
            return Ok(());
        }
        let kind = line
            .strip_prefix(br#"{"type":""#)
            .and_then(|r| memchr::memchr(b'"', r).map(|e| &r[..e]))
            .ok_or_else(|| format!("not a watch event: {}", snippet(line)))?;
        match kind {
            b"ADDED" | b"MODIFIED" | b"DELETED" => {}
            b"BOOKMARK" => {
                self.bookmarks += 1;
                return Ok(());
            }
            b"ERROR" => return Err(format!("ERROR event: {}", snippet(line))),
            _ => return Err(format!("unknown event type: {}", snippet(line))),
        }
        let (ns, name) = object_key(line)
            .ok_or_else(|| format!("event without metadata name: {}", snippet(line)))?;
        pod_key(&mut self.key, ns, name);
        let Some(&i) = pods.index.get(self.key.as_slice()) else {
            self.unknown += 1;
            self.unknown_example
                .get_or_insert_with(|| String::from_utf8_lossy(&self.key).into_owned());
            return Ok(());
        };
        let (word, bit) = (i as usize / 64, 1u64 << (i % 64));
        if self.seen[word] & bit != 0 {
            // A repeat: the tick so far is closed, this event starts the next one.
            self.ticks.extend(self.current.take());
            self.seen.iter_mut().for_each(|w| *w = 0);
        }
        self.seen[word] |= bit;
        let t = self.current.get_or_insert(TickStat {
            events: 0,
            bytes: 0,
            first: now,
            last: now,
        });
        t.events += 1;
        t.bytes += line.len() as u64 + 1;
        t.last = now;
        Ok(())
    }
}

/// The object's `metadata.namespace` (empty when absent) and `metadata.name`: the first
/// `"name"` and `"namespace"` keys after `"metadata":{` (ObjectMeta puts them first, before
/// labels).
fn object_key(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let meta = memmem::find(line, br#""metadata":{"#)? + 12;
    let rest = &line[meta..];
    let value = |k: &[u8]| {
        let at = memmem::find(rest, k)? + k.len();
        let v = &rest[at..];
        Some(&v[..memchr::memchr(b'"', v)?])
    };
    Some((
        value(br#""namespace":""#).unwrap_or_default(),
        value(br#""name":""#)?,
    ))
}

fn snippet(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(&line[..line.len().min(200)]);
    s.into_owned()
}

/// How one watcher did on one checked tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every pod exactly once.
    Complete,
    /// A closed tick with this many events (not the pod count).
    Wrong(u32),
    /// The watcher never finished this tick (ended, cut off, or behind when kd-load stopped).
    Missed,
}

/// Verdicts of ticks `1..=ticks` (tick 0 is the one the watch resumed into, partial when the
/// list was taken in the middle of a scrape) for a watcher over `pods` pods.
pub fn check(t: &Tally, pods: usize, ticks: usize) -> Vec<Verdict> {
    (1..=ticks)
        .map(|k| match t.ticks.get(k) {
            Some(s) if s.events as usize == pods => Verdict::Complete,
            Some(s) => Verdict::Wrong(s.events),
            None => Verdict::Missed,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(kind: &str, ns: &str, name: &str) -> String {
        format!(
            r#"{{"type":"{kind}","object":{{"kind":"PodMetrics","apiVersion":"metrics.k8s.io/v1beta1","metadata":{{"name":"{name}","namespace":"{ns}","creationTimestamp":"2026-01-01T00:00:00Z","labels":{{"name":"label-not-the-name"}}}},"timestamp":"2026-01-01T00:00:00Z","window":"15s","containers":[]}}}}"#
        ) + "\n"
    }

    fn pods() -> Pods {
        Pods::new([("a", "p0"), ("a", "p1"), ("b", "p0")])
    }

    /// One tick: every pod once, in the order given.
    fn tick(order: &[(&str, &str)]) -> String {
        order
            .iter()
            .map(|(ns, n)| line("MODIFIED", ns, n))
            .collect()
    }

    const ALL: [(&str, &str); 3] = [("a", "p0"), ("a", "p1"), ("b", "p0")];

    #[test]
    fn ticks_are_closed_by_a_repeat_and_counted_across_chunk_boundaries() {
        let pods = pods();
        let mut t = Tally::new(&pods);
        // Four whole ticks in different pod orders (a scrape's order is the kubelets'
        // completion order), then the first event of the next one.
        let body = [
            tick(&[("a", "p1"), ("a", "p0"), ("b", "p0")]),
            tick(&ALL),
            tick(&[("b", "p0"), ("a", "p0"), ("a", "p1")]),
            tick(&[("a", "p1"), ("b", "p0"), ("a", "p0")]),
            line("MODIFIED", "a", "p0"),
        ]
        .concat();
        let now = Instant::now();
        // Chunks of 7 bytes: every line is split, some chunks hold no newline at all.
        for c in body.as_bytes().chunks(7) {
            t.feed(&pods, c, now).unwrap();
        }
        let counts: Vec<u32> = t.ticks.iter().map(|s| s.events).collect();
        assert_eq!(counts, [3, 3, 3, 3]);
        assert_eq!(t.bytes, body.len() as u64);
        assert_eq!(
            t.ticks[1].bytes,
            tick(&ALL).len() as u64,
            "a tick's bytes are its lines"
        );
        assert_eq!(check(&t, 3, 3), [Verdict::Complete; 3]);
        // Ticks not yet closed are missed, not complete.
        assert_eq!(check(&t, 3, 4)[3], Verdict::Missed);
        assert_eq!(t.unknown, 0);
    }

    #[test]
    fn a_missing_pod_or_a_duplicate_makes_a_wrong_tick() {
        let pods = pods();
        let mut t = Tally::new(&pods);
        let body = [
            tick(&ALL),
            // Tick 1 lacks b/p0.
            tick(&[("a", "p0"), ("a", "p1")]),
            // Tick 2 carries a/p1 twice: the repeat closes it early.
            tick(&[("a", "p0"), ("a", "p1"), ("a", "p1"), ("b", "p0")]),
            tick(&ALL),
            tick(&ALL),
        ]
        .concat();
        t.feed(&pods, body.as_bytes(), Instant::now()).unwrap();
        assert_eq!(
            check(&t, 3, 4),
            [
                Verdict::Wrong(2),
                Verdict::Wrong(2),
                // The early close shifted the boundary: a/p1 and b/p0 of tick 2 and a/p0 of
                // the next make three distinct pods, then the stream is aligned again.
                Verdict::Complete,
                Verdict::Complete
            ]
        );
    }

    #[test]
    fn error_events_and_garbage_end_the_watch() {
        let pods = pods();
        let mut t = Tally::new(&pods);
        let err = r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Expired","code":410}}"#;
        let e = t
            .feed(
                &pods,
                format!("{}{err}\n", tick(&ALL)).as_bytes(),
                Instant::now(),
            )
            .unwrap_err();
        assert!(e.contains("ERROR event") && e.contains("410"), "{e}");
        assert_eq!(t.ended.as_deref(), Some(e.as_str()));
        let mut t = Tally::new(&pods);
        assert!(t.feed(&pods, b"<html>\n", Instant::now()).is_err());
        // Bookmarks are not events; unknown pods are counted.
        let mut t = Tally::new(&pods);
        let bm = r#"{"type":"BOOKMARK","object":{"kind":"PodMetrics","metadata":{"resourceVersion":"1-x"}}}"#;
        let body = format!("{bm}\n{}", line("ADDED", "c", "zz"));
        t.feed(&pods, body.as_bytes(), Instant::now()).unwrap();
        assert_eq!((t.bookmarks, t.unknown), (1, 1));
        assert_eq!(t.unknown_example.as_deref(), Some("c/zz"));
        // A stream cut in the middle of a line says so.
        t.feed(
            &pods,
            &line("MODIFIED", "a", "p0").as_bytes()[..20],
            Instant::now(),
        )
        .unwrap();
        t.finish("cut off");
        assert_eq!(
            t.ended.as_deref(),
            Some("cut off (in the middle of a line)")
        );
    }
}
