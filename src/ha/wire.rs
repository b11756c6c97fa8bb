//! The peer exchange's binary formats, version 2: the asker names the nodes it needs from this
//! peer (`application/vnd.kubedojo.shard-request.v2`), the peer answers exactly those
//! (`application/vnd.kubedojo.shard.v2`) with the state its store computed for each — last
//! readings *and* usages — so the receiver takes it without re-parsing or rate maths, or says
//! that it does not scrape the node this tick.
//!
//! ```text
//! request = "KDQ2" count:varint str*count               (count ≤ MAX_REQUEST_NODES)
//! body    = "KDS2" count:varint frame*count             (nothing after the last frame)
//! frame   = node:str status:u8 (0 failed | 1 ok state | 2 not here)
//! state   = flags:u8 (1 node series, 2 node usage served) [series]
//!           namespaces:varint str* container_names:varint str*
//!           names:str_long pods:varint pod*pods (name:varint series)*Σcontainers
//! pod     = namespace:varint name_len:varint containers:varint
//! series  = start_ms:zigzag timestamp_ms:zigzag cpu_ns:varint window_ms:zigzag
//!           cpu_nanocores:varint memory_bytes:varint first_run:u8
//! str     = len:varint utf8*len                          (len ≤ 253)
//! ```
//!
//! Integers are LEB128 varints. Decoding is all or nothing: any malformed, truncated or
//! over-long body is an error and nothing of it is returned; every count must fit in what is
//! left of the body, so a forged count cannot make the receiver allocate. The state's own
//! structure (order, indices) is checked again by the store when it takes it.

use crate::store::Usage;
use crate::store::transfer::{ContainerState, NodeState, PodState, SeriesState};

/// The media type of a shard body.
pub const CONTENT_TYPE: &str = "application/vnd.kubedojo.shard.v2";
/// The media type of a request body (the nodes asked for).
pub const REQUEST_CONTENT_TYPE: &str = "application/vnd.kubedojo.shard-request.v2";
const MAGIC: &[u8; 4] = b"KDS2";
const REQUEST_MAGIC: &[u8; 4] = b"KDQ2";
/// Longest name accepted (a DNS subdomain, as Kubernetes object names).
const MAX_NAME: usize = crate::store::transfer::MAX_NAME;
/// Most nodes one request may name (the asker splits longer lists).
pub const MAX_REQUEST_NODES: usize = 20_000;
/// Largest request body a peer reads: `MAX_REQUEST_NODES` names of the longest length.
pub const MAX_REQUEST_BYTES: usize = 16 + MAX_REQUEST_NODES * (MAX_NAME + 2);

/// One node's entry in an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeFrame {
    /// The owner's last scrape of the node failed.
    Failed,
    /// The owner's state of the node after its last successful scrape.
    Ok(NodeState),
    /// The peer does not scrape this node this tick (its member view differs from the asker's,
    /// or it has no reading yet): the asker tries the next owner or scrapes it itself.
    NotHere,
}

/// Why a body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The body does not start with the magic bytes.
    #[error("not a shard body (bad magic)")]
    Magic,
    /// The body ended inside a value.
    #[error("truncated shard body")]
    Truncated,
    /// A varint longer than 10 bytes or overflowing 64 bits.
    #[error("malformed varint")]
    Varint,
    /// A string too long or not UTF-8.
    #[error("bad string")]
    String,
    /// A count larger than what is left of the body could hold (or than a request may name).
    #[error("count {0} too large")]
    Count(u64),
    /// An unknown status or flag byte.
    #[error("unknown tag {0}")]
    Tag(u8),
    /// Bytes after the last frame.
    #[error("{0} bytes after the last frame")]
    Trailing(usize),
}

/// A request body naming `nodes` (at most [`MAX_REQUEST_NODES`]; the caller splits).
pub fn encode_request<'a>(nodes: impl ExactSizeIterator<Item = &'a str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + nodes.len() * 24);
    out.extend_from_slice(REQUEST_MAGIC);
    put_varint(&mut out, nodes.len() as u64);
    for n in nodes {
        put_str(&mut out, n);
    }
    out
}

