//! What a replica spends on one node it does not scrape (issue 14, `docs/ha.md` §3) next to
//! what scraping it costs, for a node of 30 pods × 2 containers (the kubelet simulator's body):
//!
//! - `scrape_node`: decode the kubelet's `/metrics/resource` body and merge it into a store that
//!   holds the previous scrape (rates computed) — the CPU of a scrape minus TLS and HTTP;
//! - `take_peer_node`: decode a peer's answer for the node (wire format v2, the owner's state
//!   after the same scrape) and take it into a store that holds the previous state;
//! - `take_peer_node_unrated`: the same with a state the owner could not rate (a restarted
//!   owner), which the receiver merges with its own previous readings;
//! - `merge_decoded_batch`: only the merge of an already decoded kubelet batch (rates computed):
//!   a lower bound of what a receiver paid per node with wire format v1, which carried the raw
//!   readings (it also decoded them into that batch, one `String` per pod and container);
//! - `owner_export_encode`: what the owner adds per scraped node for its peers (export the
//!   state, encode its frame).
//!
//! Run: `cargo bench --bench ha` (release).

use std::time::Duration;

use divan::{Bencher, black_box};
use kubedojo_data_api::ha::wire;
use kubedojo_data_api::scrape::decode::decode;
use kubedojo_data_api::sim::{Fleet, FleetSpec, KubeletFormat, render};
use kubedojo_data_api::store::{Store, StoreConfig};

const T0: i64 = 1_750_705_770_000;
const RES_MS: i64 = 15_000;
const NODE: &str = "node-0";

fn main() {
    divan::main();
}

fn store() -> Store {
    Store::new(StoreConfig::new(Duration::from_millis(RES_MS as u64)))
}

/// The kubelet's bodies of one node at three consecutive scrapes.
fn bodies() -> Vec<Vec<u8>> {
    let spec = FleetSpec {
        nodes: 1,
        pods_per_node: 30,
        containers_per_pod: 2,
        format: KubeletFormat::Modern,
        ..FleetSpec::default()
    };
    let fleet = Fleet::new(&spec, T0 - 3_600_000).expect("valid spec");
    (0..3)
        .map(|k| {
            let mut out = Vec::new();
            render(&fleet.nodes[0], T0 + k * RES_MS, &mut out);
            out
        })
        .collect()
}

/// A store after scrapes `0..n` of `bodies`.
fn scraped(bodies: &[Vec<u8>], n: usize) -> Store {
    let s = store();
    for (k, b) in bodies.iter().take(n).enumerate() {
        let now = T0 + k as i64 * RES_MS;
        s.ingest(NODE, decode(b, now).expect("valid body").batch, now);
    }
    s
}

/// The owner's answer for the node after scrapes `0..n`.
fn answer(bodies: &[Vec<u8>], n: usize) -> Vec<u8> {
    let state = scraped(bodies, n).export(NODE).expect("scraped");
    let frame = wire::encode_frame(NODE, Ok(&state));
    wire::assemble(std::iter::once(frame.as_slice()))
}

#[divan::bench]
fn scrape_node(bencher: Bencher<'_, '_>) {
    let b = bodies();
    let now = T0 + 2 * RES_MS;
    bencher
        .with_inputs(|| scraped(&b, 2))
        .bench_local_values(|s| {
            let decoded = decode(black_box(&b[2]), now).expect("valid body");
            s.ingest(NODE, decoded.batch, now);
            s
        });
}

#[divan::bench]
fn merge_decoded_batch(bencher: Bencher<'_, '_>) {
    let b = bodies();
    let now = T0 + 2 * RES_MS;
    let batch = decode(&b[2], now).expect("valid body").batch;
    bencher
        .with_inputs(|| (scraped(&b, 2), batch.clone()))
        .bench_local_values(|(s, batch)| {
            s.ingest(NODE, batch, now);
            s
        });
}

#[divan::bench]
fn take_peer_node(bencher: Bencher<'_, '_>) {
    let b = bodies();
    let previous = scraped(&b, 2).export(NODE).expect("scraped");
    let body = answer(&b, 3);
    let now = T0 + 2 * RES_MS;
    bencher
        .with_inputs(|| {
            let s = store();
            s.adopt(NODE, &previous, now).expect("valid state");
            s
        })
        .bench_local_values(|s| {
            let frames = wire::decode(black_box(&body)).expect("valid body");
            for (node, frame) in &frames {
                if let wire::NodeFrame::Ok(state) = frame {
                    s.adopt(node, state, now).expect("valid state");
                }
            }
            s
        });
}

#[divan::bench]
fn take_peer_node_unrated(bencher: Bencher<'_, '_>) {
    let b = bodies();
    let previous = scraped(&b, 2).export(NODE).expect("scraped");
    // A restarted owner: one scrape only, no rates.
    let state = {
        let s = store();
        let now = T0 + 2 * RES_MS;
        s.ingest(NODE, decode(&b[2], now).expect("valid body").batch, now);
        s.export(NODE).expect("scraped")
    };
    assert!(!state.fully_rated());
    let frame = wire::encode_frame(NODE, Ok(&state));
    let body = wire::assemble(std::iter::once(frame.as_slice()));
    let now = T0 + 2 * RES_MS;
    bencher
        .with_inputs(|| {
            let s = store();
            s.adopt(NODE, &previous, now).expect("valid state");
            s
        })
        .bench_local_values(|s| {
            let frames = wire::decode(black_box(&body)).expect("valid body");
            for (node, frame) in &frames {
                if let wire::NodeFrame::Ok(state) = frame {
                    s.adopt(node, state, now).expect("valid state");
                }
            }
            s
        });
}

#[divan::bench]
fn owner_export_encode(bencher: Bencher<'_, '_>) {
    let b = bodies();
    let s = scraped(&b, 3);
    bencher.bench_local(|| {
        let state = s.export(black_box(NODE)).expect("scraped");
        wire::encode_frame(NODE, Ok(&state))
    });
}
