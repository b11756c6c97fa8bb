//! High availability (issue 14, design in `docs/ha.md`): replicas that share the scraping.
//! Membership through `coordination.k8s.io` Leases, nodes assigned by rendezvous hashing with
//! replication R, and an authenticated peer exchange so every replica serves the full view.

pub mod coordinator;
pub mod membership;
pub mod peer;
pub mod peer_auth;
pub mod rendezvous;
pub mod shard;
pub mod wire;

use std::time::Duration;

/// Time from now to the next multiple of `resolution` since the Unix epoch (replicas tick
/// together when each starts its interval there).
pub fn until_next_tick(resolution: Duration) -> Duration {
    let res = resolution.as_millis().max(1) as i64;
    let now = crate::api::time::now_millis();
    Duration::from_millis((res - now.rem_euclid(res)) as u64)
}
pub mod args;
pub mod lease;
pub mod setup;
