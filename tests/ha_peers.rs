//! The peer exchange end to end on loopback: a replica's shard is served only to a peer that
//! presents the right token over a connection to the pinned certificate; a replica asks each
//! peer only for the nodes it needs from it (one owner per node, the next owner when that one
//! fails); a peer that hangs or answers garbage costs a bounded wait and its nodes go to the
//! next owner or are handed back for a direct scrape, never ingested.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kubedojo_data_api::cluster::NodeInfo;
use kubedojo_data_api::ha::coordinator::{Coordinator, Plan};
use kubedojo_data_api::ha::membership::{Member, MemberSet, Membership};
use kubedojo_data_api::ha::peer::{
    self, KeepAlive, PeerClient, PeerError, PeerIdentity, PeerToken,
};
use kubedojo_data_api::ha::peer_auth::SharedSecret;
use kubedojo_data_api::ha::rendezvous;
use kubedojo_data_api::ha::shard::OwnShard;
use kubedojo_data_api::ha::wire::NodeFrame;
use kubedojo_data_api::store::batch::{ContainerPoint, MetricsPoint, NodeBatch, PodPoints};
use kubedojo_data_api::store::transfer::NodeState;
use kubedojo_data_api::store::{Store, StoreConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "peer-secret-0123456789";
/// The resolution the peers of these tests keep their connections for.
const RESOLUTION: Duration = Duration::from_secs(15);

fn batch(node: &str, ts: i64, cpu: u64) -> NodeBatch {
    NodeBatch {
        node: Some(MetricsPoint {
            start_time_ms: 0,
            timestamp_ms: ts,
            cumulative_cpu_ns: cpu,
            memory_bytes: 1 << 30,
        }),
        pods: vec![PodPoints {
            namespace: "default".into(),
            name: format!("pod-on-{node}"),
            containers: vec![ContainerPoint {
                name: "app".into(),
                point: MetricsPoint {
                    start_time_ms: ts - 600_000,
                    timestamp_ms: ts,
                    cumulative_cpu_ns: cpu / 2,
                    memory_bytes: 1 << 20,
                },
            }],
        }],
    }
}

/// What an owner's store holds for `node` after scraping `batch(node, ts, cpu)` (and, when
/// `prev` is given, `batch(node, prev.0, prev.1)` before it, so the state has rates).
fn state(node: &str, prev: Option<(i64, u64)>, ts: i64, cpu: u64) -> NodeState {
    let store = Store::new(StoreConfig::new(Duration::from_secs(1)));
    if let Some((pts, pcpu)) = prev {
        store.ingest(node, batch(node, pts, pcpu), pts);
    }
    store.ingest(node, batch(node, ts, cpu), ts);
    store.export(node).unwrap()
}

struct Peer {
    member: Member,
    shard: Arc<OwnShard>,
    served: prometheus_client::metrics::counter::Counter,
    stop: CancellationToken,
}

impl Peer {
    /// This tick the peer scrapes exactly `nodes`, with these outcomes.
    fn serve(&self, nodes: &[(String, Result<NodeState, ()>)]) {
        self.shard.begin_tick(nodes.iter().map(|(n, _)| n.as_str()));
        for (n, r) in nodes {
            self.shard.record(n, r.as_ref().map_err(|_| ()));
        }
    }
}

async fn start_peer(id: &str) -> Peer {
    common::crypto();
    let identity = PeerIdentity::generate().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = prometheus_client::metrics::counter::Counter::default();
    let shard = Arc::new(OwnShard::counting(served.clone()));
    let stop = CancellationToken::new();
    tokio::spawn(peer::serve(
        listener,
        identity.clone(),
        Arc::new(SharedSecret(SECRET.into())),
        shard.clone(),
        KeepAlive::for_resolution(RESOLUTION).server_idle,
        stop.clone(),
    ));
    Peer {
        member: Member {
            id: id.into(),
            address: addr.to_string(),
            cert_sha256: identity.cert_sha256,
        },
        shard,
        served,
        stop,
    }
}

fn client(token: &str) -> PeerClient {
    PeerClient::new(
        PeerToken::Fixed(token.into()),
        Duration::from_millis(800),
        1 << 20,
        KeepAlive::for_resolution(RESOLUTION).client_idle,
    )
}

#[tokio::test]
async fn the_right_token_to_the_pinned_certificate_gets_the_nodes_asked() {
    let p = start_peer("replica-b").await;
    let s1 = state("node-1", None, 1_000_000, 5_000);
    p.serve(&[
        ("node-1".into(), Ok(s1.clone())),
        ("node-2".into(), Err(())),
        ("node-3".into(), Ok(state("node-3", None, 1_000_000, 5_000))),
    ]);
    let (frames, bytes) = client(SECRET)
        .fetch(&p.member, &["node-2", "node-1", "node-9", "node-1"])
        .await
        .unwrap();
    assert!(bytes > 0);
    // Exactly what was asked, in that order, once each; node-3 was not asked, node-9 is not
    // scraped there.
    assert_eq!(
        frames,
        vec![
            ("node-2".to_string(), NodeFrame::Failed),
            ("node-1".to_string(), NodeFrame::Ok(s1)),
            ("node-9".to_string(), NodeFrame::NotHere),
        ]
    );
    // A node the peer scraped in an earlier tick but not in this one is not handed out.
    p.serve(&[("node-3".into(), Ok(state("node-3", None, 1_000_000, 5_000)))]);
    let (frames, _) = client(SECRET).fetch(&p.member, &["node-1"]).await.unwrap();
    assert_eq!(frames, vec![("node-1".to_string(), NodeFrame::NotHere)]);
    p.stop.cancel();
}

#[tokio::test]
async fn bad_requests_get_a_clear_status() {
    let p = start_peer("replica-b").await;
    let anon = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let url = format!("https://{}{}", p.member.address, peer::SHARD_PATH);
    // Not a request body.
    let resp = anon
        .post(&url)
        .bearer_auth(SECRET)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("bad shard request"));
    // Over the request limit: refused before it is decoded.
    let huge = vec![b'x'; kubedojo_data_api::ha::wire::MAX_REQUEST_BYTES + 1];
    let resp = anon
        .post(&url)
        .bearer_auth(SECRET)
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    // Version 1's whole-shard GET is gone: 405, the asker scrapes those nodes itself.
    let resp = anon.get(&url).bearer_auth(SECRET).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    let old = format!("https://{}/ha/v1/shard", p.member.address);
    let resp = anon.get(&old).bearer_auth(SECRET).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    p.stop.cancel();
}

