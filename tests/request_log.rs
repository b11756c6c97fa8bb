//! The request log carries the user and groups, never a token or a certificate.
//! Its own test binary: a thread-local tracing subscriber is only reliable when no
//! other test registers callsites concurrently.

mod common;

use std::sync::{Arc, Mutex};

use common::harness::{Harness, aggregator_headers};

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn request_log_has_user_and_groups_but_no_token() {
    let logs = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let h = Harness::start().await;
    h.fake
        .add_token("s3cr3t-token-value", "logan", &["auditors"]);
    h.fake.allow("logan");
    h.fake.allow("alice");
    let c = h.client(None);
    h.whoami(&c, &[("Authorization", "Bearer s3cr3t-token-value")])
        .await;
    let (code, _) = h
        .get(
            &c,
            "/whoami",
            &[("Authorization", "Bearer wrong-t0ken-value")],
        )
        .await;
    assert_eq!(code, 401);
    let proxy = h.client(Some(&h.proxy_cert()));
    h.whoami(&proxy, &aggregator_headers()).await;
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("kubedojo::request"))
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].contains("user=\"logan\"") || lines[0].contains("user=logan"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("auditors,system:authenticated"),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("status=401"), "{}", lines[1]);
    assert!(
        lines[2].contains("alice") && lines[2].contains("team-a,team-b"),
        "{}",
        lines[2]
    );
    for secret in [
        "s3cr3t-token-value",
        "wrong-t0ken-value",
        "should-be-stripped",
        "BEGIN CERTIFICATE",
    ] {
        assert!(
            !text.contains(secret),
            "{secret} leaked into the log:\n{text}"
        );
    }
}
