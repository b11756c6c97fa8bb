//! The scraper's view of the other replicas, once per tick: which nodes this replica scrapes
//! (the ones it owns by rendezvous over the live members), and the states of all the others,
//! asked node by node from one owner each (the highest-ranked one not yet failed this tick)
//! and taken into the local store. A node no owner could deliver is handed back to be scraped
//! directly in the same tick.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use super::membership::Membership;
use super::peer::PeerClient;
use super::rendezvous;
use super::shard::OwnShard;
use super::wire::{self, NodeFrame};
use crate::api::time::now_millis;
use crate::cluster::NodeInfo;
use crate::store::Store;
use crate::store::transfer::NodeState;

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
    /// Nodes a peer answered it does not scrape this tick (member views that disagree).
    pub not_here: Counter,
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

    /// This tick's split of `nodes` over the current members; the own part is also what this
    /// replica answers for to peers during the tick.
    pub fn plan(&self, nodes: Vec<Arc<NodeInfo>>) -> Plan {
        let members = self.membership.current();
        let ids = members.ids();
        let plan = if members.alone() {
            Plan {
                own: nodes,
                remote: Vec::new(),
                ids,
            }
        } else {
            let (own, remote) = nodes
                .into_iter()
                .partition(|n| rendezvous::owns(&ids, &members.me, &n.name, self.replication));
            Plan { own, remote, ids }
        };
        self.shard
            .begin_tick(plan.own.iter().map(|n| n.name.as_str()));
        plan
    }

    /// Records this tick's scrape of `node` for peers: the state the store holds for it after
    /// the scrape (`Err` for a failed scrape).
    pub fn record(&self, node: &str, result: Result<&NodeState, ()>) {
        self.shard.record(node, result);
    }

    /// Fetches the plan's remote nodes and takes them into `store`. Each node is asked of one
    /// owner at a time, in its rendezvous order: first its highest-ranked owner; a node that
    /// owner does not deliver (fetch failed or timed out, not scraped there this tick, a failed
    /// scrape there) is asked of its next owner, and a peer whose fetch failed is not asked
    /// again this tick. Returns the nodes no owner delivered, to be scraped directly; a node an
    /// owner reported as failed (and none delivered) is marked failed instead.
    pub async fn fetch_remote(&self, plan: Plan, store: &Store) -> Vec<Arc<NodeInfo>> {
        let members = self.membership.current();
        // Per node: its owners other than this replica, best first, and the next one to ask.
        let mut needed: HashMap<String, (Arc<NodeInfo>, Vec<String>, usize)> = plan
            .remote
            .into_iter()
            .map(|n| {
                let owners = rendezvous::owners(&plan.ids, &n.name, self.replication)
                    .into_iter()
                    .filter(|o| *o != members.me)
                    .map(str::to_string)
                    .collect();
                (n.name.clone(), (n, owners, 0))
            })
            .collect();
        let mut dead: HashSet<String> = HashSet::new();
        let mut failed_at_owner: HashSet<String> = HashSet::new();
        loop {
            // This round's question to each peer: the nodes it is the best untried owner of.
            let mut asks: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (node, (_, owners, next)) in &mut needed {
                while owners
                    .get(*next)
                    .is_some_and(|o| dead.contains(o) || members.get(o).is_none())
                {
                    *next += 1;
                }
                if let Some(o) = owners.get(*next) {
                    asks.entry(o.clone()).or_default().push(node.clone());
                }
            }
            if asks.is_empty() {
                break;
            }
            let fetches = asks.iter().flat_map(|(peer, nodes)| {
                let member = members.get(peer);
                nodes
                    .chunks(wire::MAX_REQUEST_NODES)
                    .map(move |chunk| async move {
                        let names: Vec<&str> = chunk.iter().map(String::as_str).collect();
                        let result = match member {
                            Some(m) => self.client.fetch(m, &names).await,
                            None => Err(super::peer::PeerError::Transport("not a member".into())),
                        };
                        (peer, chunk, result)
                    })
            });
            let results = futures::future::join_all(fetches).await;
            let now = now_millis();
            for (peer, asked, result) in results {
                let mut delivered: HashSet<&str> = HashSet::new();
                match result {
                    Ok((frames, bytes)) => {
                        self.count_bytes(bytes);
                        let asked_here: HashSet<&str> = asked.iter().map(String::as_str).collect();
                        for (node, frame) in frames {
                            // Only what was asked of this peer, once.
                            let Some(name) = asked_here.get(node.as_str()).copied() else {
                                continue;
                            };
                            match frame {
                                NodeFrame::Ok(state) => match store.adopt(&node, &state, now) {
                                    Ok(_) => {
                                        delivered.insert(name);
                                        self.stats.nodes_from_peers.inc();
                                    }
                                    Err(e) => {
                                        tracing::warn!(%peer, %node, error = %e, "refused a peer's node state");
                                    }
                                },
                                NodeFrame::Failed => {
                                    failed_at_owner.insert(node);
                                }
                                NodeFrame::NotHere => {
                                    self.stats.not_here.inc();
                                    tracing::debug!(%peer, %node, "peer does not scrape this node this tick");
                                }
                            }
                        }
                    }
                    Err(e) => {
                        self.stats.fetch_failures.inc();
                        dead.insert(peer.clone());
                        tracing::warn!(%peer, error = %e, "cannot fetch from a peer; asking the next owner or scraping its nodes directly");
                    }
                }
                for node in asked {
                    if delivered.contains(node.as_str()) {
                        needed.remove(node);
                    } else if let Some((_, _, next)) = needed.get_mut(node) {
                        *next += 1;
                    }
                }
            }
        }
        let now = now_millis();
        let mut missing = Vec::new();
        for (name, (node, _, _)) in needed {
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
