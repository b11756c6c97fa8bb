//! The server's limits against misbehaving clients (issue 13 §3, §4): slowloris,
//! idle HTTP/2 floods, a panicking handler (a test-only route compiled only here),
//! slow handlers, too many requests, oversized headers, watches that outlive their
//! client, and the shutdown sequence. Each test runs the real demo server on loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{Cli, Command};
use crate::demo::{self, DemoServer};

struct T {
    server: DemoServer,
    _dir: tempfile::TempDir,
}

async fn start(flags: &[&str]) -> T {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let kc = format!("--write-kubeconfig={}", dir.path().join("kc").display());
    let mut argv = vec![
        "bin",
        "demo",
        "--secure-port=0",
        "--nodes=1",
        "--pods-per-node=1",
        "--metric-resolution=1s",
        "--token=t",
        kc.as_str(),
    ];
    argv.extend_from_slice(flags);
    let cli = Cli::try_parse_from(argv).unwrap();
    let Some(Command::Demo(args)) = cli.command else {
        unreachable!()
    };
    let server = demo::start(&args).await.unwrap();
    T { server, _dir: dir }
}

impl T {
    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.server.addr.port())
    }

    fn client(&self, h1: bool) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .tls_certs_only([
                reqwest::Certificate::from_pem(self.server.ca_pem.as_bytes()).unwrap(),
            ]);
        if h1 {
            b = b.http1_only();
        }
        b.build().unwrap()
    }

    async fn get(&self, c: &reqwest::Client, path: &str) -> (u16, String, http::HeaderMap) {
        let r = c.get(self.url(path)).bearer_auth("t").send().await.unwrap();
        let code = r.status().as_u16();
        let h = r.headers().clone();
        (code, r.text().await.unwrap(), h)
    }

    /// A raw TLS stream with the given ALPN protocol.
    async fn tls(&self, alpn: &[u8]) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(self.server.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let tcp = tokio::net::TcpStream::connect(self.server.addr)
            .await
            .unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap()
    }

    /// One HTTP/2 connection (the aggregator's situation: many users, one connection).
    async fn h2(
        &self,
    ) -> (
        hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
        tokio::task::JoinHandle<()>,
    ) {
        let io = self.tls(b"h2").await;
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .unwrap();
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        (send, task)
    }
}

use rustls_pki_types::pem::PemObject;

fn h2_get(path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(format!("https://localhost{path}"))
        .header("authorization", "Bearer t")
        .body(Empty::new())
        .unwrap()
}

