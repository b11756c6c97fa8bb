//! `--tls-sni-cert-key` through real TLS and HTTP: a client that trusts only one
//! certificate's CA reaches the server under a name only if SNI selected that
//! certificate; no SNI match falls back to the default certificate; names given in the
//! flag override the certificate's own; and a certificate rewritten on disk is served to
//! new connections without a restart.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kubedojo_data_api::auth::AuthChain;
use kubedojo_data_api::runtime::{AppParts, build_app, load_records};
use kubedojo_data_api::server::pki::{CertificateAuthority, PemPair};
use kubedojo_data_api::server::sni::{NamedCertKey, SniResolver};
use kubedojo_data_api::server::tls::{CertFiles, MinTlsVersion, ReloadingCert, server_config};
use tokio_util::sync::CancellationToken;

fn write_pair(dir: &Path, stem: &str, pair: &PemPair, ca: &CertificateAuthority) -> CertFiles {
    let files = CertFiles {
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
    };
    std::fs::write(&files.cert, format!("{}{}", pair.cert_pem, ca.cert_pem)).unwrap();
    std::fs::write(&files.key, &pair.key_pem).unwrap();
    files
}

/// Moves both files' modification time forward, so a rewrite within the file system's
/// timestamp granularity is still seen as a change.
fn touch_later(files: &CertFiles) {
    let later = SystemTime::now() + Duration::from_secs(5);
    for p in [&files.cert, &files.key] {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(later)
            .unwrap();
    }
}

fn sans(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

struct Server {
    addr: SocketAddr,
    resolver: Arc<SniResolver>,
    shutdown: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn serve(default: CertFiles, sni: &[NamedCertKey]) -> Server {
    common::crypto();
    let resolver = SniResolver::new(ReloadingCert::new(default).unwrap(), sni).unwrap();
    let tls = server_config(resolver.clone(), None, MinTlsVersion::Tls12).unwrap();
    // No authenticator: every request is answered 401 Unauthorized, which is enough to
    // show a full HTTP exchange over the negotiated TLS session.
    let records = load_records(None, None).await.unwrap();
    let app = Arc::new(build_app(AppParts::new(
        records,
        AuthChain::new(vec![], vec![], false),
    )));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(kubedojo_data_api::server::serve(
        listener,
        Arc::new(tls),
        app,
        shutdown.clone(),
    ));
    Server {
        addr,
        resolver,
        shutdown,
    }
}

/// GET `https://<host>:<port>/apis` trusting only `ca`, with `host` resolved to the
/// server: Ok(HTTP status) when the handshake verified, Err(why) otherwise.
async fn get_as(server: &Server, host: &str, ca: &CertificateAuthority) -> Result<u16, String> {
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).unwrap()])
        .resolve(host, server.addr)
        .build()
        .unwrap();
    let url = format!("https://{host}:{}/apis", server.addr.port());
    match client.get(url).send().await {
        Ok(resp) => Ok(resp.status().as_u16()),
        Err(e) => Err(format!("{e:?}")),
    }
}