#[tokio::test]
async fn anonymous_and_wrong_tokens_are_refused() {
    let p = start_peer("replica-b").await;
    p.serve(&[("node-1".into(), Ok(state("node-1", None, 1_000_000, 5_000)))]);
    // A wrong token: 401, no data.
    match client("not-the-secret").fetch(&p.member, &["node-1"]).await {
        Err(PeerError::Status(401)) => {}
        other => panic!("wrong token: {other:?}"),
    }
    // Anonymous: a plain HTTPS client that accepts the certificate but sends no token.
    let anon = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let url = format!("https://{}{}", p.member.address, peer::SHARD_PATH);
    let request = kubedojo_data_api::ha::wire::encode_request(["node-1"].into_iter());
    let resp = anon.post(&url).body(request.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body = resp.bytes().await.unwrap();
    assert!(
        !body.starts_with(b"KDS2"),
        "no shard bytes to an anonymous client"
    );
    // A token that is not a bearer token, and an empty one.
    let resp = anon
        .post(&url)
        .body(request.clone())
        .header("authorization", format!("Basic {SECRET}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = anon
        .post(&url)
        .body(request.clone())
        .header("authorization", "Bearer ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // The right token is accepted by the same server (the refusals were not a broken server).
    let resp = anon
        .post(&url)
        .body(request)
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap().starts_with(b"KDS2"));
    p.stop.cancel();
}

#[tokio::test]
async fn a_server_whose_certificate_is_not_the_pinned_one_gets_no_token() {
    let p = start_peer("replica-b").await;
    let impostor = start_peer("replica-b").await;
    // The membership record says replica-b is at the impostor's address, but with the real
    // replica's pin (a different certificate): the handshake fails before any token is sent.
    let wrong = Member {
        address: impostor.member.address.clone(),
        ..p.member.clone()
    };
    match client(SECRET).fetch(&wrong, &["node-1"]).await {
        Err(PeerError::Transport(msg)) => assert!(
            msg.to_lowercase().contains("certificate"),
            "unexpected transport error: {msg}"
        ),
        other => panic!("wrong certificate: {other:?}"),
    }
    p.stop.cancel();
    impostor.stop.cancel();
}

/// A peer that accepts connections and never answers.
async fn hanging_peer() -> (Member, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (s, _) = listener.accept().await.unwrap();
            held.push(s);
        }
    });
    let m = Member {
        id: "replica-hung".into(),
        address: addr.to_string(),
        cert_sha256: [0; 32],
    };
    (m, task)
}

