//! Interned pod label maps (issue #15 §4): the pods of one ReplicaSet carry equal labels, so
//! the view keeps one shared map per distinct label set instead of one per pod.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, PoisonError};

use super::Labels;

/// Distinct label maps in use. A map no pod holds any more is dropped on the next sweep.
#[derive(Default)]
pub struct LabelInterner {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sets: HashSet<Labels>,
    /// Interned since the last sweep; a sweep runs when this passes the number of maps
    /// the last sweep kept (at least 1,024), so sweeping costs O(1) per intern.
    since_sweep: usize,
    /// Maps kept by the last sweep.
    kept_at_sweep: usize,
}

impl LabelInterner {
    /// The shared map equal to `labels` (made shared if it is the first of its kind).
    pub fn intern(&self, labels: BTreeMap<String, String>) -> Labels {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(shared) = inner.sets.get(&labels) {
            return Labels::clone(shared);
        }
        inner.since_sweep += 1;
        if inner.since_sweep > inner.kept_at_sweep.max(1024) {
            inner.sweep();
        }
        let shared = Labels::new(labels);
        inner.sets.insert(Labels::clone(&shared));
        shared
    }

    /// Drops the maps only the interner still holds.
    pub fn sweep(&self) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sweep();
    }

    /// Distinct maps held.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sets
            .len()
    }

    /// True when no map is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn sweep(&mut self) {
        self.sets.retain(|l| Labels::strong_count(l) > 1);
        self.kept_at_sweep = self.sets.len();
        self.since_sweep = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(app: &str, hash: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app".to_owned(), app.to_owned()),
            ("pod-template-hash".to_owned(), hash.to_owned()),
        ])
    }

    #[test]
    fn equal_maps_share_one_allocation_and_unused_ones_go() {
        let interner = LabelInterner::default();
        let a = interner.intern(map("web", "1"));
        let b = interner.intern(map("web", "1"));
        let c = interner.intern(map("web", "2"));
        assert!(Labels::ptr_eq(&a, &b));
        assert!(!Labels::ptr_eq(&a, &c));
        assert_eq!(*c, map("web", "2"));
        assert_eq!(interner.len(), 2);
        drop(c);
        interner.sweep();
        assert_eq!(interner.len(), 1);
        drop((a, b));
        interner.sweep();
        assert!(interner.is_empty());
    }

    #[test]
    fn sweeps_on_its_own_as_pods_come_and_go() {
        let interner = LabelInterner::default();
        // 10,000 short-lived distinct maps (pods created and deleted): the set stays bounded.
        for i in 0..10_000 {
            drop(interner.intern(map("churn", &i.to_string())));
        }
        assert!(interner.len() <= 1025, "{}", interner.len());
    }
}
