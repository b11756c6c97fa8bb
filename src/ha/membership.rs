//! The live members as this replica sees them: a snapshot swapped in by whoever tracks
//! membership (the Lease loop in a cluster, a fixed list in `demo` and tests), read once per
//! tick by the scraper.

use std::sync::Arc;

use arc_swap::ArcSwap;

/// One live replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Stable identity (the pod name); the rendezvous key.
    pub id: String,
    /// `host:port` of its peer listener.
    pub address: String,
    /// SHA-256 of its peer serving certificate (DER), which its peers pin.
    pub cert_sha256: [u8; 32],
}

/// The live members, this replica included, sorted by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberSet {
    /// This replica's id.
    pub me: String,
    /// Every live member (this one included), sorted by id.
    pub members: Vec<Member>,
}

impl MemberSet {
    /// A set from members in any order; `me` is added when missing (a replica always counts
    /// itself, even before its own Lease is visible).
    pub fn new(me: Member, others: impl IntoIterator<Item = Member>) -> Self {
        let mut members: Vec<Member> = others.into_iter().filter(|m| m.id != me.id).collect();
        let id = me.id.clone();
        members.push(me);
        members.sort_by(|a, b| a.id.cmp(&b.id));
        MemberSet { me: id, members }
    }

    /// The member ids, sorted (the rendezvous input).
    pub fn ids(&self) -> Vec<String> {
        self.members.iter().map(|m| m.id.clone()).collect()
    }

    /// One member by id.
    pub fn get(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// True when this replica is alone.
    pub fn alone(&self) -> bool {
        self.members.len() <= 1
    }
}

/// The current [`MemberSet`], shared between its tracker and the scraper.
pub struct Membership {
    current: ArcSwap<MemberSet>,
}

impl Membership {
    /// Starts with `initial`.
    pub fn new(initial: MemberSet) -> Arc<Self> {
        Arc::new(Membership {
            current: ArcSwap::from_pointee(initial),
        })
    }

    /// The current set.
    pub fn current(&self) -> Arc<MemberSet> {
        self.current.load_full()
    }

    /// Replaces the set; logs when the member list changed.
    pub fn set(&self, next: MemberSet) {
        let prev = self.current.load();
        if prev.ids() != next.ids() {
            tracing::info!(members = ?next.ids(), "replica membership changed");
        }
        self.current.store(Arc::new(next));
    }
}
