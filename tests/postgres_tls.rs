//! TLS between our server and PostgreSQL: a server started by the test with `ssl=on`
//! and a certificate from a CA the test makes; `--postgres-tls-mode=verify-full`
//! with that CA connects (and the session really is TLS), a different CA or a host
//! name the certificate does not name is refused.

mod common;

use std::time::Duration;

use clap::Parser;
use kubedojo_data_api::config::PostgresArgs;
use kubedojo_data_api::groups::records::DATARECORDS;
use kubedojo_data_api::records::postgres::{TableSourceConfig, TlsMode, start_table};
use kubedojo_data_api::server::pki::CertificateAuthority;

use common::pg_app::{ALL, connection, names, ns_path, server_on};
use common::postgres::TestPostgres;

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    postgres: PostgresArgs,
}

struct Setup {
    pg: TestPostgres,
    dir: tempfile::TempDir,
}

fn setup() -> Setup {
    common::crypto();
    let ca = CertificateAuthority::new("test postgres CA").unwrap();
    let cert = ca
        .serving_cert("localhost", &["localhost".to_string()])
        .unwrap();
    let pg = TestPostgres::start_tls(&cert.cert_pem, &cert.key_pem);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.crt"), &ca.cert_pem).unwrap();
    let other = CertificateAuthority::new("another CA").unwrap();
    std::fs::write(dir.path().join("other-ca.crt"), &other.cert_pem).unwrap();
    Setup { pg, dir }
}

/// Sessions of our server that use TLS, as PostgreSQL reports them.
/// (Each test has its own PostgreSQL server.)
fn tls_sessions(pg: &TestPostgres) -> u64 {
    pg.psql(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE s.ssl AND a.application_name LIKE 'kubedojo-data-api%'",
    )
    .parse()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_right_ca_serves_and_a_wrong_ca_is_refused() {
    let Setup { pg, dir } = setup();

    // The right CA: migrate, serve, watch; every session is TLS.
    let mut conn = connection(pg.tcp_dsn("localhost"));
    conn.tls = TlsMode::VerifyFull;
    conn.ca_file = Some(dir.path().join("ca.crt"));
    let s = server_on(conn.clone(), "t_tls").await;
    pg.psql("INSERT INTO t_tls.datarecords (namespace, name) VALUES ('tls', 'one')");
    let (code, list, _) = s.get(&ns_path("tls")).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(names(&list), ["tls/one"]);
    assert!(tls_sessions(&pg) >= 2, "the pool and the listener use TLS");
    let plain: u64 = pg
        .psql(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE NOT s.ssl AND a.application_name LIKE 'kubedojo-data-api%'",
        )
        .parse()
        .unwrap();
    assert_eq!(plain, 0, "no plain session");

    // Another CA: migration fails naming the certificate; without migration the
    // server starts and answers 503 (it never pretends an empty list).
    let mut wrong = conn.clone();
    wrong.ca_file = Some(dir.path().join("other-ca.crt"));
    let err = start_table(&wrong, &TableSourceConfig::new("t_tls"), true, &DATARECORDS)
        .await
        .err()
        .expect("a certificate from another CA is refused");
    let msg = format!("{err:#}");
    eprintln!("another CA: {msg}");
    assert!(msg.contains("UnknownIssuer"), "the error says why: {msg}");
    let running = start_table(
        &wrong,
        &TableSourceConfig::new("t_tls"),
        false,
        &DATARECORDS,
    )
    .await
    .unwrap();
    let app = {
        let records = std::sync::Arc::new(kubedojo_data_api::records::RecordSet::new(vec![]));
        let mut parts =
            kubedojo_data_api::runtime::AppParts::new(records, common::pg_app::allow_all());
        parts.records_backend = Some(running.backend.clone());
        kubedojo_data_api::runtime::build_app(parts)
    };
    let (code, e, headers) = common::pg_app::get_json(&app, ALL).await;
    assert_eq!(code, 503, "{e}");
    assert_eq!(e["reason"], "ServiceUnavailable");
    assert!(headers.contains_key("retry-after"));
    assert!(
        e["message"].as_str().unwrap().contains("certificate"),
        "the message says why: {e}"
    );

    // The right CA, but a host name the certificate does not name.
    let mut by_ip = conn.clone();
    by_ip.dsn = pg.tcp_dsn("127.0.0.1");
    let err = start_table(&by_ip, &TableSourceConfig::new("t_tls"), true, &DATARECORDS)
        .await
        .err()
        .expect("a certificate for another name is refused");
    eprintln!("another name: {err:#}");
    assert!(
        format!("{err:#}").contains("not valid for name"),
        "the error says why: {err:#}"
    );

    // require: encrypted without verification, so another CA is fine.
    let mut require = wrong.clone();
    require.tls = TlsMode::Require;
    require.ca_file = None;
    start_table(
        &require,
        &TableSourceConfig::new("t_tls"),
        true,
        &DATARECORDS,
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_tls_flags_reach_the_connection() {
    let Setup { pg, dir } = setup();
    let dsn_file = dir.path().join("dsn");
    std::fs::write(&dsn_file, pg.tcp_dsn("localhost")).unwrap();
    let flags = |ca: &str| {
        Flags::try_parse_from([
            "test".to_string(),
            format!("--postgres-dsn-file={}", dsn_file.display()),
            "--postgres-schema=t_flags".to_string(),
            "--postgres-migrate".to_string(),
            "--postgres-tls-mode=verify-full".to_string(),
            format!("--postgres-ca-file={}", dir.path().join(ca).display()),
            "--postgres-connect-timeout=2s".to_string(),
        ])
        .unwrap()
        .postgres
    };
    let running = kubedojo_data_api::runtime::start_postgres(&flags("ca.crt"), None)
        .await
        .unwrap()
        .expect("a DSN file starts the table source");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !running.feed.subscribe().up {
        assert!(std::time::Instant::now() < deadline, "feed did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(tls_sessions(&pg) >= 1);
    let err = kubedojo_data_api::runtime::start_postgres(&flags("other-ca.crt"), None)
        .await
        .err()
        .expect("another CA is refused at start-up with --postgres-migrate");
    assert!(format!("{err:#}").contains("certificate"), "{err:#}");
    // A mode that does not exist is a flag error, not a silent plain connection.
    assert!(Flags::try_parse_from(["test", "--postgres-tls-mode=verify-ful"]).is_err());
}
