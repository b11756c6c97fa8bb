//! High availability (issue 14, design in `docs/ha.md`): replicas that share the scraping.
//! Membership through `coordination.k8s.io` Leases, nodes assigned by rendezvous hashing with
//! replication R, and an authenticated peer exchange so every replica serves the full view.

pub mod rendezvous;
