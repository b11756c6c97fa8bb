//! Store-wide interning of the names that repeat across pods: namespaces and container names.
//!
//! 150,000 pods in a handful of namespaces, with containers called `app` or `istio-proxy`, would
//! otherwise hold hundreds of thousands of copies of the same few strings. Identity is only an
//! optimisation: nothing relies on two equal names sharing one allocation.

use std::sync::Arc;

use dashmap::DashSet;

/// A concurrent set of shared names.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    names: DashSet<Arc<str>>,
}

impl Interner {
    /// The shared copy of `name`, created on first use.
    pub(crate) fn intern(&self, name: &str) -> Arc<str> {
        if let Some(found) = self.names.get(name) {
            return Arc::clone(found.key());
        }
        let fresh: Arc<str> = Arc::from(name);
        // Another thread may have inserted the same name meanwhile: the first copy wins.
        if self.names.insert(Arc::clone(&fresh)) {
            return fresh;
        }
        self.names
            .get(name)
            .map_or(fresh, |found| Arc::clone(found.key()))
    }

    /// Forgets names nobody uses any more (only the set holds them).
    pub(crate) fn prune(&self) {
        self.names.retain(|name| Arc::strong_count(name) > 1);
    }

    /// Number of distinct names held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_and_prunes() {
        let interner = Interner::default();
        let a = interner.intern("kube-system");
        let b = interner.intern("kube-system");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(interner.len(), 1);
        drop(b);
        interner.prune();
        assert_eq!(interner.len(), 1, "still used by `a`");
        drop(a);
        interner.prune();
        assert_eq!(interner.len(), 0);
    }
}