/// A peer with the right certificate that answers 200 with garbage.
async fn garbage_peer(body: &'static [u8]) -> (Member, tokio::task::JoinHandle<()>) {
    common::crypto();
    let identity = PeerIdentity::generate().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(kubedojo_data_api::server::tls::StaticCert(
            identity.certified.clone(),
        )));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let task = tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut tls, &mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.kubedojo.shard.v2\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes()).await;
                let _ = tls.write_all(body).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    let m = Member {
        id: "replica-garbage".into(),
        address: addr.to_string(),
        cert_sha256: identity.cert_sha256,
    };
    (m, task)
}

#[tokio::test]
async fn a_hanging_peer_costs_one_bounded_wait() {
    common::crypto();
    let (m, task) = hanging_peer().await;
    let started = Instant::now();
    let r = client(SECRET).fetch(&m, &["node-1"]).await;
    let took = started.elapsed();
    assert!(
        matches!(r, Err(PeerError::Timeout(_)) | Err(PeerError::Transport(_))),
        "{r:?}"
    );
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    task.abort();
}

#[tokio::test]
async fn garbage_is_refused_whole() {
    let (m, task) = garbage_peer(b"{\"kind\":\"Status\",\"code\":200}").await;
    assert!(matches!(
        client(SECRET).fetch(&m, &["node-1"]).await,
        Err(PeerError::Wire(_))
    ));
    task.abort();
    // A valid start followed by a truncated frame: also nothing.
    let (m, task) = garbage_peer(b"KDS2\x02\x06node-1\x01\x01\x00").await;
    assert!(matches!(
        client(SECRET).fetch(&m, &["node-1"]).await,
        Err(PeerError::Wire(_))
    ));
    task.abort();
}

/// A TCP relay in front of `to` that counts the connections it accepts. With `cut_after` set,
/// a connection that carried nothing for that long is closed as soon as the client sends on it
/// again, unanswered: a server ending an idle keep-alive connection just as the client reuses
/// it (the race tests/e2e/ha.sh found).
async fn relay(to: String, cut_after: Option<Duration>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let to = to.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&to).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let (mut up, mut down) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
                let mut last = Instant::now();
                loop {
                    tokio::select! {
                        n = cr.read(&mut up) => {
                            let n = match n { Ok(0) | Err(_) => return, Ok(n) => n };
                            if cut_after.is_some_and(|d| last.elapsed() >= d) {
                                return; // both halves of both sockets drop: closed
                            }
                            if sw.write_all(&up[..n]).await.is_err() { return; }
                        }
                        n = sr.read(&mut down) => {
                            let n = match n { Ok(0) | Err(_) => return, Ok(n) => n };
                            if cw.write_all(&down[..n]).await.is_err() { return; }
                        }
                    }
                    last = Instant::now();
                }
            });
        }
    });
    (addr, accepted)
}