#[tokio::test]
async fn sni_selects_by_certificate_names_flag_names_and_falls_back_to_default() {
    let dir = tempfile::tempdir().unwrap();
    let default_ca = CertificateAuthority::new("default-ca").unwrap();
    let a_ca = CertificateAuthority::new("a-ca").unwrap();
    let b_ca = CertificateAuthority::new("b-ca").unwrap();
    let default = default_ca
        .serving_cert("kubedojo-data-api", &sans(&["localhost", "127.0.0.1"]))
        .unwrap();
    let default = write_pair(dir.path(), "default", &default, &default_ca);
    // A: served for its own names (CN, DNS SANs, a wildcard SAN).
    let a = a_ca
        .serving_cert(
            "cn-a.example.com",
            &sans(&["a.example.com", "*.wild.example.com"]),
        )
        .unwrap();
    let a = write_pair(dir.path(), "a", &a, &a_ca);
    // B: served only for the names in the flag, one of which A also carries.
    let b = b_ca
        .serving_cert(
            "b",
            &sans(&["b.example.com", "a.example.com", "b-own.example.com"]),
        )
        .unwrap();
    let b = write_pair(dir.path(), "b", &b, &b_ca);
    let flag = |f: &CertFiles, names: &str| -> NamedCertKey {
        let value = format!("{},{}{names}", f.cert.display(), f.key.display());
        value.parse().unwrap()
    };
    let server = serve(
        default,
        &[flag(&a, ""), flag(&b, ":b.example.com, a.example.com")],
    )
    .await;

    // Default certificate: no SNI name matches (and `localhost`).
    assert_eq!(get_as(&server, "localhost", &default_ca).await, Ok(401));
    let unmatched = get_as(&server, "other.example.com", &a_ca).await;
    assert!(unmatched.is_err(), "{unmatched:?}");
    // A's wildcard SAN, matched as Go does (first label replaced by `*`).
    assert_eq!(get_as(&server, "x.wild.example.com", &a_ca).await, Ok(401));
    let deeper = get_as(&server, "y.x.wild.example.com", &a_ca).await;
    assert!(deeper.is_err(), "a wildcard covers one label: {deeper:?}");
    // A's CN is one of its names (a TLS client would not accept a CN-only name, so this
    // is checked on the resolver).
    let a_key = ReloadingCert::new(a.clone()).unwrap().current();
    assert_eq!(
        server.resolver.select(Some("CN-A.example.com")).cert,
        a_key.cert
    );
    // Names in the flag override the names A carries; B's own other names are not served.
    assert_eq!(get_as(&server, "a.example.com", &b_ca).await, Ok(401));
    let overridden = get_as(&server, "a.example.com", &a_ca).await;
    assert!(overridden.is_err(), "{overridden:?}");
    assert_eq!(get_as(&server, "b.example.com", &b_ca).await, Ok(401));
    let b_own = get_as(&server, "b-own.example.com", &b_ca).await;
    assert!(b_own.is_err(), "{b_own:?}");
    assert_eq!(
        server.resolver.names(),
        vec![
            "*.wild.example.com",
            "a.example.com",
            "b.example.com",
            "cn-a.example.com"
        ]
    );
}

#[tokio::test]
async fn sni_certificate_rewritten_on_disk_is_served_to_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let default_ca = CertificateAuthority::new("default-ca").unwrap();
    let old_ca = CertificateAuthority::new("old-ca").unwrap();
    let new_ca = CertificateAuthority::new("new-ca").unwrap();
    let default = default_ca
        .serving_cert("kubedojo-data-api", &sans(&["localhost"]))
        .unwrap();
    let default = write_pair(dir.path(), "default", &default, &default_ca);
    let old = old_ca
        .serving_cert("old", &sans(&["sni.example.com"]))
        .unwrap();
    let files = write_pair(dir.path(), "sni", &old, &old_ca);
    let value = format!("{},{}", files.cert.display(), files.key.display());
    let server = serve(default, &[value.parse().unwrap()]).await;
    tokio::spawn(server.resolver.clone().watch(Duration::from_millis(100)));
    assert_eq!(get_as(&server, "sni.example.com", &old_ca).await, Ok(401));
    assert!(get_as(&server, "new.example.com", &new_ca).await.is_err());

    // A renewal: new CA, the old name and a new one.
    let renewed = new_ca
        .serving_cert("new", &sans(&["sni.example.com", "new.example.com"]))
        .unwrap();
    write_pair(dir.path(), "sni", &renewed, &new_ca);
    touch_later(&files);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if get_as(&server, "new.example.com", &new_ca).await == Ok(401) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rewritten SNI certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get_as(&server, "sni.example.com", &new_ca).await, Ok(401));
    assert!(get_as(&server, "sni.example.com", &old_ca).await.is_err());
}

#[test]
fn flag_is_repeatable_and_bad_values_are_readable_errors() {
    use clap::Parser;
    use kubedojo_data_api::config::Cli;
    let cli = Cli::try_parse_from([
        "kubedojo-data-api",
        "--tls-sni-cert-key",
        "a.crt,a.key:a.example.com",
        "--tls-sni-cert-key=b.crt,b.key",
    ])
    .unwrap();
    let sni = format!("{cli:?}");
    assert!(
        sni.contains("a.example.com") && sni.contains("b.crt"),
        "{sni}"
    );
    let e = Cli::try_parse_from(["kubedojo-data-api", "--tls-sni-cert-key=a.crt"]).unwrap_err();
    let e = e.to_string();
    assert!(
        e.contains("--tls-sni-cert-key")
            && e.contains("expected comma separated certificate and key file paths"),
        "{e}"
    );
}
