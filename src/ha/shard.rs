//! This replica's own shard as peers fetch it: the encoded frame of every node it scrapes this
//! tick, replaced as each scrape lands, so answering a peer only concatenates bytes.
//!
//! Only the nodes of the current tick's plan are "here": a node this replica stopped owning is
//! forgotten when the next tick begins, so a peer whose member view differs is told
//! [`NotHere`](super::wire::NodeFrame::NotHere) rather than handed a reading that no longer
//! moves (which would leave its pods without a rate for as long as the views disagree).

use std::collections::HashSet;
use std::sync::{PoisonError, RwLock};

use bytes::Bytes;
use dashmap::DashMap;
use prometheus_client::metrics::counter::Counter;

use super::wire;
use crate::store::transfer::NodeState;

/// Encoded frames of the nodes this replica scrapes itself.
#[derive(Default)]
pub struct OwnShard {
    /// The nodes this tick's plan gives this replica.
    own: RwLock<HashSet<String>>,
    frames: DashMap<String, Bytes>,
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

    /// Starts a tick in which this replica scrapes `own`: frames of other nodes are dropped,
    /// and those of `own` kept until this tick's scrape replaces them.
    pub fn begin_tick<'a>(&self, own: impl IntoIterator<Item = &'a str>) {
        let own: HashSet<String> = own.into_iter().map(str::to_string).collect();
        // Under the write lock: a scrape recorded meanwhile lands before or after, never half.
        let mut current = self.own.write().unwrap_or_else(PoisonError::into_inner);
        self.frames.retain(|node, _| own.contains(node));
        *current = own;
    }

    /// Records the outcome of this tick's scrape of `node` (`Err` for a failed scrape), the
    /// state the store holds for it after the scrape. Ignored for a node not in this tick's
    /// plan (a fallback scrape of another replica's node).
    pub fn record(&self, node: &str, result: Result<&NodeState, ()>) {
        let own = self.own.read().unwrap_or_else(PoisonError::into_inner);
        if own.contains(node) {
            let frame = Bytes::from(wire::encode_frame(node, result));
            self.frames.insert(node.to_string(), frame);
        }
    }

    /// The answer to a peer asking for `nodes`: one frame per distinct node, in the order
    /// asked; [`NotHere`](super::wire::NodeFrame::NotHere) for a node this replica does not
    /// scrape this tick or has no reading of yet.
    pub fn answer(&self, nodes: &[String]) -> Vec<u8> {
        let mut seen = HashSet::with_capacity(nodes.len());
        let frames: Vec<Bytes> = nodes
            .iter()
            .filter(|n| seen.insert(n.as_str()))
            .map(|n| match self.frames.get(n.as_str()) {
                Some(f) => f.value().clone(),
                None => Bytes::from(wire::not_here_frame(n)),
            })
            .collect();
        let body = wire::assemble(frames.iter().map(|b| b.as_ref()));
        self.served.inc_by(body.len() as u64);
        body
    }

    /// Number of nodes with a frame.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True when no node has a frame.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}
