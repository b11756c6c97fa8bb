//! Counting the items of a metrics list response, JSON or Kubernetes protobuf, so that every
//! response of the load can be checked against the fleet (a short or empty list is an error).

use serde::Deserialize;
use serde::de::IgnoredAny;

/// Number of items in a `PodMetricsList` / `NodeMetricsList` body of `content_type`.
pub fn items(content_type: &str, body: &[u8]) -> Result<usize, String> {
    if content_type.starts_with("application/vnd.kubernetes.protobuf") {
        protobuf_items(body)
    } else {
        #[derive(Deserialize)]
        struct List {
            kind: String,
            items: Vec<IgnoredAny>,
        }
        let l: List = serde_json::from_slice(body).map_err(|e| format!("not a JSON list: {e}"))?;
        if !l.kind.ends_with("List") {
            return Err(format!("kind {} is not a list", l.kind));
        }
        Ok(l.items.len())
    }
}

/// Counts `items` (field 2) of the list inside the `k8s\0` + `runtime.Unknown` envelope.
fn protobuf_items(body: &[u8]) -> Result<usize, String> {
    let rest = body
        .strip_prefix(b"k8s\x00")
        .ok_or("protobuf body without the k8s\\0 magic")?;
    let raw = fields(rest)?
        .into_iter()
        .find(|(n, _)| *n == 2)
        .map(|(_, b)| b)
        .ok_or("runtime.Unknown without raw")?;
    Ok(fields(raw)?.into_iter().filter(|(n, _)| *n == 2).count())
}

/// The length-delimited fields of one message (other wire types are skipped).
fn fields(mut b: &[u8]) -> Result<Vec<(u64, &[u8])>, String> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b)?;
        match key & 7 {
            0 => {
                varint(&mut b)?;
            }
            1 => b = b.get(8..).ok_or("truncated fixed64")?,
            5 => b = b.get(4..).ok_or("truncated fixed32")?,
            2 => {
                let len = usize::try_from(varint(&mut b)?).map_err(|_| "length overflow")?;
                let v = b.get(..len).ok_or("truncated field")?;
                out.push((key >> 3, v));
                b = &b[len..];
            }
            t => return Err(format!("wire type {t}")),
        }
    }
    Ok(out)
}

fn varint(b: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first().ok_or("truncated varint")?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u8, v: &[u8]) -> Vec<u8> {
        let mut out = vec![(n << 3) | 2, v.len() as u8];
        out.extend_from_slice(v);
        out
    }

    #[test]
    fn json_lists_are_counted_and_non_lists_rejected() {
        let body = br#"{"kind":"PodMetricsList","apiVersion":"metrics.k8s.io/v1beta1","metadata":{},"items":[{"a":1},{"b":[2]}]}"#;
        assert_eq!(items("application/json", body), Ok(2));
        assert!(items("application/json", br#"{"kind":"Status","items":[]}"#).is_err());
        assert!(items("application/json", b"garbage").is_err());
    }

    #[test]
    fn protobuf_lists_are_counted() {
        let list = [
            field(1, b""),
            field(2, b"x"),
            field(2, b"yz"),
            field(2, b""),
        ]
        .concat();
        let unknown = [field(1, &field(1, b"v1")), field(2, &list)].concat();
        let body = [b"k8s\x00".as_slice(), &unknown].concat();
        assert_eq!(items("application/vnd.kubernetes.protobuf", &body), Ok(3));
        assert!(items("application/vnd.kubernetes.protobuf", &unknown).is_err());
        assert!(
            items(
                "application/vnd.kubernetes.protobuf",
                &body[..body.len() - 1]
            )
            .is_err()
        );
    }
}
