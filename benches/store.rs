//! Store benchmarks at metrics-server's scale-test sizes (`storage_benchmark_test.go` "Normal":
//! 1,000 and 5,000 nodes × 30 pods × 2 containers, 100 deployments over 10 namespaces).
//!
//! - `ingest_cycle`: one scrape cycle for every node, after the first (rates are computed);
//! - `publish_*`: building and swapping in the snapshot after a full cycle (steady state; also
//!   without freeing the replaced entries, `_build_only`), after a cycle where 4% of the nodes
//!   (or every node) changed their pods, and from nothing (start-up);
//! - `read_*`: what the API does: all pods, one namespace, all nodes, one pod;
//! - `footprint`: builds a store (two cycles + publish) and returns it, so divan's allocation
//!   counters (alloc + grow − dealloc − shrink, in bytes and in blocks) are what the store
//!   retains in steady state; divide by the container count (30 × 2 × nodes). Measured at 5,000
//!   nodes: 142.9 + 2.5 − 110.0 MB = 35.4 MB in 30,034 blocks, i.e. ~118 B per container.
//!
//! Run: `cargo bench --bench store` (release). Allocation counts come from
//! [`divan::AllocProfiler`], a counting global allocator.

use std::{cell::Cell, sync::OnceLock, time::Duration};

use divan::{AllocProfiler, Bencher, black_box};
use kubedojo_data_api::store::{Store, StoreConfig, batch::NodeBatch};

#[global_allocator]
static ALLOC: AllocProfiler = AllocProfiler::system();

mod common;
use common::{RES_MS, Usage, batch, node_name, now_of};

const SIZES: [usize; 2] = [1_000, 5_000];

fn main() {
    divan::main();
}

fn config() -> StoreConfig {
    StoreConfig::new(Duration::from_millis(RES_MS.unsigned_abs()))
}

fn cycle(nodes: usize, cycle: i64) -> Vec<(String, NodeBatch)> {
    (0..nodes)
        .map(|n| (node_name(n), batch(n, cycle, Usage::Steady)))
        .collect()
}

fn ingest_all(store: &Store, batches: Vec<(String, NodeBatch)>, now: i64) {
    for (name, b) in batches {
        store.ingest(&name, b, now);
    }
}

/// A store after two cycles, published.
fn filled(nodes: usize) -> Store {
    let store = Store::new(config());
    for c in 0..2 {
        ingest_all(&store, cycle(nodes, c), now_of(c));
        store.publish(now_of(c));
    }
    store
}

fn world(nodes: usize) -> &'static Store {
    static SMALL: OnceLock<Store> = OnceLock::new();
    static LARGE: OnceLock<Store> = OnceLock::new();
    let cell = if nodes == SIZES[0] { &SMALL } else { &LARGE };
    cell.get_or_init(|| filled(nodes))
}

/// One scrape cycle for every node (the rates of every node and container are computed).
#[divan::bench(args = SIZES, sample_count = 10, sample_size = 1)]
fn ingest_cycle(bencher: Bencher<'_, '_>, nodes: usize) {
    let store = filled(nodes);
    let next = Cell::new(2);
    bencher
        .with_inputs(|| {
            let c = next.get();
            next.set(c + 1);
            // Readers hold the previous entries, as in production.
            store.publish(now_of(c - 1));
            (cycle(nodes, c), now_of(c))
        })
        .bench_local_values(|(batches, now)| ingest_all(&store, batches, now));
}

/// Publish after a full cycle where no node changed its pods (steady state).
#[divan::bench(args = SIZES, sample_count = 10, sample_size = 1)]
fn publish_steady(bencher: Bencher<'_, '_>, nodes: usize) {
    let store = filled(nodes);
    let next = Cell::new(2);
    bencher
        .with_inputs(|| {
            let c = next.get();
            next.set(c + 1);
            ingest_all(&store, cycle(nodes, c), now_of(c));
            now_of(c)
        })
        .bench_local_values(|now| store.publish(now));
}

/// A cycle's batches where every `every`-th node replaces one pod (and the nodes that did so last
/// cycle get theirs back).
fn churned_cycle(nodes: usize, c: i64, every: usize) -> Vec<(String, NodeBatch)> {
    let mut batches = cycle(nodes, c);
    for (i, (_, b)) in batches.iter_mut().enumerate() {
        if i % every == c.unsigned_abs() as usize % every
            && let Some(p) = b.pods.first_mut()
        {
            p.name = format!("{}-c{c}", p.name);
            b.pods
                .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        }
    }
    batches
}

/// Publish after a full cycle where 4% of the nodes changed their pod set (pod churn).
#[divan::bench(args = SIZES, sample_count = 10, sample_size = 1)]
fn publish_churn(bencher: Bencher<'_, '_>, nodes: usize) {
    let store = filled(nodes);
    let next = Cell::new(2);
    bencher
        .with_inputs(|| {
            let c = next.get();
            next.set(c + 1);
            ingest_all(&store, churned_cycle(nodes, c, 50), now_of(c));
            now_of(c)
        })
        .bench_local_values(|now| store.publish(now));
}

