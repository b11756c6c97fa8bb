//! Compressed kubelet responses (issue 12 §6): what gzip costs and saves per node scrape.
//!
//! Inputs: one simulated node's `/metrics/resource` body (current kubelet format, 30 pods × 2
//! containers, the 1,000 × 30 and 5,000 × 30 fleets' node size), plain and gzipped at the
//! default level as the kubelet's Prometheus handler does.
//!
//! - `decode_plain`: the scraper's work on a plain body (decode into a batch);
//! - `gunzip_and_decode`: the same after inflating the gzipped body (flate2, the
//!   `--kubelet-gzip` path's extra work; reqwest inflates through the same zlib code);
//! - `kubelet_gzip`: the kubelet's side, compressing the body.
//!
//! The byte counters are the body sizes on the wire. Per cycle at N nodes: N × the time and
//! N × the bytes. Run: `cargo bench --bench gzip`.

use std::io::{Read, Write};
use std::sync::LazyLock;

use divan::{Bencher, black_box, counter::BytesCount};
use kubedojo_data_api::scrape::decode::decode;
use kubedojo_data_api::sim::{Fleet, FleetSpec, render};

const T0: i64 = 1_750_705_770_000;

fn main() {
    let (plain, gzipped) = &*BODIES;
    eprintln!(
        "30-pod node body: {} bytes plain, {} bytes gzipped ({:.1}x); per cycle: 1,000 nodes {:.1} MB vs {:.1} MB, 5,000 nodes {:.1} MB vs {:.1} MB",
        plain.len(),
        gzipped.len(),
        plain.len() as f64 / gzipped.len() as f64,
        1_000.0 * plain.len() as f64 / 1e6,
        1_000.0 * gzipped.len() as f64 / 1e6,
        5_000.0 * plain.len() as f64 / 1e6,
        5_000.0 * gzipped.len() as f64 / 1e6,
    );
    divan::main();
}

static BODIES: LazyLock<(Vec<u8>, Vec<u8>)> = LazyLock::new(|| {
    let spec = FleetSpec {
        nodes: 1,
        pods_per_node: 30,
        containers_per_pod: 2,
        ..FleetSpec::default()
    };
    let fleet = Fleet::new(&spec, T0).expect("valid spec");
    let mut plain = Vec::new();
    render(&fleet.nodes[0], T0 + 15_000, &mut plain);
    (plain.clone(), gzip(&plain))
});

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body).expect("in memory");
    encoder.finish().expect("in memory")
}

#[divan::bench]
fn decode_plain(bencher: Bencher<'_, '_>) {
    let (plain, _) = &*BODIES;
    bencher
        .counter(BytesCount::of_slice(plain))
        .bench(|| decode(black_box(plain), T0));
}

#[divan::bench]
fn gunzip_and_decode(bencher: Bencher<'_, '_>) {
    let (plain, gzipped) = &*BODIES;
    bencher.counter(BytesCount::of_slice(gzipped)).bench(|| {
        let mut body = Vec::with_capacity(plain.len());
        flate2::read::GzDecoder::new(black_box(&gzipped[..]))
            .read_to_end(&mut body)
            .expect("valid gzip");
        decode(&body, T0)
    });
}

#[divan::bench]
fn kubelet_gzip(bencher: Bencher<'_, '_>) {
    let (plain, _) = &*BODIES;
    bencher
        .counter(BytesCount::of_slice(plain))
        .bench(|| gzip(black_box(plain)));
}
