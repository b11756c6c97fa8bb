//! Kubernetes protobuf (`application/vnd.kubernetes.protobuf`): the `k8s\x00` magic, the
//! `runtime.Unknown` envelope, and the apimachinery messages our objects embed (`ObjectMeta`,
//! `ListMeta`, `Time`, `Duration`, `Quantity`, `Status`), byte for byte as Go's generated
//! `MarshalToSizedBuffer` writes them (`metav1.Time` in whole seconds, as in JSON).
//!
//! # Why hand-written messages on prost's primitives, not k8s-pb
//!
//! k8s-pb (0.9) has every Kubernetes message as a prost type, but calls itself work in
//! progress, and its owned structs would make us build a `String`/`BTreeMap` tree per object
//! per request before encoding it. Our objects already exist as borrowed views of the store
//! snapshot; the handful of messages metrics.k8s.io needs are encoded straight from those views
//! into the response buffer, with prost's `encoding` functions for keys and varints.
//!
//! # Byte compatibility
//!
//! Go's generated code (gogo-protobuf style, proto2, non-nullable fields) always writes
//! strings, integers and embedded messages, even when empty or zero; it omits only nil
//! pointers and empty repeated/map fields. Map entries are written sorted by key. A zero
//! `metav1.Time` is an empty embedded message (its `Size()` is 0). The tests in
//! `tests/metrics_protobuf.rs` re-marshal our bytes with the real Go types and compare.
//!
//! # Nested lengths
//!
//! A length-delimited field's length precedes its bytes. [`Writer::nested`] reserves room for
//! the length, writes the body in place and then writes the length, moving the body only when
//! the reserve was wrong (rare: the reserve is chosen per message from its usual size). The
//! envelope around a whole list uses [`Envelope`], which reserves a fixed prefix and moves
//! nothing: the prefix is written right-aligned and the response is a slice of the buffer.

use bytes::Bytes;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

use super::meta::ObjectMeta;
use super::status::ApiError;

/// The protobuf media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The 4-byte magic in front of every Kubernetes protobuf document.
pub const MAGIC: &[u8; 4] = b"k8s\x00";

