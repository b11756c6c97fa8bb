//! Watch lines joined into large chunks: a watch stream sends a few chunks of whole events
//! instead of one channel item (and one HTTP/2 DATA frame, one TLS record) per event. The
//! byte stream a client reads is the same; only where it is cut into items changes.

use bytes::Bytes;

use super::watch;

/// Joins watch lines into chunks of at most `limit` bytes, cut only between lines (a single
/// line longer than `limit` is a chunk of its own).
pub struct Chunker {
    buf: Vec<u8>,
    limit: usize,
}

impl Chunker {
    /// A chunker of `limit`-byte chunks.
    pub fn new(limit: usize) -> Self {
        Chunker {
            buf: Vec::new(),
            limit: limit.max(1),
        }
    }

    /// Bytes waiting in the current chunk.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Makes room for a line of `len` bytes: returns the current chunk when the line would
    /// take it past the limit.
    fn room(&mut self, len: usize) -> Option<Bytes> {
        let full = !self.buf.is_empty() && self.buf.len() + len > self.limit;
        let done = full.then(|| self.take());
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(self.limit.max(len));
        }
        done
    }

    /// Appends `line` (one encoded event); returns the chunk it closed, if any.
    pub fn push_line(&mut self, line: &[u8]) -> Option<Bytes> {
        let done = self.room(line.len());
        self.buf.extend_from_slice(line);
        done
    }

    /// Appends the event `{"type":<kind>,"object":<object>}\n`; returns the chunk it closed,
    /// if any, and where the line starts in the current chunk.
    pub fn push_event(&mut self, kind: &str, object: &[u8]) -> (Option<Bytes>, usize) {
        let done = self.room(watch::event_len(kind, object.len()));
        let start = self.buf.len();
        watch::write_event(&mut self.buf, kind, object);
        (done, start)
    }

    /// The current chunk, if it holds anything.
    pub fn finish(&mut self) -> Option<Bytes> {
        (!self.buf.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_hold_whole_lines_up_to_the_limit() {
        let mut c = Chunker::new(100);
        let mut chunks = Vec::new();
        let mut all = Vec::new();
        for i in 0..50 {
            let object = format!("{{\"i\":{}}}", "7".repeat(i % 13));
            all.extend_from_slice(&watch::event("MODIFIED", object.as_bytes()));
            chunks.extend(c.push_event("MODIFIED", object.as_bytes()).0);
        }
        // One line longer than the limit is a chunk of its own.
        let long = watch::event("ADDED", "x".repeat(300).as_bytes());
        all.extend_from_slice(&long);
        chunks.extend(c.push_line(&long));
        chunks.extend(c.push_line(b"{}\n"));
        all.extend_from_slice(b"{}\n");
        chunks.extend(c.finish());
        assert!(c.finish().is_none());
        assert_eq!(chunks.concat(), all);
        assert!(chunks.len() > 10, "{}", chunks.len());
        assert!(chunks.iter().any(|ch| **ch == *long));
        for ch in &chunks {
            assert!(ch.ends_with(b"\n"));
            assert!(ch.len() <= 100 || *ch == long, "{}", ch.len());
        }
    }
}
