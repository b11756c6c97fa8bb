//! `--profiling` (issue 13 §2): `/debug/pprof/profile` over real TLS behind the delegated
//! authentication and authorization, as k8s.io/apiserver serves Go's net/http/pprof: a
//! gzip-compressed pprof protobuf with samples of what the process was doing, a
//! SubjectAccessReview for the non-resource path, 401 for a bad credential and 403 for a
//! user the review denies.

mod common;

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::harness::{Harness, Options, UNAUTHORIZED};
use pprof::protos::{Message, Profile};
use serde_json::json;

/// Burns CPU until `stop`, so the profile has something to sample; its name must show up
/// in the profile's function table.
#[inline(never)]
fn pprof_test_burn_cpu(stop: &AtomicBool) -> u64 {
    let mut x: u64 = 1;
    while !stop.load(Ordering::Relaxed) {
        for i in 0..100_000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
    x
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_profile_is_pprof_with_samples_behind_authn_and_authz() {
    let h = Harness::start_with(Options {
        profiling: true,
        ..Options::default()
    })
    .await;
    h.fake.add_token("t-ops", "ops", &[]);
    h.fake.add_token("t-dev", "dev", &[]);
    h.fake.allow("ops");
    let c = h.client(None);

    // A bad credential is 401; a user the SubjectAccessReview denies (and anonymous) 403.
    let path = "/debug/pprof/profile?seconds=1";
    let (code, body) = h.get(&c, path, &[("Authorization", "Bearer wrong")]).await;
    assert_eq!((code, body.as_str()), (401, UNAUTHORIZED));
    let (code, body) = h.get(&c, path, &[("Authorization", "Bearer t-dev")]).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains(r#"User \"dev\" cannot get path \"/debug/pprof/profile\""#),
        "{body}"
    );
    let (code, _) = h.get(&c, path, &[]).await;
    assert_eq!(code, 403, "anonymous");

    // An allowed user gets a 2 s CPU profile while a thread burns CPU.
    let stop = Arc::new(AtomicBool::new(false));
    let burner = {
        let stop = stop.clone();
        std::thread::spawn(move || pprof_test_burn_cpu(&stop))
    };
    let resp = c
        .get(format!("{}/debug/pprof/profile?seconds=2", h.base))
        .bearer_auth("t-ops")
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    let gz = resp.bytes().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    burner.join().unwrap();
    let sar = h
        .fake
        .sars()
        .into_iter()
        .find(|s| s["user"] == "ops")
        .expect("a SubjectAccessReview for ops");
    assert_eq!(
        sar["nonResourceAttributes"],
        json!({"path": "/debug/pprof/profile", "verb": "get"})
    );

    // Go's format: gzip, then a perftools.profiles.Profile.
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "not gzip");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .unwrap();
    let profile = Profile::decode(raw.as_slice()).expect("a pprof Profile");
    let strings = &profile.string_table;
    let sample_types: Vec<(&str, &str)> = profile
        .sample_type
        .iter()
        .map(|t| {
            (
                strings[t.ty as usize].as_str(),
                strings[t.unit as usize].as_str(),
            )
        })
        .collect();
    // As Go's CPU profiles: a sample count and CPU time.
    assert_eq!(sample_types, [("samples", "count"), ("cpu", "nanoseconds")]);
    assert_eq!(profile.period, 10_000_000, "100 Hz");
    let samples: i64 = profile.sample.iter().map(|s| s.value[1]).sum();
    // 2 s of one busy thread at 100 Hz: about 200 samples; allow a loaded machine.
    assert!(
        profile.sample.len() > 5 && samples > 20 * 10_000_000,
        "{} samples, {samples} ns",
        profile.sample.len()
    );
    assert!(
        profile
            .function
            .iter()
            .any(|f| strings[f.name as usize].contains("pprof_test_burn_cpu")),
        "the busy function is not in the profile"
    );
    assert!(profile.duration_nanos >= 2_000_000_000);

    // One CPU profile at a time, as Go's StartCPUProfile: a second one meanwhile is 500.
    let first = {
        let c = c.clone();
        let url = format!("{}/debug/pprof/profile?seconds=2", h.base);
        tokio::spawn(async move {
            c.get(url)
                .bearer_auth("t-ops")
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, body) = h
        .get(
            &c,
            "/debug/pprof/profile?seconds=1",
            &[("Authorization", "Bearer t-ops")],
        )
        .await;
    assert_eq!(code, 500, "{body}");
    assert!(
        body.starts_with("Could not enable CPU profiling:"),
        "{body}"
    );
    assert_eq!(first.await.unwrap(), 200);

    // Go's other profiles have no equivalent here: Go's 404.
    let (code, body) = h
        .get(
            &c,
            "/debug/pprof/heap",
            &[("Authorization", "Bearer t-ops")],
        )
        .await;
    assert_eq!((code, body.as_str()), (404, "Unknown profile: heap\n"));
}