/// Replicas fetch once per tick: the connection of one tick is still open at the next, on
/// both sides (no TLS handshake per peer per tick). 11 s apart: longer than the client (5 s)
/// and the server (10 s) used to keep an idle peer connection.
#[tokio::test]
async fn a_fetch_a_tick_later_reuses_the_connection() {
    let p = start_peer("replica-b").await;
    p.serve(&[("node-1".into(), Ok(state("node-1", None, 1_000_000, 5_000)))]);
    let (addr, accepted) = relay(p.member.address.clone(), None).await;
    let via = Member {
        address: addr,
        ..p.member.clone()
    };
    let c = client(SECRET);
    for round in 0..2 {
        if round > 0 {
            tokio::time::sleep(Duration::from_secs(11)).await;
        }
        let (frames, _) = c.fetch(&via, &["node-1"]).await.unwrap();
        assert!(matches!(frames[0].1, NodeFrame::Ok(_)), "round {round}");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the second fetch opened a new connection"
    );
    p.stop.cancel();
}

/// A server that closes an idle connection just as the client sends a request on it does not
/// fail the fetch: the client asks again on a new connection (the request only reads).
#[tokio::test]
async fn a_connection_closed_under_a_request_does_not_fail_the_fetch() {
    let p = start_peer("replica-b").await;
    p.serve(&[("node-1".into(), Ok(state("node-1", None, 1_000_000, 5_000)))]);
    let (addr, accepted) = relay(p.member.address.clone(), Some(Duration::from_secs(1))).await;
    let via = Member {
        address: addr,
        ..p.member.clone()
    };
    let c = client(SECRET);
    c.fetch(&via, &["node-1"]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (frames, _) = c
        .fetch(&via, &["node-1"])
        .await
        .expect("the second fetch, its pooled connection cut under it");
    assert!(matches!(frames[0].1, NodeFrame::Ok(_)));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "asked again on a new connection"
    );
    p.stop.cancel();
}

fn node(name: &str) -> Arc<NodeInfo> {
    Arc::new(NodeInfo {
        name: name.into(),
        labels: Default::default(),
        addresses: vec![],
        kubelet_port: 0,
        metrics_path: None,
        ready: true,
        allocatable: None,
    })
}

/// A coordinator for replica "me" with `peers` as the other members.
fn coordinator(peers: &[Member], replication: usize) -> Arc<Coordinator> {
    let me = Member {
        id: "me".into(),
        address: "127.0.0.1:1".into(),
        cert_sha256: [1; 32],
    };
    let membership = Membership::new(MemberSet::new(me, peers.iter().cloned()));
    Coordinator::new(
        membership,
        replication,
        Arc::new(OwnShard::new()),
        client(SECRET),
        Duration::ZERO,
        Default::default(),
    )
}

fn nodes(n: usize) -> Vec<Arc<NodeInfo>> {
    (0..n).map(|i| node(&format!("node-{i:03}"))).collect()
}

/// What a peer scrapes this tick by rendezvous over `ids`: `(node, state)` for each node it
/// owns, with two readings (so the state has rates).
fn owned_states(
    ids: &[String],
    peer: &str,
    all: &[Arc<NodeInfo>],
    r: usize,
    ts: i64,
) -> Vec<(String, Result<NodeState, ()>)> {
    all.iter()
        .filter(|n| rendezvous::owns(ids, peer, &n.name, r))
        .map(|n| {
            let st = state(
                &n.name,
                Some((ts - 10_000, 1_000_000_000)),
                ts,
                2_000_000_000,
            );
            (n.name.clone(), Ok(st))
        })
        .collect()
}

fn ids_of(peers: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = peers.iter().map(|s| s.to_string()).collect();
    v.push("me".into());
    v.sort();
    v
}

