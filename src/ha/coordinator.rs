//! The scraper's view of the other replicas, once per tick: which nodes this replica scrapes
//! (the ones it owns by rendezvous over the live members), and the readings of all the others,
//! fetched from their owners and ingested into the local store. A node no owner could deliver
//! is handed back to be scraped directly in the same tick.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use super::membership::Membership;
use super::peer::PeerClient;
use super::rendezvous;
use super::shard::OwnShard;
use super::wire::NodeFrame;
use crate::api::time::now_millis;
use crate::cluster::NodeInfo;
use crate::store::Store;
use crate::store::batch::NodeBatch;

/// Counters of the peer exchange, exported as self-metrics (`kubedojo_peer_*`, registered by
/// [`crate::telemetry::Telemetry`]) and read by the benchmark. Clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct PeerStats {
    /// Shard bytes received from peers (response bodies).
    pub bytes_received: Counter,
    /// Shard bytes served to peers (response bodies).
    pub bytes_served: Counter,
    /// Fetches that failed (transport, status, garbage, timeout).
    pub fetch_failures: Counter,
    /// Nodes this replica scraped because no owner delivered them.
    pub fallback_scrapes: Counter,
    /// Nodes ingested from peers.
    pub nodes_from_peers: Counter,
}

/// A tick's split of the nodes.
pub struct Plan {
    /// Nodes this replica scrapes.
    pub own: Vec<Arc<NodeInfo>>,
    /// Nodes other replicas scrape.
    pub remote: Vec<Arc<NodeInfo>>,
    ids: Vec<String>,
}

/// Sharding state shared by the scraper and the peer listener.
pub struct Coordinator {
    membership: Arc<Membership>,
    replication: usize,
    shard: Arc<OwnShard>,
    client: PeerClient,
    fetch_offset: Duration,
    stats: PeerStats,
}

impl Coordinator {
    /// Shards over `membership` with `replication` owners per node; peer shards are fetched
    /// `fetch_offset` into each tick. Counts into `stats` (e.g. the telemetry's, so they show
    /// on `/metrics`).
    pub fn new(
        membership: Arc<Membership>,
        replication: usize,
        shard: Arc<OwnShard>,
        client: PeerClient,
        fetch_offset: Duration,
        stats: PeerStats,
    ) -> Arc<Self> {
        Arc::new(Coordinator {
            membership,
            replication: replication.max(1),
            shard,
            client,
            fetch_offset,
            stats,
        })
    }

    /// The exchange counters.
    pub fn stats(&self) -> &PeerStats {
        &self.stats
    }

    /// How far into a tick peer shards are fetched.
    pub fn fetch_offset(&self) -> Duration {
        self.fetch_offset
    }

    /// This tick's split of `nodes` over the current members.
    pub fn plan(&self, nodes: Vec<Arc<NodeInfo>>) -> Plan {
        let members = self.membership.current();
        let ids = members.ids();
        if members.alone() {
            return Plan {
                own: nodes,
                remote: Vec::new(),
                ids,
            };
        }
        let (own, remote) = nodes
            .into_iter()
            .partition(|n| rendezvous::owns(&ids, &members.me, &n.name, self.replication));
        Plan { own, remote, ids }
    }

    /// Records this tick's scrape of `node` for peers.
    pub fn record(&self, node: &str, result: Result<&NodeBatch, ()>) {
        self.shard.record(node, result);
    }

    /// Ends a tick (forgets nodes this replica no longer scrapes).
    pub fn end_tick(&self) {
        self.shard.end_tick();
    }

    /// Fetches the plan's remote nodes from their owners (first-ranked owners first, then the
    /// next ones for what is still missing) and ingests them into `store`. Returns the nodes no
    /// owner delivered, to be scraped directly. A node an owner reported as failed is marked
    /// failed (not re-scraped) unless another owner has it.
    pub async fn fetch_remote(&self, plan: Plan, store: &Store) -> Vec<Arc<NodeInfo>> {
        let members = self.membership.current();
        let mut needed: HashMap<String, Arc<NodeInfo>> = plan
            .remote
            .into_iter()
            .map(|n| (n.name.clone(), n))
            .collect();
        let mut asked: HashSet<String> = HashSet::new();
        let mut failed_at_owner: HashSet<String> = HashSet::new();
        for rank in 0..self.replication {
            let peers: BTreeSet<&str> = needed
                .keys()
                .filter_map(|node| {
                    rendezvous::owners(&plan.ids, node, self.replication)
                        .get(rank)
                        .copied()
                })
                .filter(|p| *p != members.me && !asked.contains(*p))
                .collect();
            if peers.is_empty() {
                continue;
            }
            let fetches = peers
                .iter()
                .filter_map(|id| members.get(id))
                .map(|m| async move { (m.id.clone(), self.client.fetch(m).await) });
            let results = futures::future::join_all(fetches).await;
            let now = now_millis();
            for (peer, result) in results {
                asked.insert(peer.clone());
                match result {
                    Ok((frames, bytes)) => {
                        self.count_bytes(bytes);
                        for (node, frame) in frames {
                            if !needed.contains_key(&node) {
                                continue;
                            }
                            match frame {
                                NodeFrame::Ok(batch) => {
                                    needed.remove(&node);
                                    self.stats.nodes_from_peers.inc();
                                    store.ingest(&node, batch, now);
                                }
                                NodeFrame::Failed => {
                                    failed_at_owner.insert(node);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        self.stats.fetch_failures.inc();
                        tracing::warn!(%peer, error = %e, "cannot fetch a peer's shard; scraping its nodes directly");
                    }
                }
            }
        }
        let now = now_millis();
        let mut missing = Vec::new();
        for (name, node) in needed {
            if failed_at_owner.contains(&name) {
                store.mark_failed(&name, now);
            } else {
                missing.push(node);
            }
        }
        missing.sort_by(|a, b| a.name.cmp(&b.name));
        self.stats.fallback_scrapes.inc_by(missing.len() as u64);
        missing
    }

    fn count_bytes(&self, n: usize) {
        self.stats.bytes_received.inc_by(n as u64);
    }
}
