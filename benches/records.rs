//! Computed DataRecords benchmarks (issue #15: the computed source was ~17% of a scrape
//! cycle's instructions). World: 100 and 1,000 nodes × 30 pods × 2 containers over 10
//! namespaces (as `benches/store.rs`), every node with an allocatable, and a record set of the
//! embedded file records followed by the computed source (`sources: [file, computed]`).
//!
//! - `compute`: `ComputedSource::compute` over a published snapshot (1,010 records at 1,000
//!   nodes), nothing else;
//! - `refresh_changed`: `RecordSet::refresh_source` of the computed source when every record
//!   changed (two snapshots of different usage, alternating: the `--sim-usage wave` case, one
//!   MODIFIED per record), i.e. compute + merge + events + JSON of every record;
//! - `refresh_unchanged`: the same over one snapshot (constant usage, or a mid-tick publish
//!   that moved nothing the records show): compute + merge, no event;
//! - `store_cycle`: ingesting one scrape cycle of every node and publishing it (the store's
//!   part of a cycle), for scale.
//!
//! Run: `cargo bench --bench records` (release). For instruction counts (noise-free on a
//! shared machine), the same binary under callgrind, e.g.
//! `valgrind --tool=callgrind --toggle-collect='*RecordSet*refresh_source*' BENCH
//! refresh_changed --sample-count 10 --sample-size 1` (see docs/benchmarks.md).

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use divan::{Bencher, black_box};
use futures::{FutureExt, future::BoxFuture};
use kubedojo_data_api::{
    cluster::{Allocatable, ClusterView},
    records::{
        ComputedSource, DataRecord, FileSource, MetricsInputs, RecordSet, RecordSource,
        RecordsError, sources_config::ComputedSourceConfig,
    },
    store::{Snapshot, Store, StoreConfig, batch::NodeBatch},
};

mod common;
use common::{NAMESPACES, RES_MS, Usage, batch, node_info, node_name, now_of};

const SIZES: [usize; 2] = [100, 1_000];

fn main() {
    divan::main();
}

fn ingest_cycle(store: &Store, nodes: usize, cycle: i64) {
    for n in 0..nodes {
        store.ingest(&node_name(n), batch(n, cycle, Usage::Moving), now_of(cycle));
    }
}

/// The computed source over fixed snapshots, taken in turn on each load (the store it was
/// built over is not read: its snapshot is whatever the world published last).
struct Turns {
    computed: ComputedSource,
    snapshots: Vec<(Arc<Snapshot>, i64)>,
    next: AtomicUsize,
}

impl RecordSource for Turns {
    fn name(&self) -> String {
        "computed:metrics".into()
    }
    fn load(&self) -> BoxFuture<'_, Result<Vec<DataRecord>, RecordsError>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.snapshots.len();
        let (snapshot, now) = &self.snapshots[i];
        let records = self.computed.compute(snapshot, *now);
        async move { Ok(records) }.boxed()
    }
}

struct World {
    nodes: usize,
    inputs: MetricsInputs,
    /// Snapshots of cycles 1 and 2 (every value differs between them).
    snapshots: Vec<(Arc<Snapshot>, i64)>,
}

fn build(nodes: usize) -> World {
    let store = Arc::new(Store::new(StoreConfig::new(Duration::from_millis(
        RES_MS.unsigned_abs(),
    ))));
    let mut snapshots = Vec::new();
    for c in 0..3 {
        ingest_cycle(&store, nodes, c);
        let snap = store.publish(now_of(c));
        if c > 0 {
            snapshots.push((snap, now_of(c)));
        }
    }
    let view = ClusterView::new();
    for n in 0..nodes {
        let allocatable = Allocatable {
            cpu_nanocores: 16_000_000_000,
            memory_bytes: 64 << 30,
        };
        view.upsert_node(node_info(n, &[], Some(allocatable)));
    }
    World {
        nodes,
        inputs: MetricsInputs {
            store,
            view,
            resolution: Duration::from_millis(RES_MS.unsigned_abs()),
        },
        snapshots,
    }
}

fn world(nodes: usize) -> &'static World {
    static SMALL: OnceLock<World> = OnceLock::new();
    static LARGE: OnceLock<World> = OnceLock::new();
    let cell = if nodes == SIZES[0] { &SMALL } else { &LARGE };
    cell.get_or_init(|| build(nodes))
}

fn computed(w: &World) -> ComputedSource {
    ComputedSource::new(ComputedSourceConfig::default(), w.inputs.clone())
}

/// A loaded `[file, computed]` set whose computed source takes `snapshots` in turn.
fn record_set(w: &World, snapshots: Vec<(Arc<Snapshot>, i64)>) -> RecordSet {
    let set = RecordSet::new(vec![
        Box::new(FileSource::embedded()),
        Box::new(Turns {
            computed: computed(w),
            snapshots,
            next: AtomicUsize::new(0),
        }),
    ]);
    let errors = futures::executor::block_on(set.refresh());
    assert!(errors.is_empty(), "{errors:?}");
    set
}

#[divan::bench(args = SIZES)]
fn compute(bencher: Bencher<'_, '_>, nodes: usize) {
    let w = world(nodes);
    let source = computed(w);
    let (snapshot, now) = &w.snapshots[0];
    assert_eq!(source.compute(snapshot, *now).len(), nodes + NAMESPACES);
    bencher.bench_local(|| source.compute(black_box(snapshot), *now));
}

#[divan::bench(args = SIZES)]
fn refresh_changed(bencher: Bencher<'_, '_>, nodes: usize) {
    let w = world(nodes);
    let set = record_set(w, w.snapshots.clone());
    let before = set.snapshot().seq;
    futures::executor::block_on(set.refresh_source(1)).unwrap();
    assert!(
        set.snapshot().seq > before,
        "the second snapshot changed nothing"
    );
    bencher.bench_local(|| futures::executor::block_on(set.refresh_source(1)).unwrap());
}

#[divan::bench(args = SIZES)]
fn refresh_unchanged(bencher: Bencher<'_, '_>, nodes: usize) {
    let w = world(nodes);
    let set = record_set(w, w.snapshots[..1].to_vec());
    let before = set.snapshot().seq;
    futures::executor::block_on(set.refresh_source(1)).unwrap();
    assert_eq!(
        set.snapshot().seq,
        before,
        "an unchanged snapshot was an event"
    );
    bencher.bench_local(|| futures::executor::block_on(set.refresh_source(1)).unwrap());
}

#[divan::bench(args = SIZES, sample_count = 10, sample_size = 1)]
fn store_cycle(bencher: Bencher<'_, '_>, nodes: usize) {
    let w = world(nodes);
    let store = Store::new(StoreConfig::new(Duration::from_millis(
        RES_MS.unsigned_abs(),
    )));
    for c in 0..2 {
        ingest_cycle(&store, w.nodes, c);
        store.publish(now_of(c));
    }
    let mut cycle = 2;
    bencher
        .with_inputs(|| {
            cycle += 1;
            let batches: Vec<NodeBatch> = (0..w.nodes)
                .map(|n| batch(n, cycle, Usage::Moving))
                .collect();
            (cycle, batches)
        })
        .bench_local_values(|(c, batches)| {
            for (n, b) in batches.into_iter().enumerate() {
                store.ingest(&node_name(n), b, now_of(c));
            }
            store.publish(now_of(c))
        });
}