/// Publish after a full cycle where every node replaced one pod: no node keeps its layout.
#[divan::bench(args = SIZES, sample_count = 10, sample_size = 1)]
fn publish_churn_every_node(bencher: Bencher<'_, '_>, nodes: usize) {
    let store = filled(nodes);
    let next = Cell::new(2);
    bencher
        .with_inputs(|| {
            let c = next.get();
            next.set(c + 1);
            ingest_all(&store, churned_cycle(nodes, c, 1), now_of(c));
            now_of(c)
        })
        .bench_local_values(|now| store.publish(now));
}

/// The first publish of a filled store: every pod is sorted (start-up, or everything changed).
#[divan::bench(args = SIZES, sample_count = 5, sample_size = 1)]
fn publish_from_scratch(bencher: Bencher<'_, '_>, nodes: usize) {
    bencher
        .with_inputs(|| {
            let store = Store::new(config());
            ingest_all(&store, cycle(nodes, 0), now_of(0));
            ingest_all(&store, cycle(nodes, 1), now_of(1));
            store
        })
        .bench_local_refs(|store| store.publish(now_of(1)));
}

/// `kubectl top pods -A`: every pod, every container.
#[divan::bench(args = SIZES)]
fn read_all_pods(bencher: Bencher<'_, '_>, nodes: usize) {
    let store = world(nodes);
    bencher.bench(|| {
        let snap = store.snapshot();
        let mut cpu = 0u64;
        for pod in snap.pods() {
            cpu = cpu.wrapping_add(pod.total().cpu_nanocores);
        }
        cpu
    });
}

/// The HPA's query: one namespace of ten.
#[divan::bench(args = SIZES)]
fn read_namespace(bencher: Bencher<'_, '_>, nodes: usize) {
    let store = world(nodes);
    bencher.bench(|| {
        let snap = store.snapshot();
        let mut cpu = 0u64;
        for pod in snap.pods_in(black_box("namespace-3")) {
            cpu = cpu.wrapping_add(pod.total().cpu_nanocores);
        }
        cpu
    });
}

/// `kubectl top nodes`.
#[divan::bench(args = SIZES)]
fn read_all_nodes(bencher: Bencher<'_, '_>, nodes: usize) {
    let store = world(nodes);
    bencher.bench(|| {
        let snap = store.snapshot();
        snap.nodes()
            .iter()
            .fold(0u64, |sum, n| sum.wrapping_add(n.usage.cpu_nanocores))
    });
}

/// `kubectl top pod NAME`.
#[divan::bench(args = SIZES)]
fn read_one_pod(bencher: Bencher<'_, '_>, nodes: usize) {
    let store = world(nodes);
    let snap = store.snapshot();
    let names: Vec<(String, String)> = snap
        .pods()
        .step_by(997)
        .map(|p| (p.namespace.to_owned(), p.name.to_owned()))
        .collect();
    let i = Cell::new(0usize);
    bencher.bench_local(|| {
        let (ns, name) = &names[i.get() % names.len()];
        i.set(i.get() + 1);
        store
            .snapshot()
            .pod(black_box(ns), black_box(name))
            .map(|p| p.containers.len())
    });
}

/// Builds a store (two cycles + publish) and hands it back: alloc + grow − dealloc − shrink in
/// divan's output is what the store retains (batches are built and dropped outside the
/// measurement; each is cloned into `ingest`, which frees the clone, so they net to zero).
#[divan::bench(args = SIZES, sample_count = 3, sample_size = 1)]
fn footprint(bencher: Bencher<'_, '_>, nodes: usize) {
    bencher
        .with_inputs(|| (cycle(nodes, 0), cycle(nodes, 1)))
        .bench_local_refs(|(first, second)| {
            let store = Store::new(config());
            for (c, batches) in [first, second].into_iter().enumerate() {
                let now = now_of(c as i64);
                for (name, b) in batches.iter() {
                    store.ingest(name, b.clone(), now);
                }
            }
            store.publish(now_of(1));
            store
        });
}

/// `publish_steady` without freeing the replaced generation (a reader holds it, so the store
/// retires it; the untimed publish in the setup frees the one retired before): the cost of
/// building and swapping in the snapshot alone.
#[divan::bench(args = SIZES, sample_count = 10, sample_size = 1)]
fn publish_steady_build_only(bencher: Bencher<'_, '_>, nodes: usize) {
    let store = filled(nodes);
    let next = Cell::new(2);
    bencher
        .with_inputs(|| {
            let c = next.get();
            next.set(c + 1);
            store.publish(now_of(c - 1));
            ingest_all(&store, cycle(nodes, c), now_of(c));
            (now_of(c), store.snapshot())
        })
        .bench_local_values(|(now, reader)| (store.publish(now), reader));
}