#[tokio::test]
async fn nodes_of_a_good_peer_are_ingested_and_those_of_a_hung_or_garbage_one_come_back() {
    let good = start_peer("good").await;
    let (hung, hung_task) = hanging_peer().await;
    let (bad, bad_task) = garbage_peer(b"KDS2\x01garbage").await;
    let members = vec![good.member.clone(), hung.clone(), bad.clone()];
    let ids = ids_of(&["good", "replica-hung", "replica-garbage"]);
    let all = nodes(120);
    let owner = |n: &str| rendezvous::owners(&ids, n, 1)[0].to_string();
    good.serve(&owned_states(&ids, "good", &all, 1, 1_010_000));
    let c = coordinator(&members, 1);
    let store = Store::new(StoreConfig::new(Duration::from_secs(1)));
    let started = Instant::now();
    let plan: Plan = c.plan(all.clone());
    assert!(plan.own.iter().all(|n| owner(&n.name) == "me"));
    assert_eq!(plan.own.len() + plan.remote.len(), 120);
    let missing = c.fetch_remote(plan, &store).await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "bounded by the peer timeout"
    );
    let mut expected: Vec<String> = all
        .iter()
        .filter(|n| owner(&n.name) == "replica-hung" || owner(&n.name) == "replica-garbage")
        .map(|n| n.name.clone())
        .collect();
    expected.sort();
    let got: Vec<String> = missing.iter().map(|n| n.name.clone()).collect();
    assert_eq!(
        got, expected,
        "the hung and garbage peers' nodes are scraped directly"
    );
    assert!(!expected.is_empty());
    // The good peer's nodes are served with the owner's rates; nothing of the garbage peer's
    // ever reached the store.
    let snap = store.publish(1_010_500);
    for n in &all {
        let has = snap.node(&n.name).is_some();
        assert_eq!(has, owner(&n.name) == "good", "{}", n.name);
    }
    let usage = snap
        .node(
            all.iter()
                .find(|n| owner(&n.name) == "good")
                .unwrap()
                .name
                .as_str(),
        )
        .unwrap();
    // 1e9 ns over 10 s = 0.1 core = 100,000,000 nanocores.
    assert_eq!(usage.usage.cpu_nanocores, 100_000_000, "{usage:?}");
    assert_eq!(
        snap.pod_count(),
        all.iter().filter(|n| owner(&n.name) == "good").count()
    );
    good.stop.cancel();
    hung_task.abort();
    bad_task.abort();
}

/// R = 2 over three members: each remote node is asked of exactly one owner (its best), so the
/// bytes received are those of the nodes needed, not the two owners' whole shards (4x more:
/// each owns two thirds of the fleet). With the first owner of some nodes down, those nodes
/// come from their second owner in the same fetch, and nothing is scraped directly.
#[tokio::test]
async fn each_node_is_asked_of_one_owner_and_a_dead_first_owner_is_covered_by_the_second() {
    let b = start_peer("b").await;
    let c_peer = start_peer("c").await;
    let members = vec![b.member.clone(), c_peer.member.clone()];
    let ids = ids_of(&["b", "c"]);
    let all = nodes(90);
    let ts = 1_010_000;
    b.serve(&owned_states(&ids, "b", &all, 2, ts));
    c_peer.serve(&owned_states(&ids, "c", &all, 2, ts));
    // What a node's answer weighs: its frame alone (a one-node request's body minus the 5-byte
    // header), from the peer that has it.
    let frame_bytes = |n: &str| {
        let st = state(n, Some((ts - 10_000, 1_000_000_000)), ts, 2_000_000_000);
        kubedojo_data_api::ha::wire::encode_frame(n, Ok(&st)).len()
    };
    let whole_shards: usize = all
        .iter()
        .map(|n| {
            let owners = rendezvous::owners(&ids, &n.name, 2);
            owners.iter().filter(|o| **o != "me").count() * frame_bytes(&n.name)
        })
        .sum();

    let coord = coordinator(&members, 2);
    let store = Store::new(StoreConfig::new(Duration::from_secs(1)));
    let plan = coord.plan(all.clone());
    let remote: Vec<String> = plan.remote.iter().map(|n| n.name.clone()).collect();
    assert!(!remote.is_empty());
    let needed_bytes: usize = remote.iter().map(|n| frame_bytes(n)).sum();
    let missing = coord.fetch_remote(plan, &store).await;
    assert!(missing.is_empty(), "{missing:?}");
    let received = coord.stats().bytes_received.get() as usize;
    // Two bodies (one per peer), each with a 4-byte magic and a short count.
    assert!(
        received >= needed_bytes && received <= needed_bytes + 2 * 8,
        "received {received} bytes for {needed_bytes} bytes of needed frames"
    );
    assert_eq!(received as u64, b.served.get() + c_peer.served.get());
    assert!(
        received * 3 < whole_shards,
        "{received} vs {whole_shards} for both owners' whole shards"
    );
    assert_eq!(coord.stats().nodes_from_peers.get(), remote.len() as u64);
    // Each node from its best owner.
    let from_b = remote
        .iter()
        .filter(|n| rendezvous::owners(&ids, n, 2).iter().find(|o| **o != "me") == Some(&"b"))
        .count();
    assert!(from_b > 0 && from_b < remote.len());

    // b is gone (its listener stops): its nodes come from c, their second owner.
    b.stop.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let coord = coordinator(&members, 2);
    let store = Store::new(StoreConfig::new(Duration::from_secs(1)));
    let plan = coord.plan(all.clone());
    let before = c_peer.served.get();
    let missing = coord.fetch_remote(plan, &store).await;
    assert!(missing.is_empty(), "c has every node b had: {missing:?}");
    assert_eq!(coord.stats().fallback_scrapes.get(), 0);
    let snap = store.publish(ts + 500);
    assert_eq!(snap.tracked_node_count(), remote.len());
    assert_eq!(
        snap.node_count(),
        remote.len(),
        "every node with the owner's rate"
    );
    // c was asked for exactly the remote nodes (once each): what it served is their frames.
    let served = (c_peer.served.get() - before) as usize;
    assert!(
        served >= needed_bytes && served <= needed_bytes + 2 * 8,
        "c served {served} bytes for {needed_bytes}"
    );
    c_peer.stop.cancel();
}

