//! The peer exchange's binary format (`application/vnd.kubedojo.shard.v1`): the raw kubelet
//! readings of the nodes a replica scraped, so the receiver ingests them exactly as if it had
//! scraped them itself.
//!
//! ```text
//! body   = "KDS1" count:varint frame*count            (nothing after the last frame)
//! frame  = node:str status:u8 (0 failed | 1 ok batch)
//! batch  = has_node:u8 [point] pods:varint pod*pods
//! pod    = namespace:str name:str containers:varint (name:str point)*containers
//! point  = start_ms:zigzag timestamp_ms:zigzag cpu_ns:varint memory_bytes:varint
//! str    = len:varint utf8*len                         (len ≤ 253)
//! ```
//!
//! Integers are LEB128 varints. Decoding is all or nothing: any malformed, truncated or
//! over-long body is an error and nothing of it is returned.

use crate::store::batch::{ContainerPoint, MetricsPoint, NodeBatch, PodPoints};

/// The media type of a shard body.
pub const CONTENT_TYPE: &str = "application/vnd.kubedojo.shard.v1";
const MAGIC: &[u8; 4] = b"KDS1";
/// Longest name accepted (a DNS subdomain, as Kubernetes object names).
const MAX_NAME: usize = 253;

/// One node's entry in a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeFrame {
    /// The owner's last scrape of the node failed.
    Failed,
    /// The owner's last successful scrape.
    Ok(NodeBatch),
}

/// Why a shard body was refused.
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
    /// A count larger than what is left of the body could hold.
    #[error("count {0} larger than the body")]
    Count(u64),
    /// An unknown status or flag byte.
    #[error("unknown tag {0}")]
    Tag(u8),
    /// Bytes after the last frame.
    #[error("{0} bytes after the last frame")]
    Trailing(usize),
}

/// Encodes one node's frame (kept per node and concatenated by [`assemble`]).
pub fn encode_frame(node: &str, frame: Result<&NodeBatch, ()>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + frame.map_or(0, |b| b.pods.len() * 96));
    put_str(&mut out, node);
    match frame {
        Err(()) => out.push(0),
        Ok(batch) => {
            out.push(1);
            match &batch.node {
                Some(p) => {
                    out.push(1);
                    put_point(&mut out, p);
                }
                None => out.push(0),
            }
            put_varint(&mut out, batch.pods.len() as u64);
            for pod in &batch.pods {
                put_str(&mut out, &pod.namespace);
                put_str(&mut out, &pod.name);
                put_varint(&mut out, pod.containers.len() as u64);
                for c in &pod.containers {
                    put_str(&mut out, &c.name);
                    put_point(&mut out, &c.point);
                }
            }
        }
    }
    out
}

/// A whole body from frames made by [`encode_frame`].
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
            1 => {
                let node_point = match r.byte()? {
                    0 => None,
                    1 => Some(r.point()?),
                    t => return Err(WireError::Tag(t)),
                };
                let pods = r.count(3)?;
                let mut batch = NodeBatch {
                    node: node_point,
                    pods: Vec::with_capacity(pods),
                };
                for _ in 0..pods {
                    let namespace = r.str()?;
                    let name = r.str()?;
                    let n = r.count(5)?;
                    let mut containers = Vec::with_capacity(n);
                    for _ in 0..n {
                        containers.push(ContainerPoint {
                            name: r.str()?,
                            point: r.point()?,
                        });
                    }
                    batch.pods.push(PodPoints {
                        namespace,
                        name,
                        containers,
                    });
                }
                NodeFrame::Ok(batch)
            }
            t => return Err(WireError::Tag(t)),
        };
        out.push((node, frame));
    }
    if r.pos != body.len() {
        return Err(WireError::Trailing(body.len() - r.pos));
    }
    Ok(out)
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

