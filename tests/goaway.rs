//! `--goaway-chance` (docs/ha.md §5): a fraction of requests end their connection
//! gracefully (HTTP/2 GOAWAY, HTTP/1.1 `Connection: close`), so a client that keeps one
//! connection (kube-aggregator) reconnects now and then, and no request fails.
//!
//! Connections are counted by a TCP relay between the client and the server, which also
//! counts the connections that ended while the client still held its pool (a client keeps
//! its connections open until it is dropped unless the server asks it to close). That
//! second count is what the server asked for; the number of connections opened also holds
//! the client's own: a pooled HTTP/1.1 client (hyper's) that finds no idle connection at the
//! instant it asks races a new connect against the pool, so on a busy machine it now and
//! then opens a spare connection that no close asked for (it stays idle in the pool).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kubedojo_data_api::demo::{self, DemoServer};
use kubedojo_data_api::server::options::parse_goaway_chance;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// Connections a relay carried, and how many of them have ended (either side closed).
#[derive(Clone, Default)]
struct Counts {
    opened: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
}

/// A relay on loopback that counts the connections it carries to `upstream`.
async fn counting_relay(upstream: std::net::SocketAddr) -> (u16, Counts) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let counts = Counts::default();
    let counted = counts.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            counted.opened.fetch_add(1, Ordering::SeqCst);
            let ended = counted.ended.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                    let _ = sw.shutdown().await;
                };
                let down = async {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    let _ = cw.shutdown().await;
                };
                tokio::pin!(up, down);
                // The first side to close ends the connection (the other follows).
                tokio::select! {
                    _ = &mut down => {
                        ended.fetch_add(1, Ordering::SeqCst);
                        up.await;
                    }
                    _ = &mut up => {
                        ended.fetch_add(1, Ordering::SeqCst);
                        down.await;
                    }
                }
            });
        }
    });
    (port, counts)
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

/// What one [`run`] saw.
struct Outcome {
    /// Requests that failed, described.
    failed: Vec<String>,
    /// Connections the client opened.
    conns: usize,
    /// Connections that ended while the client still held its pool: the ones the server
    /// asked the client to leave (GOAWAY, `Connection: close`) or closed itself.
    ended: usize,
    /// Responses that said `Connection: close`.
    closes: usize,
}

/// `n` GETs (in `parallel` concurrent loops) through a counting relay.
async fn run(server: &DemoServer, h1: bool, n: usize, parallel: usize) -> Outcome {
    let (port, counts) = counting_relay(server.addr).await;
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
    let closes = closes.load(Ordering::SeqCst);
    // A close asked for by the last responses reaches the relay a moment later: wait (while
    // `c`, and so the client's pool, is alive) until every asked close has arrived, then a
    // little longer for any the server made unasked.
    let settle = std::time::Instant::now();
    while counts.ended.load(Ordering::SeqCst) < closes && settle.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let outcome = Outcome {
        failed: failures.lock().unwrap().clone(),
        conns: counts.opened.load(Ordering::SeqCst),
        ended: counts.ended.load(Ordering::SeqCst),
        closes,
    };
    drop(c);
    outcome
}

fn no_failures(o: &Outcome) {
    assert!(
        o.failed.is_empty(),
        "{} requests failed: {:?}",
        o.failed.len(),
        &o.failed[..o.failed.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_clients_get_goaways_at_about_the_chance_and_no_request_fails() {
    let (server, _dir) = start("0.02").await;
    // 2,000 sequential requests at 2%: 40 GOAWAYs expected (binomial, sd ≈ 6.3).
    let o = run(&server, false, 2000, 1).await;
    no_failures(&o);
    assert_eq!(
        o.closes, 0,
        "HTTP/2 responses never carry Connection: close"
    );
    assert!(
        (18..=70).contains(&o.ended),
        "{} connections ended over 2000 h2 requests at 2% (expected about 40)",
        o.ended
    );
    assert!(
        o.conns > o.ended,
        "each GOAWAY moved the client to a new connection"
    );
    // 8 concurrent streams on the shared connection (kube-aggregator's situation): a
    // GOAWAY lets the streams in flight finish, and the next ones go on a new connection.
    // (After a GOAWAY each loop that finds no open connection dials one, so there are up to
    // 8 new connections per GOAWAY: only the lower bound is the chance's.)
    let o = run(&server, false, 2000, 8).await;
    no_failures(&o);
    assert!(
        (18..=70 * 8).contains(&(o.conns - 1)),
        "{} reconnects over 2000 concurrent h2 requests at 2%",
        o.conns - 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_clients_get_connection_close_at_about_the_chance() {
    let (server, _dir) = start("0.02").await;
    let o = run(&server, true, 1000, 1).await;
    no_failures(&o);
    assert!(
        (5..=40).contains(&o.closes),
        "{} of 1000 HTTP/1.1 responses said Connection: close at 2% (expected about 20)",
        o.closes
    );
    // Each close ends its connection, and no other connection ends.
    assert_eq!(
        o.ended, o.closes,
        "connections ended vs Connection: close answers"
    );
    // The next request goes on another connection (a few more may be the client's own
    // connect races: see the module doc).
    assert!(
        (o.closes..=o.closes + 6).contains(&o.conns),
        "{} connections opened for {} Connection: close answers",
        o.conns,
        o.closes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_goaway_chance_one_connection_carries_everything() {
    let (server, _dir) = start("0").await;
    let o = run(&server, false, 300, 4).await;
    no_failures(&o);
    assert_eq!(
        (o.conns, o.ended, o.closes),
        (1, 0, 0),
        "h2: one connection, never closed"
    );
    let o = run(&server, true, 300, 1).await;
    no_failures(&o);
    assert_eq!(
        (o.ended, o.closes),
        (0, 0),
        "HTTP/1.1 keep-alive: the server never ends the connection"
    );
    assert!(
        (1..=3).contains(&o.conns),
        "HTTP/1.1 keep-alive: {} connections for 300 sequential requests",
        o.conns
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
