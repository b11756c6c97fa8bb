//! `--goaway-chance` (docs/ha.md §5): a fraction of requests end their connection
//! gracefully (HTTP/2 GOAWAY, HTTP/1.1 `Connection: close`), so a client that keeps one
//! connection (kube-aggregator) reconnects now and then, and no request fails.
//!
//! Connections are counted by a TCP relay between the client and the server: every
//! connection after the first is a reconnect the server asked for.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kubedojo_data_api::demo::{self, DemoServer};
use kubedojo_data_api::server::options::parse_goaway_chance;
use tokio::net::TcpListener;

/// A relay on loopback that counts the connections it carries to `upstream`.
async fn counting_relay(upstream: std::net::SocketAddr) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (port, count)
}

async fn start(chance: &str) -> (DemoServer, tempfile::TempDir) {
    common::crypto();
    let dir = tempfile::tempdir().unwrap();
    let mut args = common::demo_args(dir.path(), None);
    args.nodes = 1;
    args.pods_per_node = 1;
    args.sim_first_address = "127.4.0.1".parse().unwrap();
    args.serving.goaway_chance = parse_goaway_chance(chance).unwrap();
    let server = demo::start(&args).await.unwrap();
    (server, dir)
}

fn client(server: &DemoServer, h1: bool) -> reqwest::Client {
    let b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(server.ca_pem.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(10));
    if h1 { b.http1_only() } else { b }.build().unwrap()
}

/// `n` GETs (in `parallel` concurrent loops) through a counting relay: returns the failed
/// requests, the connections opened and how many responses said `Connection: close`.
async fn run(
    server: &DemoServer,
    h1: bool,
    n: usize,
    parallel: usize,
) -> (Vec<String>, usize, usize) {
    let (port, conns) = counting_relay(server.addr).await;
    let c = client(server, h1);
    let url = format!("https://localhost:{port}/apis/data.kubedojo.io/v1alpha1");
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let closes = Arc::new(AtomicUsize::new(0));
    // One request first, so the concurrent loops find the connection open (a pooled client
    // opens one connection per request that finds none ready).
    let warm = c.get(&url).bearer_auth(&server.token).send().await.unwrap();
    assert_eq!(warm.status(), 200);
    warm.bytes().await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let (c, url, token) = (c.clone(), url.clone(), server.token.clone());
        let (failures, closes) = (failures.clone(), closes.clone());
        let want_version = if h1 {
            reqwest::Version::HTTP_11
        } else {
            reqwest::Version::HTTP_2
        };
        tasks.push(tokio::spawn(async move {
            for _ in 0..n / parallel {
                match c.get(&url).bearer_auth(&token).send().await {
                    Ok(r) if r.status() == 200 && r.version() == want_version => {
                        if r.headers().get("connection").is_some_and(|v| v == "close") {
                            closes.fetch_add(1, Ordering::SeqCst);
                        }
                        if let Err(e) = r.bytes().await {
                            failures.lock().unwrap().push(format!("body: {e}"));
                        }
                    }
                    Ok(r) => failures.lock().unwrap().push(format!(
                        "{} over {:?}",
                        r.status(),
                        r.version()
                    )),
                    Err(e) => failures.lock().unwrap().push(format!("{e:?}")),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let f = failures.lock().unwrap().clone();
    (
        f,
        conns.load(Ordering::SeqCst),
        closes.load(Ordering::SeqCst),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_clients_get_goaways_at_about_the_chance_and_no_request_fails() {
    let (server, _dir) = start("0.02").await;
    // 2,000 sequential requests at 2%: 40 GOAWAYs expected (binomial, sd ≈ 6.3).
    let (failed, conns, closes) = run(&server, false, 2000, 1).await;
    assert!(
        failed.is_empty(),
        "{} requests failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(closes, 0, "HTTP/2 responses never carry Connection: close");
    let reconnects = conns - 1;
    assert!(
        (18..=70).contains(&reconnects),
        "{reconnects} reconnects over 2000 h2 requests at 2% (expected about 40)"
    );
    // 8 concurrent streams on the shared connection (kube-aggregator's situation): a
    // GOAWAY lets the streams in flight finish, and the next ones go on a new connection.
    // (After a GOAWAY each loop that finds no open connection dials one, so there are up to
    // 8 new connections per GOAWAY: only the lower bound is the chance's.)
    let (failed, conns, _) = run(&server, false, 2000, 8).await;
    assert!(
        failed.is_empty(),
        "{} concurrent requests failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        (18..=70 * 8).contains(&(conns - 1)),
        "{} reconnects over 2000 concurrent h2 requests at 2%",
        conns - 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_clients_get_connection_close_at_about_the_chance() {
    let (server, _dir) = start("0.02").await;
    let (failed, conns, closes) = run(&server, true, 1000, 1).await;
    assert!(
        failed.is_empty(),
        "{} requests failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        (5..=40).contains(&closes),
        "{closes} of 1000 HTTP/1.1 responses said Connection: close at 2% (expected about 20)"
    );
    // Each close ends its connection: the next request opens a new one.
    assert_eq!(
        conns,
        closes + 1,
        "connections opened vs Connection: close answers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_goaway_chance_one_connection_carries_everything() {
    let (server, _dir) = start("0").await;
    let (failed, conns, closes) = run(&server, false, 300, 4).await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!((conns, closes), (1, 0), "h2: one connection, never closed");
    let (failed, conns, closes) = run(&server, true, 300, 1).await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(
        (conns, closes),
        (1, 0),
        "HTTP/1.1 keep-alive: one connection"
    );
}

#[test]
fn the_flag_is_refused_outside_zero_to_two_percent() {
    use clap::Parser;
    use kubedojo_data_api::config::Cli;
    for bad in ["0.5", "-1", "abc"] {
        let e = Cli::try_parse_from(["bin", "demo", &format!("--goaway-chance={bad}")])
            .err()
            .unwrap_or_else(|| panic!("--goaway-chance={bad} accepted"));
        assert!(e.to_string().contains("--goaway-chance"), "{bad}: {e}");
    }
    assert!(Cli::try_parse_from(["bin", "--goaway-chance=0.02"]).is_ok());
}