/// A protobuf writer over one growing buffer.
pub struct Writer<'a> {
    /// The buffer written to.
    pub out: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    /// A writer appending to `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Writer { out }
    }

    /// A length-delimited string field (always written, even when empty).
    pub fn string(&mut self, field: u32, value: &str) {
        self.bytes(field, value.as_bytes());
    }

    /// A length-delimited bytes field.
    pub fn bytes(&mut self, field: u32, value: &[u8]) {
        encode_key(field, WireType::LengthDelimited, self.out);
        encode_varint(value.len() as u64, self.out);
        self.out.extend_from_slice(value);
    }

    /// A varint field (always written, even when zero). Negative values are written as
    /// ten-byte two's complement, as Go's `uint64(int64)` conversion does.
    pub fn varint(&mut self, field: u32, value: u64) {
        encode_key(field, WireType::Varint, self.out);
        encode_varint(value, self.out);
    }

    /// An embedded message field: `body` writes its fields. `reserve` is the number of bytes
    /// guessed for the length varint (1 for messages under 128 bytes, 2 under 16 KiB).
    pub fn nested(&mut self, field: u32, reserve: usize, body: impl FnOnce(&mut Writer<'_>)) {
        encode_key(field, WireType::LengthDelimited, self.out);
        let len_at = self.out.len();
        self.out.resize(len_at + reserve, 0);
        let start = self.out.len();
        body(&mut Writer { out: self.out });
        let len = self.out.len() - start;
        let need = encoded_len_varint(len as u64);
        if need != reserve {
            // Move the body so the length varint fits exactly (minimal varint, as Go writes).
            let end = self.out.len();
            if need > reserve {
                self.out.resize(end + need - reserve, 0);
                self.out.copy_within(start..end, start + need - reserve);
            } else {
                self.out.copy_within(start..end, start - (reserve - need));
                self.out.truncate(end - (reserve - need));
            }
        }
        let mut len_bytes = [0u8; 10];
        let mut slice = &mut len_bytes[..];
        encode_varint(len as u64, &mut slice);
        self.out[len_at..len_at + need].copy_from_slice(&len_bytes[..need]);
    }

    /// A `map<string, string>` field, entries sorted by key (Go sorts them).
    pub fn string_map<'m>(
        &mut self,
        field: u32,
        entries: impl IntoIterator<Item = (&'m str, &'m str)>,
    ) {
        for (k, v) in entries {
            self.nested(field, 1, |w| {
                w.string(1, k);
                w.string(2, v);
            });
        }
    }

    /// A `map<string, Quantity>` entry (call in key order).
    pub fn quantity_entry(&mut self, field: u32, key: &str, quantity: &str) {
        self.nested(field, 1, |w| {
            w.string(1, key);
            w.nested(2, 1, |q| q.string(1, quantity));
        });
    }

    /// A `metav1.Time` field from milliseconds since the Unix epoch; `None` is the zero time,
    /// written as an empty message. Go's `Time.ProtoTime` keeps whole seconds only (its `Nanos`
    /// line is commented out so that protobuf and JSON clients see the same value): nanos is 0.
    pub fn time(&mut self, field: u32, ms: Option<i64>) {
        self.nested(field, 1, |w| {
            if let Some(ms) = ms {
                w.varint(1, ms.div_euclid(1000) as u64);
                w.varint(2, 0);
            }
        });
    }

    /// A `metav1.Duration` field (nanoseconds).
    pub fn duration_ms(&mut self, field: u32, ms: i64) {
        self.nested(field, 1, |w| {
            w.varint(1, (ms.saturating_mul(1_000_000)) as u64);
        });
    }

    /// A `metav1.ListMeta` field.
    pub fn list_meta(
        &mut self,
        field: u32,
        resource_version: &str,
        continue_token: &str,
        remaining: Option<u64>,
    ) {
        self.nested(field, 1, |w| {
            w.string(1, ""); // selfLink
            w.string(2, resource_version);
            w.string(3, continue_token);
            if let Some(n) = remaining {
                w.varint(4, n);
            }
        });
    }
}

impl Writer<'_> {
    /// A `metav1.ObjectMeta` field (fields we never set are written empty, as Go does).
    pub fn object_meta(&mut self, field: u32, m: &ObjectMeta) {
        self.nested(field, 2, |w| {
            w.string(1, &m.name);
            w.string(2, ""); // generateName
            w.string(3, m.namespace_or_empty());
            w.string(4, ""); // selfLink
            w.string(5, m.uid.as_deref().unwrap_or(""));
            w.string(6, m.resource_version.as_deref().unwrap_or(""));
            w.varint(7, m.generation.unwrap_or(0) as u64);
            w.time(8, m.creation_timestamp.map(|t| t.as_millis()));
            w.string_map(11, m.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            w.string_map(
                12,
                m.annotations.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            );
        });
    }
}

/// Room reserved in front of a document for the magic and the envelope's head.
const PREFIX: usize = 4 + 1 + 10 + 128 + 1 + 10;

/// A protobuf document being written into one buffer: `k8s\x00` + `runtime.Unknown`
/// {typeMeta, raw, contentEncoding "", contentType ""}, with `raw` written in place.
pub struct Envelope {
    buf: Vec<u8>,
}

impl Envelope {
    /// Starts a document with room for `capacity` bytes of object.
    pub fn new(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(PREFIX + capacity);
        buf.resize(PREFIX, 0);
        Envelope { buf }
    }