/// Decodes a request body; all or nothing.
pub fn decode_request(body: &[u8]) -> Result<Vec<String>, WireError> {
    let mut r = Reader { buf: body, pos: 0 };
    if r.take(4).map_err(|_| WireError::Magic)? != REQUEST_MAGIC {
        return Err(WireError::Magic);
    }
    let count = r.count(1)?;
    if count > MAX_REQUEST_NODES {
        return Err(WireError::Count(count as u64));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(r.str()?);
    }
    r.end()?;
    Ok(out)
}

/// Encodes one node's frame (kept per node by the owner and concatenated by [`assemble`]).
pub fn encode_frame(node: &str, frame: Result<&NodeState, ()>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + frame.map_or(0, |s| s.containers.len() * 40));
    put_str(&mut out, node);
    match frame {
        Err(()) => out.push(0),
        Ok(state) => {
            out.push(1);
            put_state(&mut out, state);
        }
    }
    out
}

/// The frame saying this peer does not scrape `node` this tick.
pub fn not_here_frame(node: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(node.len() + 2);
    put_str(&mut out, node);
    out.push(2);
    out
}

/// A whole body from frames made by [`encode_frame`] / [`not_here_frame`].
pub fn assemble<'a>(frames: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(frames.len());
    parts.extend(frames);
    let mut out = Vec::with_capacity(16 + parts.iter().map(|f| f.len()).sum::<usize>());
    out.extend_from_slice(MAGIC);
    put_varint(&mut out, parts.len() as u64);
    for f in parts {
        out.extend_from_slice(f);
    }
    out
}

/// Decodes a whole body; all or nothing.
pub fn decode(body: &[u8]) -> Result<Vec<(String, NodeFrame)>, WireError> {
    let mut r = Reader { buf: body, pos: 0 };
    if r.take(4).map_err(|_| WireError::Magic)? != MAGIC {
        return Err(WireError::Magic);
    }
    let count = r.count(2)?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let node = r.str()?;
        let frame = match r.byte()? {
            0 => NodeFrame::Failed,
            1 => NodeFrame::Ok(r.state()?),
            2 => NodeFrame::NotHere,
            t => return Err(WireError::Tag(t)),
        };
        out.push((node, frame));
    }
    r.end()?;
    Ok(out)
}

fn put_state(out: &mut Vec<u8>, s: &NodeState) {
    let flags = u8::from(s.node.is_some()) | (u8::from(s.node_served) << 1);
    out.push(flags);
    if let Some(n) = &s.node {
        put_series(out, n);
    }
    for table in [&s.namespaces, &s.container_names] {
        put_varint(out, table.len() as u64);
        for n in table {
            put_str(out, n);
        }
    }
    put_varint(out, s.names.len() as u64);
    out.extend_from_slice(s.names.as_bytes());
    put_varint(out, s.pods.len() as u64);
    for p in &s.pods {
        put_varint(out, u64::from(p.namespace));
        put_varint(out, u64::from(p.name_len));
        put_varint(out, u64::from(p.containers));
    }
    for c in &s.containers {
        put_varint(out, u64::from(c.name));
        put_series(out, &c.series);
    }
}

