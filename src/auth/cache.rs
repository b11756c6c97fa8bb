//! A small TTL cache for review results (TokenReview, SubjectAccessReview).
//!
//! Time comes from `tokio::time::Instant`, so tests can drive expiry with
//! `tokio::time::pause()`/`advance()`. The lock is a plain mutex that is never held
//! across an `.await`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A bounded map whose entries expire after a per-entry time to live.
pub struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// A cache holding at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        TtlCache {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The live value for `key`, if any (expired entries are dropped).
    pub fn get(&self, key: &K) -> Option<V> {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match map.get(key) {
            Some((v, expires)) if *expires > now => Some(v.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores `value` for `ttl`; a zero TTL stores nothing. When full, expired entries
    /// are dropped first, then the entry closest to expiry.
    pub fn insert(&self, key: K, value: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if map.len() >= self.capacity && !map.contains_key(&key) {
            map.retain(|_, (_, expires)| *expires > now);
            if map.len() >= self.capacity {
                let oldest = map
                    .iter()
                    .min_by_key(|(_, (_, expires))| *expires)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    map.remove(&k);
                }
            }
        }
        map.insert(key, (value, now + ttl));
    }

    /// Number of entries, expired ones included.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when the cache holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_their_ttl() {
        let c = TtlCache::new(10);
        c.insert("a", 1, Duration::from_secs(10));
        c.insert("b", 2, Duration::from_secs(2));
        c.insert("zero", 3, Duration::ZERO);
        assert_eq!(c.get(&"zero"), None);
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert_eq!((c.get(&"a"), c.get(&"b")), (Some(1), Some(2)));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!((c.get(&"a"), c.get(&"b")), (Some(1), None));
        tokio::time::advance(Duration::from_secs(8)).await;
        assert_eq!(c.get(&"a"), None);
        assert!(c.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn full_cache_evicts_expired_then_soonest() {
        let c = TtlCache::new(2);
        c.insert(1, "x", Duration::from_secs(1));
        c.insert(2, "y", Duration::from_secs(5));
        c.insert(3, "z", Duration::from_secs(9));
        assert_eq!(
            (c.get(&1), c.get(&2), c.get(&3)),
            (None, Some("y"), Some("z"))
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        c.insert(4, "w", Duration::from_secs(9));
        assert_eq!((c.get(&3), c.get(&4)), (Some("z"), Some("w")));
        assert_eq!(c.len(), 2);
    }
}
