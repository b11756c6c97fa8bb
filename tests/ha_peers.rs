//! The peer exchange end to end on loopback: a replica's shard is served only to a peer that
//! presents the right token over a connection to the pinned certificate; a peer that hangs or
//! answers garbage costs a bounded wait and its nodes are handed back for a direct scrape,
//! never ingested.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kubedojo_data_api::cluster::NodeInfo;
use kubedojo_data_api::ha::coordinator::{Coordinator, Plan};
use kubedojo_data_api::ha::membership::{Member, MemberSet, Membership};
use kubedojo_data_api::ha::peer::{self, PeerClient, PeerError, PeerIdentity, PeerToken};
use kubedojo_data_api::ha::peer_auth::SharedSecret;
use kubedojo_data_api::ha::rendezvous;
use kubedojo_data_api::ha::shard::OwnShard;
use kubedojo_data_api::ha::wire::NodeFrame;
use kubedojo_data_api::store::batch::{ContainerPoint, MetricsPoint, NodeBatch, PodPoints};
use kubedojo_data_api::store::{Store, StoreConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "peer-secret-0123456789";

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

struct Peer {
    member: Member,
    shard: Arc<OwnShard>,
    stop: CancellationToken,
}

async fn start_peer(id: &str) -> Peer {
    common::crypto();
    let identity = PeerIdentity::generate().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shard = Arc::new(OwnShard::new());
    let stop = CancellationToken::new();
    tokio::spawn(peer::serve(
        listener,
        identity.clone(),
        Arc::new(SharedSecret(SECRET.into())),
        shard.clone(),
        stop.clone(),
    ));
    Peer {
        member: Member {
            id: id.into(),
            address: addr.to_string(),
            cert_sha256: identity.cert_sha256,
        },
        shard,
        stop,
    }
}

fn client(token: &str) -> PeerClient {
    PeerClient::new(
        PeerToken::Fixed(token.into()),
        Duration::from_millis(800),
        1 << 20,
    )
}

#[tokio::test]
async fn the_right_token_to_the_pinned_certificate_gets_the_shard() {
    let p = start_peer("replica-b").await;
    p.shard
        .record("node-1", Ok(&batch("node-1", 1_000_000, 5_000)));
    p.shard.record("node-2", Err(()));
    let (frames, bytes) = client(SECRET).fetch(&p.member).await.unwrap();
    assert!(bytes > 0);
    let mut frames = frames;
    frames.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        frames,
        vec![
            (
                "node-1".to_string(),
                NodeFrame::Ok(batch("node-1", 1_000_000, 5_000))
            ),
            ("node-2".to_string(), NodeFrame::Failed),
        ]
    );
    p.stop.cancel();
}

#[tokio::test]
async fn anonymous_and_wrong_tokens_are_refused() {
    let p = start_peer("replica-b").await;
    p.shard
        .record("node-1", Ok(&batch("node-1", 1_000_000, 5_000)));
    // A wrong token: 401, no data.
    match client("not-the-secret").fetch(&p.member).await {
        Err(PeerError::Status(401)) => {}
        other => panic!("wrong token: {other:?}"),
    }
    // Anonymous: a plain HTTPS client that accepts the certificate but sends no token.
    let anon = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let url = format!("https://{}{}", p.member.address, peer::SHARD_PATH);
    let resp = anon.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body = resp.bytes().await.unwrap();
    assert!(
        !body.starts_with(b"KDS1"),
        "no shard bytes to an anonymous client"
    );
    // A token that is not a bearer token, and an empty one.
    let resp = anon
        .get(&url)
        .header("authorization", format!("Basic {SECRET}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = anon
        .get(&url)
        .header("authorization", "Bearer ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // The right token is accepted by the same server (the refusals were not a broken server).
    let resp = anon.get(&url).bearer_auth(SECRET).send().await.unwrap();
    assert_eq!(resp.status(), 200);
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
    match client(SECRET).fetch(&wrong).await {
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
                    "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.kubedojo.shard.v1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
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
    let r = client(SECRET).fetch(&m).await;
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
        client(SECRET).fetch(&m).await,
        Err(PeerError::Wire(_))
    ));
    task.abort();
    // A valid start followed by a truncated frame: also nothing.
    let (m, task) = garbage_peer(b"KDS1\x02\x06node-1\x01\x01\x00").await;
    assert!(matches!(
        client(SECRET).fetch(&m).await,
        Err(PeerError::Wire(_))
    ));
    task.abort();
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

#[tokio::test]
async fn nodes_of_a_good_peer_are_ingested_and_those_of_a_hung_or_garbage_one_come_back() {
    let good = start_peer("good").await;
    let (hung, hung_task) = hanging_peer().await;
    let (bad, bad_task) = garbage_peer(b"KDS1\x01garbage").await;
    let members = vec![good.member.clone(), hung.clone(), bad.clone()];
    let ids: Vec<String> = {
        let mut v: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
        v.push("me".into());
        v.sort();
        v
    };
    let all = nodes(120);
    let owner = |n: &str| rendezvous::owners(&ids, n, 1)[0].to_string();
    // The good peer serves two readings (so the store can rate them) of each node it owns.
    for n in all.iter().filter(|n| owner(&n.name) == "good") {
        good.shard
            .record(&n.name, Ok(&batch(&n.name, 1_000_000, 1_000_000_000)));
    }
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
    // Second round with a later reading: the good peer's nodes get rates; nothing of the
    // garbage peer's ever reached the store.
    for n in all.iter().filter(|n| owner(&n.name) == "good") {
        good.shard
            .record(&n.name, Ok(&batch(&n.name, 1_010_000, 2_000_000_000)));
    }
    let plan = c.plan(all.clone());
    let _ = c.fetch_remote(plan, &store).await;
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
    good.stop.cancel();
    hung_task.abort();
    bad_task.abort();
}

#[tokio::test]
async fn with_r2_a_dead_first_owner_is_covered_by_the_second() {
    let b = start_peer("b").await;
    let c_peer = start_peer("c").await;
    let members = vec![b.member.clone(), c_peer.member.clone()];
    let ids = vec!["b".to_string(), "c".to_string(), "me".to_string()];
    let all = nodes(60);
    for n in &all {
        let o = rendezvous::owners(&ids, &n.name, 2);
        if o.contains(&"b") {
            b.shard
                .record(&n.name, Ok(&batch(&n.name, 1_000_000, 1_000)));
        }
        if o.contains(&"c") {
            c_peer
                .shard
                .record(&n.name, Ok(&batch(&n.name, 1_000_000, 1_000)));
        }
    }
    b.stop.cancel(); // b is gone (its listener stops; connections are refused or reset).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let coord = coordinator(&members, 2);
    let store = Store::new(StoreConfig::new(Duration::from_secs(1)));
    let plan = coord.plan(all.clone());
    // With 3 members and R = 2, "me" owns about two thirds; the rest are owned by b and c.
    let remote: Vec<String> = plan.remote.iter().map(|n| n.name.clone()).collect();
    assert!(!remote.is_empty());
    let missing = coord.fetch_remote(plan, &store).await;
    assert!(missing.is_empty(), "c has every node b had: {missing:?}");
    let snap = store.publish(1_000_500);
    assert_eq!(snap.tracked_node_count(), remote.len());
    c_peer.stop.cancel();
}