fn put_series(out: &mut Vec<u8>, p: &SeriesState) {
    put_varint(out, zigzag(p.start_time_ms));
    put_varint(out, zigzag(p.timestamp_ms));
    put_varint(out, p.cumulative_cpu_ns);
    put_varint(out, zigzag(p.window_ms));
    put_varint(out, p.usage.cpu_nanocores);
    put_varint(out, p.usage.memory_bytes);
    out.push(u8::from(p.first_run));
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Names longer than a DNS subdomain never come from a kubelet the store accepted; cut
    // them at a char boundary rather than produce a body the receiver must refuse.
    let mut end = s.len().min(MAX_NAME);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    put_varint(out, end as u64);
    out.extend_from_slice(&s.as_bytes()[..end]);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn end(&self) -> Result<(), WireError> {
        if self.pos != self.buf.len() {
            return Err(WireError::Trailing(self.buf.len() - self.pos));
        }
        Ok(())
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.byte()?;
            let part = u64::from(b & 0x7f);
            if i == 9 && part > 1 {
                return Err(WireError::Varint);
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(WireError::Varint)
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        let v = self.varint()?;
        u32::try_from(v).map_err(|_| WireError::Count(v))
    }

    /// A count of items each at least `min_item` bytes long: never more than the rest of the
    /// body could hold, so a forged count cannot make us allocate.
    fn count(&mut self, min_item: usize) -> Result<usize, WireError> {
        let n = self.varint()?;
        let left = (self.buf.len() - self.pos) as u64;
        if n > left / min_item as u64 {
            return Err(WireError::Count(n));
        }
        Ok(n as usize)
    }

    fn utf8(&mut self, n: usize) -> Result<String, WireError> {
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| WireError::String)
    }

    fn str(&mut self) -> Result<String, WireError> {
        let n = self.varint()?;
        if n > MAX_NAME as u64 {
            return Err(WireError::String);
        }
        self.utf8(n as usize)
    }

    fn series(&mut self) -> Result<SeriesState, WireError> {
        Ok(SeriesState {
            start_time_ms: unzigzag(self.varint()?),
            timestamp_ms: unzigzag(self.varint()?),
            cumulative_cpu_ns: self.varint()?,
            window_ms: unzigzag(self.varint()?),
            usage: Usage {
                cpu_nanocores: self.varint()?,
                memory_bytes: self.varint()?,
            },
            first_run: match self.byte()? {
                0 => false,
                1 => true,
                t => return Err(WireError::Tag(t)),
            },
        })
    }

    fn state(&mut self) -> Result<NodeState, WireError> {
        let flags = self.byte()?;
        if flags > 3 {
            return Err(WireError::Tag(flags));
        }
        let node = if flags & 1 == 1 {
            Some(self.series()?)
        } else {
            None
        };
        let mut tables = [Vec::new(), Vec::new()];
        for table in &mut tables {
            let n = self.count(2)?;
            table.reserve_exact(n);
            for _ in 0..n {
                table.push(self.str()?);
            }
        }
        let [namespaces, container_names] = tables;
        let names_len = self.count(1)?;
        let names = self.utf8(names_len)?;
        let pod_count = self.count(3)?;
        let mut pods = Vec::with_capacity(pod_count);
        let mut total: u64 = 0;
        for _ in 0..pod_count {
            let pod = PodState {
                namespace: self.u32()?,
                name_len: self.u32()?,
                containers: self.u32()?,
            };
            total += u64::from(pod.containers);
            pods.push(pod);
        }
        // Each container is at least 8 bytes (an index and a 7-byte series).
        let left = (self.buf.len() - self.pos) as u64;
        if total > left / 8 {
            return Err(WireError::Count(total));
        }
        let mut containers = Vec::with_capacity(total as usize);
        for _ in 0..total {
            containers.push(ContainerState {
                name: self.u32()?,
                series: self.series()?,
            });
        }
        Ok(NodeState {
            node,
            node_served: flags & 2 == 2,
            namespaces,
            container_names,
            names,
            pods,
            containers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn series(ts: i64, cpu: u64) -> SeriesState {
        SeriesState {
            start_time_ms: 1_764_500_000_000,
            timestamp_ms: ts,
            cumulative_cpu_ns: cpu,
            window_ms: 15_000,
            first_run: true,
            usage: Usage {
                cpu_nanocores: 1_234_567,
                memory_bytes: 42 << 20,
            },
        }
    }

    fn state(pods: usize) -> NodeState {
        let mut s = NodeState {
            node: Some(series(1_764_600_000_123, 123_456_789_000)),
            node_served: true,
            namespaces: vec!["ns-0".into(), "ns-1".into()],
            container_names: vec!["app".into(), "sidecar".into()],
            ..NodeState::default()
        };
        for i in 0..pods {
            let name = format!("pod-{i:03}");
            s.pods.push(PodState {
                namespace: (i * 2 / pods.max(1)) as u32,
                name_len: name.len() as u32,
                containers: 2,
            });
            s.names.push_str(&name);
            for c in 0..2 {
                s.containers.push(ContainerState {
                    name: c,
                    series: series(1_764_600_000_000 + i as i64, u64::MAX - i as u64),
                });
            }
        }
        s
    }

    fn body(frames: &[(String, NodeFrame)]) -> Vec<u8> {
        let enc: Vec<Vec<u8>> = frames
            .iter()
            .map(|(n, f)| match f {
                NodeFrame::Failed => encode_frame(n, Err(())),
                NodeFrame::Ok(s) => encode_frame(n, Ok(s)),
                NodeFrame::NotHere => not_here_frame(n),
            })
            .collect();
        assemble(enc.iter().map(Vec::as_slice))
    }

    #[test]
    fn round_trip() {
        let frames = vec![
            ("node-a".to_string(), NodeFrame::Ok(state(30))),
            ("node-b".to_string(), NodeFrame::Failed),
            ("node-c".to_string(), NodeFrame::Ok(NodeState::default())),
            ("node-d".to_string(), NodeFrame::NotHere),
        ];
        let b = body(&frames);
        assert_eq!(decode(&b).unwrap(), frames);
        // Compact: 30 pods with two containers each in a few KB.
        let one = body(&frames[..1]);
        assert!(one.len() < 4096, "{} bytes", one.len());
        assert_eq!(decode(&assemble(std::iter::empty())).unwrap(), vec![]);
    }

    #[test]
    fn requests_round_trip_and_are_bounded() {
        let nodes = ["node-a", "node-b", "ü-node"];
        let b = encode_request(nodes.iter().copied());
        assert_eq!(decode_request(&b).unwrap(), nodes);
        for cut in 0..b.len() {
            assert!(decode_request(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = b.clone();
        extra.push(0);
        assert_eq!(decode_request(&extra), Err(WireError::Trailing(1)));
        // More names than a request may carry: refused even when the body could hold them.
        let many: Vec<String> = (0..=MAX_REQUEST_NODES).map(|i| format!("n{i}")).collect();
        let b = encode_request(many.iter().map(String::as_str));
        assert!(b.len() < MAX_REQUEST_BYTES);
        assert!(matches!(decode_request(&b), Err(WireError::Count(_))));
        // A shard body is not a request, nor a request a shard body.
        assert_eq!(decode_request(&body(&[])), Err(WireError::Magic));
        assert_eq!(
            decode(&encode_request(nodes.iter().copied())),
            Err(WireError::Magic)
        );
    }

    #[test]
    fn every_truncation_and_trailing_byte_is_refused() {
        let b = body(&[("node-a".to_string(), NodeFrame::Ok(state(3)))]);
        for cut in 0..b.len() {
            assert!(decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = b.clone();
        extra.push(0);
        assert_eq!(decode(&extra), Err(WireError::Trailing(1)));
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(decode(b"{\"kind\":\"Status\"}"), Err(WireError::Magic));
        assert_eq!(decode(b""), Err(WireError::Magic));
        // Version 1 bodies are not version 2 ones.
        assert_eq!(decode(b"KDS1\x00"), Err(WireError::Magic));
        // A forged count cannot allocate.
        let mut b = MAGIC.to_vec();
        b.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(decode(&b), Err(WireError::Count(_))));
        // A forged container total (pods claiming 2^32 - 1 containers) cannot either.
        let mut b = MAGIC.to_vec();
        b.extend([1, 1, b'n', 1, 0, 0, 0, 0, 1]);
        b.extend([0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(decode(&b), Err(WireError::Count(_))));
        // An unknown status byte, an unknown flag.
        let mut b = MAGIC.to_vec();
        b.extend([1, 1, b'n', 7]);
        assert_eq!(decode(&b), Err(WireError::Tag(7)));
        let mut b = MAGIC.to_vec();
        b.extend([1, 1, b'n', 1, 9]);
        assert_eq!(decode(&b), Err(WireError::Tag(9)));
        // An over-long varint.
        let mut b = MAGIC.to_vec();
        b.extend([0xff; 11]);
        assert_eq!(decode(&b), Err(WireError::Varint));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut b = MAGIC.to_vec();
            b.extend(&bytes);
            let _ = decode(&b);
            let mut q = REQUEST_MAGIC.to_vec();
            q.extend(bytes);
            let _ = decode_request(&q);
        }

        #[test]
        fn series_round_trip(start in any::<i64>(), ts in any::<i64>(), cpu in any::<u64>(),
                             window in any::<i64>(), rate in any::<u64>(), mem in any::<u64>(),
                             first in any::<bool>()) {
            let s = SeriesState { start_time_ms: start, timestamp_ms: ts, cumulative_cpu_ns: cpu,
                window_ms: window, first_run: first, usage: Usage { cpu_nanocores: rate, memory_bytes: mem } };
            let st = NodeState { node: Some(s), ..NodeState::default() };
            let frames = vec![("n".to_string(), NodeFrame::Ok(st))];
            prop_assert_eq!(decode(&body(&frames)).unwrap(), frames);
        }
    }
}