/// A peer that does not scrape a node this tick (its member view differs) says so; the asker
/// takes the node from its next owner, or scrapes it itself when there is none.
#[tokio::test]
async fn a_node_its_owner_does_not_scrape_goes_to_the_next_owner_or_is_scraped_here() {
    let b = start_peer("b").await;
    let c_peer = start_peer("c").await;
    let members = vec![b.member.clone(), c_peer.member.clone()];
    let ids = ids_of(&["b", "c"]);
    let all = nodes(60);
    let ts = 1_010_000;
    // b believes it is alone with c (it never saw "me"): it scrapes its nodes of {b, c} only.
    let b_view = vec!["b".to_string(), "c".to_string()];
    b.serve(&owned_states(&b_view, "b", &all, 1, ts));
    c_peer.serve(&owned_states(&ids, "c", &all, 1, ts));
    let coord = coordinator(&members, 1);
    let store = Store::new(StoreConfig::new(Duration::from_secs(1)));
    let plan = coord.plan(all.clone());
    let missing: Vec<String> = coord
        .fetch_remote(plan, &store)
        .await
        .into_iter()
        .map(|n| n.name.clone())
        .collect();
    // The nodes "me" believes b owns but b does not scrape (c's in b's view): b says not here,
    // R = 1 has no next owner, so "me" scrapes them.
    let expected: Vec<String> = all
        .iter()
        .filter(|n| {
            rendezvous::owners(&ids, &n.name, 1)[0] == "b"
                && rendezvous::owners(&b_view, &n.name, 1)[0] != "b"
        })
        .map(|n| n.name.clone())
        .collect();
    assert_eq!(missing, expected);
    assert_eq!(coord.stats().not_here.get(), expected.len() as u64);

    // R = 2: such nodes come from their second owner, c, instead. (b now believes a fourth
    // member d exists and scrapes only its nodes of {b, c, d}: over {b, c} b would own every
    // node it ranks first, and never say "not here" at R = 2.)
    c_peer.serve(&owned_states(&ids, "c", &all, 2, ts));
    let b_view = vec!["b".to_string(), "c".to_string(), "d".to_string()];
    b.serve(&owned_states(&b_view, "b", &all, 1, ts));
    let coord = coordinator(&members, 2);
    let store = Store::new(StoreConfig::new(Duration::from_secs(1)));
    let plan = coord.plan(all.clone());
    let remote = plan.remote.len();
    let missing = coord.fetch_remote(plan, &store).await;
    let unreachable: Vec<String> = missing.iter().map(|n| n.name.clone()).collect();
    assert!(unreachable.is_empty(), "{unreachable:?}");
    assert!(
        coord.stats().not_here.get() > 0,
        "some nodes were not b's in b's view"
    );
    assert_eq!(store.tracked_nodes(), remote);
    b.stop.cancel();
    c_peer.stop.cancel();
}
