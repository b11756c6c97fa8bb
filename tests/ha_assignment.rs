//! The rendezvous assignment as replicas use it: every replica computes the same owners, a
//! membership change moves only the nodes it must, load is spread evenly, and R larger than
//! the member count means every member owns every node.

use std::collections::BTreeMap;

use kubedojo_data_api::ha::rendezvous::{owners, owns};
use proptest::prelude::*;

fn members(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("kubedojo-data-api-{i:x}7f9c"))
        .collect()
}

fn nodes(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("node-{i:05}")).collect()
}

fn assignment(members: &[String], nodes: &[String], r: usize) -> BTreeMap<String, Vec<String>> {
    nodes
        .iter()
        .map(|n| {
            let mut o: Vec<String> = owners(members, n, r)
                .into_iter()
                .map(String::from)
                .collect();
            o.sort();
            (n.clone(), o)
        })
        .collect()
}

#[test]
fn every_replica_computes_the_same_owners_whatever_order_it_lists_members_in() {
    let a = members(5);
    let mut b = a.clone();
    b.reverse();
    b.rotate_left(2);
    for r in 1..=3 {
        for n in nodes(500) {
            let mut x: Vec<&str> = owners(&a, &n, r);
            let mut y: Vec<&str> = owners(&b, &n, r);
            // Not just the same set: the same ranking, so "first owner" agrees too.
            assert_eq!(x, y, "node {n}, R={r}");
            x.sort();
            y.sort();
            assert_eq!(x, y);
        }
    }
}

#[test]
fn each_node_has_exactly_r_owners_and_load_is_even() {
    let m = members(3);
    let ns = nodes(3000);
    for r in 1..=2 {
        let mut load: BTreeMap<&str, usize> = BTreeMap::new();
        for n in &ns {
            let o = owners(&m, n, r);
            assert_eq!(o.len(), r);
            for x in o {
                *load.entry(x).or_default() += 1;
            }
        }
        let expected = 3000 * r / 3;
        for (member, count) in &load {
            let off = (*count as f64 - expected as f64).abs() / expected as f64;
            assert!(
                off < 0.1,
                "{member} owns {count}, expected ≈{expected} (R={r})"
            );
        }
    }
}

#[test]
fn r_larger_than_members_gives_every_member_every_node() {
    for count in 1..=3 {
        let m = members(count);
        for n in nodes(50) {
            assert_eq!(owners(&m, &n, 5).len(), count);
            for x in &m {
                assert!(owns(&m, x, &n, 5));
            }
        }
    }
    // A lone member owns everything at any R, and no member means no owner (never a panic).
    let one = members(1);
    assert!(nodes(20).iter().all(|n| owns(&one, &one[0], n, 1)));
    assert!(owners(&[], "node-1", 2).is_empty());
}

#[test]
fn a_leaving_member_moves_only_its_own_nodes() {
    let before = members(4);
    let ns = nodes(2000);
    for r in 1..=2 {
        let a = assignment(&before, &ns, r);
        let gone = before[1].clone();
        let after: Vec<String> = before.iter().filter(|m| **m != gone).cloned().collect();
        let b = assignment(&after, &ns, r);
        let mut moved = 0;
        for n in &ns {
            let (old, new) = (&a[n], &b[n]);
            if old.contains(&gone) {
                // The survivors keep their share and one new owner replaces the departed one.
                for o in old.iter().filter(|o| **o != gone) {
                    assert!(new.contains(o), "{n}: survivor {o} lost it (R={r})");
                }
                moved += 1;
            } else {
                assert_eq!(old, new, "{n} moved though its owners all stayed (R={r})");
            }
        }
        let share = moved as f64 / ns.len() as f64;
        let expected = r as f64 / 4.0;
        assert!(
            (share - expected).abs() < 0.05,
            "moved {share}, expected ≈{expected}"
        );
    }
}

#[test]
fn a_joining_member_takes_only_what_it_now_owns() {
    let before = members(3);
    let ns = nodes(2000);
    for r in 1..=2 {
        let a = assignment(&before, &ns, r);
        let mut after = before.clone();
        let newcomer = "kubedojo-data-api-new".to_string();
        after.push(newcomer.clone());
        let b = assignment(&after, &ns, r);
        let mut taken = 0;
        for n in &ns {
            let (old, new) = (&a[n], &b[n]);
            if new.contains(&newcomer) {
                taken += 1;
                // Exactly one old owner made room; the others kept it.
                let kept = old.iter().filter(|o| new.contains(o)).count();
                assert_eq!(kept, r - 1, "{n} (R={r})");
            } else {
                assert_eq!(old, new, "{n} changed owners without the newcomer (R={r})");
            }
        }
        let share = taken as f64 / ns.len() as f64;
        let expected = r as f64 / 4.0;
        assert!(
            (share - expected).abs() < 0.05,
            "took {share}, expected ≈{expected}"
        );
    }
}

proptest! {
    #[test]
    fn removing_any_member_never_moves_a_node_between_survivors(
        count in 2usize..7,
        gone in 0usize..7,
        r in 1usize..4,
        node_ids in proptest::collection::vec("[a-z0-9.-]{1,30}", 1..60),
    ) {
        let m = members(count);
        let gone = &m[gone % count];
        let after: Vec<String> = m.iter().filter(|x| *x != gone).cloned().collect();
        for n in &node_ids {
            let old = owners(&m, n, r);
            let new = owners(&after, n, r);
            prop_assert_eq!(new.len(), r.min(count - 1));
            for o in old.iter().filter(|o| **o != gone.as_str()) {
                prop_assert!(new.contains(o));
            }
        }
    }
}