fn put_point(out: &mut Vec<u8>, p: &MetricsPoint) {
    put_varint(out, zigzag(p.start_time_ms));
    put_varint(out, zigzag(p.timestamp_ms));
    put_varint(out, p.cumulative_cpu_ns);
    put_varint(out, p.memory_bytes);
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

    fn str(&mut self) -> Result<String, WireError> {
        let n = self.varint()? as usize;
        if n > MAX_NAME {
            return Err(WireError::String);
        }
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| WireError::String)
    }

    fn point(&mut self) -> Result<MetricsPoint, WireError> {
        Ok(MetricsPoint {
            start_time_ms: unzigzag(self.varint()?),
            timestamp_ms: unzigzag(self.varint()?),
            cumulative_cpu_ns: self.varint()?,
            memory_bytes: self.varint()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn batch(pods: usize) -> NodeBatch {
        NodeBatch {
            node: Some(MetricsPoint {
                start_time_ms: 0,
                timestamp_ms: 1_764_600_000_123,
                cumulative_cpu_ns: 123_456_789_000,
                memory_bytes: 8 << 30,
            }),
            pods: (0..pods)
                .map(|i| PodPoints {
                    namespace: format!("ns-{}", i % 3),
                    name: format!("pod-{i}"),
                    containers: vec![ContainerPoint {
                        name: "app".into(),
                        point: MetricsPoint {
                            start_time_ms: 1_764_500_000_000,
                            timestamp_ms: 1_764_600_000_000 + i as i64,
                            cumulative_cpu_ns: u64::MAX - i as u64,
                            memory_bytes: 42,
                        },
                    }],
                })
                .collect(),
        }
    }

    fn body(frames: &[(String, NodeFrame)]) -> Vec<u8> {
        let enc: Vec<Vec<u8>> = frames
            .iter()
            .map(|(n, f)| match f {
                NodeFrame::Failed => encode_frame(n, Err(())),
                NodeFrame::Ok(b) => encode_frame(n, Ok(b)),
            })
            .collect();
        assemble(enc.iter().map(Vec::as_slice))
    }

    #[test]
    fn round_trip() {
        let frames = vec![
            ("node-a".to_string(), NodeFrame::Ok(batch(30))),
            ("node-b".to_string(), NodeFrame::Failed),
            ("node-c".to_string(), NodeFrame::Ok(NodeBatch::default())),
        ];
        let b = body(&frames);
        assert_eq!(decode(&b).unwrap(), frames);
        // Compact: 30 pods with one container each in well under 2 KB.
        let one = body(&frames[..1]);
        assert!(one.len() < 2048, "{} bytes", one.len());
        assert_eq!(decode(&assemble(std::iter::empty())).unwrap(), vec![]);
    }

    #[test]
    fn every_truncation_and_trailing_byte_is_refused() {
        let b = body(&[("node-a".to_string(), NodeFrame::Ok(batch(3)))]);
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
        // A forged count cannot allocate.
        let mut b = MAGIC.to_vec();
        b.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(decode(&b), Err(WireError::Count(_))));
        // An unknown status byte.
        let mut b = MAGIC.to_vec();
        b.extend([1, 1, b'n', 7]);
        assert_eq!(decode(&b), Err(WireError::Tag(7)));
        // An over-long varint.
        let mut b = MAGIC.to_vec();
        b.extend([0xff; 11]);
        assert_eq!(decode(&b), Err(WireError::Varint));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut b = MAGIC.to_vec();
            b.extend(bytes);
            let _ = decode(&b);
        }

        #[test]
        fn points_round_trip(start in any::<i64>(), ts in any::<i64>(), cpu in any::<u64>(), mem in any::<u64>()) {
            let p = MetricsPoint { start_time_ms: start, timestamp_ms: ts, cumulative_cpu_ns: cpu, memory_bytes: mem };
            let b = NodeBatch { node: Some(p), pods: vec![] };
            let frames = vec![("n".to_string(), NodeFrame::Ok(b))];
            prop_assert_eq!(decode(&body(&frames)).unwrap(), frames);
        }
    }
}