async fn h2_text(
    send: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    path: &str,
) -> (u16, String) {
    send.ready().await.unwrap();
    let resp = send.send_request(h2_get(path)).await.unwrap();
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (code, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_panicking_request_is_a_500_and_its_h2_connection_and_other_streams_survive() {
    let t = start(&[]).await;
    let (mut send, conn) = t.h2().await;
    // A watch on the same connection, open across the panic.
    send.ready().await.unwrap();
    let watch = send
        .send_request(h2_get(
            "/apis/data.kubedojo.io/v1alpha1/datarecords?watch=1&timeoutSeconds=3",
        ))
        .await
        .unwrap();
    assert_eq!(watch.status(), 200);
    let mut watch = watch.into_body();
    let (code, body) = h2_text(&mut send, "/debug/test/panic").await;
    assert_eq!(code, 500, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status["kind"].as_str(), status["reason"].as_str()),
        (Some("Status"), Some("InternalError"))
    );
    // The same connection still serves, and the watch still streams and ends cleanly.
    assert_eq!(h2_text(&mut send, "/apis").await.0, 200);
    let mut events = 0;
    while let Some(frame) = watch.frame().await {
        let frame = frame.expect("the watch stream ends cleanly, not reset");
        if let Some(d) = frame.data_ref() {
            events += d.iter().filter(|b| **b == b'\n').count();
        }
    }
    assert!(
        events >= 3,
        "the seed records (and computed ones): {events}"
    );
    assert!(!conn.is_finished());
    // HTTP/1.1: the 500 too, and the connection is reused afterwards.
    let c = t.client(true);
    assert_eq!(t.get(&c, "/debug/test/panic").await.0, 500);
    assert_eq!(t.get(&c, "/apis").await.0, 200);
}

#[tokio::test]
async fn a_slow_request_is_a_504_timeout_status() {
    let t = start(&["--request-timeout=1s"]).await;
    let c = t.client(false);
    let started = Instant::now();
    let (code, body, _) = t.get(&c, "/debug/test/sleep?ms=5000").await;
    assert_eq!(code, 504, "{body}");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(
        body,
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Timeout: request did not complete within the allotted timeout","reason":"Timeout","details":{},"code":504}"#
    );
    // A watch is long-running: not cut at the request timeout.
    let (code, _, _) = t
        .get(
            &c,
            "/apis/data.kubedojo.io/v1alpha1/datarecords?watch=1&timeoutSeconds=2",
        )
        .await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn beyond_max_requests_inflight_is_429_with_retry_after() {
    let t = start(&["--max-requests-inflight=1"]).await;
    let c = t.client(false);
    let busy = {
        let c = c.clone();
        let url = t.url("/debug/test/sleep?ms=1500");
        tokio::spawn(async move { c.get(url).bearer_auth("t").send().await.unwrap().status() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, body, headers) = t.get(&c, "/apis").await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(headers["retry-after"], "1");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(status["details"]["retryAfterSeconds"], 1);
    // Probes and watches are exempt.
    assert_eq!(t.get(&c, "/livez").await.0, 200);
    assert_eq!(
        t.get(
            &c,
            "/apis/data.kubedojo.io/v1alpha1/datarecords?watch=1&timeoutSeconds=1"
        )
        .await
        .0,
        200
    );
    assert_eq!(busy.await.unwrap(), 200);
    assert_eq!(t.get(&c, "/apis").await.0, 200);
}

#[tokio::test]
async fn slowloris_is_disconnected_at_the_header_timeout() {
    let t = start(&["--read-header-timeout=1s"]).await;
    let mut io = t.tls(b"http/1.1").await;
    io.write_all(b"GET /apis HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut closed = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if io.write_all(b"X").await.is_err() || io.flush().await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(1), io.read(&mut buf)).await {
            // EOF, an error, or the server's 408 before closing.
            let _ = r;
            closed = true;
            break;
        }
    }
    assert!(closed, "the dripping client is still connected");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn idle_h2_connections_are_closed_and_free_the_connection_cap() {
    let t = start(&["--idle-connection-timeout=1s", "--max-connections=4"]).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(t.h2().await);
    }
    // A fifth client waits for a slot, which the idle timeout frees.
    let started = Instant::now();
    let c = t.client(false);
    let (code, _, _) = tokio::time::timeout(Duration::from_secs(10), t.get(&c, "/apis"))
        .await
        .expect("served once idle connections are closed");
    assert_eq!(code, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    for (_, conn) in idle {
        tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("the server closed the idle connection")
            .unwrap();
    }
    // A connection with a long request in flight is not idle.
    let (mut send, conn) = t.h2().await;
    let (code, _) = h2_text(&mut send, "/debug/test/sleep?ms=2500").await;
    assert_eq!(code, 200);
    assert!(!conn.is_finished());
}

#[tokio::test]
async fn http2_max_streams_is_enforced() {
    let t = start(&["--http2-max-streams-per-connection=2"]).await;
    let (mut send, _conn) = t.h2().await;
    // One request first, so the client has the server's SETTINGS.
    assert_eq!(h2_text(&mut send, "/apis").await.0, 200);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut s = send.clone();
        tasks.push(tokio::spawn(async move {
            h2_text(&mut s, "/debug/test/sleep?ms=700").await.0
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    // Four 0.7 s requests, two at a time: two rounds.
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_oversized_header_is_refused() {
    let t = start(&[]).await;
    let c = t.client(true);
    let big = "x".repeat(2 << 20);
    let r = c
        .get(t.url("/apis"))
        .bearer_auth("t")
        .header("x-big", big)
        .send()
        .await;
    match r {
        Ok(resp) => assert_eq!(resp.status(), 431),
        Err(e) => assert!(e.is_request() || e.is_connect() || e.is_body(), "{e}"),
    }
    let small = "x".repeat(100 << 10);
    let r = c
        .get(t.url("/apis"))
        .bearer_auth("t")
        .header("x-big", small)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_watch_whose_client_stops_reading_ends_at_its_timeout() {
    // Enough records that the initial events fill every buffer between us and a client
    // that never reads.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("records.yaml");
    let mut yaml = String::new();
    for i in 0..20_000 {
        yaml.push_str(&format!(
            "- metadata: {{name: r{i:05}, namespace: default}}\n  spec: {{source: s, data: {{pad: \"{}\"}}}}\n",
            "p".repeat(200)
        ));
    }
    std::fs::write(&file, yaml).unwrap();
    let flag = format!("--records-file={}", file.display());
    let t = start(&[flag.as_str()]).await;
    let mut io = t.tls(b"http/1.1").await;
    io.write_all(
        b"GET /apis/data.kubedojo.io/v1alpha1/datarecords?watch=1&timeoutSeconds=1 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer t\r\n\r\n",
    )
    .await
    .unwrap();
    // Not reading for 3 s, well past the timeout.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut all = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    all.extend_from_slice(&buf[..n]);
                    if all.ends_with(b"\r\n0\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the stream did not end");
    assert!(
        all.ends_with(b"\r\n0\r\n\r\n"),
        "ends with the last chunk, cleanly"
    );
    let events = all.windows(9).filter(|w| w == b"{\"type\":\"").count();
    assert!(
        events < 20_000,
        "the stream went on past its deadline: {events} events"
    );
}

#[tokio::test]
async fn sigterm_sequence_fails_readiness_serves_through_the_delay_then_drains() {
    let t = start(&["--shutdown-delay-duration=1500ms"]).await;
    let c = t.client(false);
    let ready_by = Instant::now() + Duration::from_secs(15);
    while t.get(&c, "/readyz").await.0 != 200 {
        assert!(Instant::now() < ready_by, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let watch = c
        .get(t.url("/apis/data.kubedojo.io/v1alpha1/datarecords?watch=1"))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status(), 200);
    let watch_body = tokio::spawn(async move { watch.text().await });
    let server = Arc::new(t);
    let s = server.clone();
    let started = Instant::now();
    let terminate = tokio::spawn(async move { s.server.terminate().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, body, _) = server.get(&c, "/readyz?verbose").await;
    assert_eq!(code, 500);
    assert!(body.contains("[-]shutdown failed"), "{body}");
    assert_eq!(server.get(&c, "/livez").await.0, 200);
    // Still serving during the delay, new connections included.
    assert_eq!(server.get(&server.client(true), "/apis").await.0, 200);
    terminate.await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1500));
    // The watch ends cleanly (end of stream, no error) and the server drains.
    let text = tokio::time::timeout(Duration::from_secs(5), watch_body)
        .await
        .expect("the watch ends at shutdown")
        .unwrap()
        .expect("cleanly");
    assert!(text.lines().count() >= 3, "{text}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.server.finished() {
        assert!(Instant::now() < deadline, "the server did not drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        tokio::net::TcpStream::connect(server.server.addr)
            .await
            .is_err()
    );
}