    /// The writer for the object's own fields (the `raw` message).
    pub fn body(&mut self) -> Writer<'_> {
        Writer::new(&mut self.buf)
    }

    /// The finished document, typed `kind` in `api_version` (`metrics.k8s.io/v1beta1`; the
    /// two together stay under 128 bytes, which every Kubernetes type does).
    pub fn finish(mut self, api_version: &str, kind: &str) -> Bytes {
        let raw_len = self.buf.len() - PREFIX;
        // Trailer: contentEncoding and contentType, empty.
        self.buf.extend_from_slice(&[0x1a, 0x00, 0x22, 0x00]);
        // Head: magic, typeMeta, and raw's key and length, right-aligned against the raw bytes.
        let mut head = Vec::with_capacity(PREFIX);
        head.extend_from_slice(MAGIC);
        let mut w = Writer::new(&mut head);
        w.nested(1, 1, |t| {
            t.string(1, api_version);
            t.string(2, kind);
        });
        encode_key(2, WireType::LengthDelimited, &mut head);
        encode_varint(raw_len as u64, &mut head);
        let start = PREFIX - head.len();
        self.buf[start..PREFIX].copy_from_slice(&head);
        Bytes::from(self.buf).slice(start..)
    }
}

/// A `metav1.Status` as a protobuf document.
pub fn status(e: &ApiError) -> Bytes {
    let mut env = Envelope::new(256 + e.message.len());
    let mut w = env.body();
    w.list_meta(1, "", e.continue_token.as_deref().unwrap_or(""), None);
    w.string(2, "Failure");
    w.string(3, &e.message);
    w.string(4, e.reason);
    if let Some(d) = &e.details {
        w.nested(5, 1, |w| {
            w.string(1, &d.name);
            w.string(2, &d.group);
            w.string(3, &d.kind);
            for c in &d.causes {
                w.nested(4, 1, |w| {
                    w.string(1, &c.reason);
                    w.string(2, &c.message);
                    w.string(3, &c.field);
                });
            }
            w.varint(5, 0); // retryAfterSeconds
            w.string(6, ""); // uid
        });
    }
    w.varint(6, u64::from(e.code));
    env.finish("v1", "Status")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_lengths_are_minimal_varints() {
        for (reserve, body_len) in [(1, 5), (1, 127), (1, 128), (2, 5), (2, 300), (1, 20_000)] {
            let mut out = vec![0xEE];
            Writer::new(&mut out).nested(3, reserve, |w| w.out.extend(vec![7u8; body_len]));
            let mut expected = vec![0xEE, 0x1a];
            encode_varint(body_len as u64, &mut expected);
            expected.extend(vec![7u8; body_len]);
            assert_eq!(out, expected, "reserve {reserve}, body {body_len}");
        }
    }

    #[test]
    fn zero_time_is_an_empty_message_and_time_has_whole_seconds() {
        let mut out = Vec::new();
        Writer::new(&mut out).time(8, None);
        assert_eq!(out, [0x42, 0x00]);
        out.clear();
        Writer::new(&mut out).time(2, Some(1_500));
        // seconds=1, nanos=0 (as Go's metav1.Time writes it)
        assert_eq!(out, [0x12, 0x04, 0x08, 0x01, 0x10, 0x00]);
    }

    #[test]
    fn envelope_wraps_raw_in_unknown() {
        let mut env = Envelope::new(0);
        env.body().varint(6, 404);
        let doc = env.finish("v1", "Status");
        let mut want = b"k8s\x00".to_vec();
        // Unknown.typeMeta {apiVersion "v1", kind "Status"}
        want.extend_from_slice(&[0x0a, 0x0c, 0x0a, 0x02, b'v', b'1', 0x12, 0x06]);
        want.extend_from_slice(b"Status");
        // Unknown.raw {code 404}
        want.extend_from_slice(&[0x12, 0x03, 0x30, 0x94, 0x03]);
        // contentEncoding "", contentType ""
        want.extend_from_slice(&[0x1a, 0x00, 0x22, 0x00]);
        assert_eq!(&doc[..], &want[..]);
    }

    #[test]
    fn status_not_found_has_details_and_code() {
        let doc = status(&ApiError::not_found("metrics.k8s.io", "nodemetrics", "n1"));
        assert!(doc.starts_with(MAGIC));
        let s = &doc[..];
        assert!(s.windows(9).any(|w| w == b"NotFound\x2a"));
        // code 404 at the end of raw, then the empty trailer.
        assert!(s.ends_with(&[0x30, 0x94, 0x03, 0x1a, 0x00, 0x22, 0x00]));
    }
}
