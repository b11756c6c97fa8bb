//! This replica's own shard as peers fetch it: the encoded frame of every node it scraped,
//! replaced as each scrape lands, so answering a peer only concatenates bytes.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use dashmap::DashMap;
use prometheus_client::metrics::counter::Counter;

use super::wire;
use crate::store::batch::NodeBatch;

/// Encoded frames of the nodes this replica scraped itself.
#[derive(Default)]
pub struct OwnShard {
    frames: DashMap<String, (u64, Bytes)>,
    generation: AtomicU64,
    served: Counter,
}

impl OwnShard {
    /// An empty shard.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty shard that counts the bytes of every body it hands out into `served`.
    pub fn counting(served: Counter) -> Self {
        OwnShard {
            served,
            ..Self::default()
        }
    }

    /// Records the outcome of this tick's scrape of `node` (`Err` for a failed scrape).
    pub fn record(&self, node: &str, result: Result<&NodeBatch, ()>) {
        let frame = Bytes::from(wire::encode_frame(node, result));
        let generation = self.generation.load(Ordering::Acquire);
        self.frames.insert(node.to_string(), (generation, frame));
    }

    /// Ends a tick: forgets nodes not scraped in it or the one before (nodes that moved to
    /// another replica), and starts the next generation.
    pub fn end_tick(&self) {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel);
        self.frames.retain(|_, (g, _)| *g + 1 >= generation);
    }

    /// The whole shard as a body.
    pub fn body(&self) -> Vec<u8> {
        let frames: Vec<Bytes> = self.frames.iter().map(|e| e.value().1.clone()).collect();
        let body = wire::assemble(frames.iter().map(|b| b.as_ref()));
        self.served.inc_by(body.len() as u64);
        body
    }

    /// Number of nodes in the shard.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True when no node is in the shard.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}
