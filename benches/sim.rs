//! Kubelet simulator benchmarks: rendering one node's `/metrics/resource` body.
//!
//! `cargo bench --bench sim`. Throughput is the body size per iteration; at 5,000 nodes
//! scraped every 15 s the simulator renders 333 bodies per second.

use divan::{Bencher, black_box, counter::BytesCount};
use kubedojo_data_api::sim::{Fleet, FleetSpec, KubeletFormat, render};

const T0: i64 = 1_750_705_770_000;

fn main() {
    divan::main();
}

fn fleet(pods: usize, format: KubeletFormat) -> Fleet {
    let spec = FleetSpec {
        nodes: 1,
        pods_per_node: pods,
        containers_per_pod: 2,
        format,
        ..FleetSpec::default()
    };
    Fleet::new(&spec, T0).expect("valid spec")
}

fn body_len(fleet: &Fleet) -> usize {
    let mut out = Vec::new();
    render(&fleet.nodes[0], T0, &mut out);
    out.len()
}

/// A node of 30, 70 or 110 pods × 2 containers, modern format, into a reused buffer.
#[divan::bench(args = [30, 70, 110])]
fn render_node(bencher: Bencher<'_, '_>, pods: usize) {
    let fleet = fleet(pods, KubeletFormat::Modern);
    let mut out = Vec::with_capacity(body_len(&fleet));
    let mut now = T0;
    bencher
        .counter(BytesCount::new(body_len(&fleet)))
        .bench_local(|| {
            out.clear();
            now += 15_000;
            render(black_box(&fleet.nodes[0]), now, &mut out);
            black_box(out.len())
        });
}

/// Like [`render_node`] but into a fresh `Vec` each time, as the server does.
#[divan::bench(args = [30, 110])]
fn render_node_fresh_vec(bencher: Bencher<'_, '_>, pods: usize) {
    let fleet = fleet(pods, KubeletFormat::Modern);
    let mut now = T0;
    bencher
        .counter(BytesCount::new(body_len(&fleet)))
        .bench_local(|| {
            let mut out = Vec::new();
            now += 15_000;
            render(black_box(&fleet.nodes[0]), now, &mut out);
            out
        });
}

/// The legacy (metrics-server fixture) format: no swap families.
#[divan::bench(args = [70])]
fn render_node_legacy(bencher: Bencher<'_, '_>, pods: usize) {
    let fleet = fleet(pods, KubeletFormat::Legacy);
    let mut out = Vec::with_capacity(body_len(&fleet));
    let mut now = T0;
    bencher
        .counter(BytesCount::new(body_len(&fleet)))
        .bench_local(|| {
            out.clear();
            now += 15_000;
            render(black_box(&fleet.nodes[0]), now, &mut out);
            black_box(out.len())
        });
}
