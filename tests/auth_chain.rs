//! The authentication and authorization chain over real TLS: front proxy, client
//! certificates, TokenReview, SubjectAccessReview (against a kube-apiserver test
//! double), ConfigMap CA rotation and serving-certificate rotation.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::fake_apiserver::FakeApiServer;
use common::harness::{DR_LIST, Harness, Options, UNAUTHORIZED, aggregator_headers, configmap};
use kubedojo_data_api::auth::delegated::{Tuning, start_with_clients};
use kubedojo_data_api::auth::options::{CertAuthArgs, DelegationArgs};
use kubedojo_data_api::auth::{AlwaysAllowPaths, AuthChain};
use kubedojo_data_api::runtime::{AppParts, build_app, load_records};
use kubedojo_data_api::server::pki::CertificateAuthority;
use kubedojo_data_api::server::tls::{CertFiles, MinTlsVersion, ReloadingCert, server_config};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn front_proxy_identity_is_what_the_handler_sees() {
    let h = Harness::start().await;
    h.fake.allow("alice");
    let client = h.client(Some(&h.proxy_cert()));
    let who = h.whoami(&client, &aggregator_headers()).await;
    assert_eq!(who["name"], "alice");
    assert_eq!(who["uid"], "alice-uid");
    assert_eq!(
        who["groups"],
        json!(["team-a", "team-b", "system:authenticated"])
    );
    assert_eq!(
        who["extra"],
        json!({"authentication.kubernetes.io/credential-id": ["JTI=abc"], "scopes": ["s1"]})
    );
    let headers = who["headers"].as_object().unwrap();
    for k in headers.keys() {
        assert!(
            !k.starts_with("x-remote-") && k != "authorization",
            "{k} reached the handler"
        );
    }
    // The valid front proxy's identity wins over the bearer token: no TokenReview.
    assert_eq!(h.fake.token_review_count(), 0);
    let sar = &h.fake.sars()[0];
    assert_eq!(sar["user"], "alice");
    assert_eq!(sar["uid"], "alice-uid");
    assert_eq!(sar["extra"]["scopes"], json!(["s1"]));
}

#[tokio::test]
async fn front_proxy_without_user_header_falls_through() {
    let h = Harness::start().await;
    h.fake.add_token("good-token", "tina", &[]);
    h.fake.allow("tina");
    let client = h.client(Some(&h.proxy_cert()));
    // Next authenticators decide: a valid bearer token wins...
    let who = h
        .whoami(
            &client,
            &[
                ("X-Remote-Group", "system:masters"),
                ("Authorization", "Bearer good-token"),
            ],
        )
        .await;
    assert_eq!(who["name"], "tina");
    assert_eq!(who["groups"], json!(["system:authenticated"]));
    // ...and without one, the proxy certificate is not a client-CA certificate: 401,
    // as upstream's union of requestheader and x509 authenticators.
    let (code, body) = h
        .get(&client, "/whoami", &[("X-Remote-Group", "system:masters")])
        .await;
    assert_eq!((code, body.as_str()), (401, UNAUTHORIZED));
}

#[tokio::test]
async fn proxy_certificate_from_another_ca_is_401() {
    let h = Harness::start().await;
    let impostor = h
        .pki
        .other_ca
        .client_cert("front-proxy-client", &[])
        .unwrap();
    let client = h.client(Some(&impostor));
    let (code, body) = h.get(&client, "/whoami", &aggregator_headers()).await;
    assert_eq!((code, body.as_str()), (401, UNAUTHORIZED));
    assert!(h.fake.sars().is_empty());
}

#[tokio::test]
async fn proxy_cn_not_in_allowed_names_is_401() {
    let h = Harness::start().await;
    let wrong = h
        .pki
        .front_proxy_ca
        .client_cert("not-the-proxy", &[])
        .unwrap();
    let client = h.client(Some(&wrong));
    let (code, body) = h.get(&client, "/whoami", &aggregator_headers()).await;
    assert_eq!((code, body.as_str()), (401, UNAUTHORIZED));
}

#[tokio::test]
async fn identity_headers_from_others_are_ignored() {
    let h = Harness::start().await;
    h.fake.allow("system:anonymous");
    h.fake.allow("bob");
    let spoof = [
        ("X-Remote-User", "admin"),
        ("X-Remote-Group", "system:masters"),
    ];
    // No certificate: anonymous.
    let who = h.whoami(&h.client(None), &spoof).await;
    assert_eq!(who["name"], "system:anonymous");
    assert!(who["headers"].get("x-remote-user").is_none());
    // A client-CA certificate: its own user, headers ignored (and stripped).
    let bob = h.pki.client_ca.client_cert("bob", &["dev"]).unwrap();
    let who = h.whoami(&h.client(Some(&bob)), &spoof).await;
    assert_eq!(who["name"], "bob");
    assert_eq!(who["groups"], json!(["dev", "system:authenticated"]));
    assert!(
        who["extra"]["authentication.kubernetes.io/credential-id"][0]
            .as_str()
            .unwrap()
            .starts_with("X509SHA256=")
    );
    assert!(who["headers"].get("x-remote-group").is_none());
    // A client-CA certificate with the proxy's CN is still not the proxy.
    let fake_proxy = h
        .pki
        .client_ca
        .client_cert("front-proxy-client", &[])
        .unwrap();
    h.fake.allow("front-proxy-client");
    let who = h.whoami(&h.client(Some(&fake_proxy)), &spoof).await;
    assert_eq!(who["name"], "front-proxy-client");
}

#[tokio::test]
async fn bearer_tokens_are_reviewed_and_cached() {
    let h = Harness::start().await;
    h.fake.add_token("good-token", "tina", &["testers"]);
    h.fake.allow("tina");
    let c = h.client(None);
    for _ in 0..3 {
        let who = h
            .whoami(&c, &[("Authorization", "Bearer good-token")])
            .await;
        assert_eq!(who["name"], "tina");
        assert_eq!(who["groups"], json!(["testers", "system:authenticated"]));
        assert!(who["headers"].get("authorization").is_none());
    }
    assert_eq!(h.fake.token_review_count(), 1, "cached within the TTL");
    let reviewed = h.fake.state.token_reviews.lock().unwrap()[0].clone();
    assert_eq!(reviewed["spec"], json!({"token": "good-token"}));
    for _ in 0..2 {
        let (code, body) = h
            .get(&c, "/whoami", &[("Authorization", "Bearer bad-token")])
            .await;
        assert_eq!((code, body.as_str()), (401, UNAUTHORIZED));
    }
    assert_eq!(h.fake.token_review_count(), 2, "rejections are cached too");
    h.fake.state.token_error.store(true, Ordering::SeqCst);
    let (code, body) = h
        .get(&c, "/whoami", &[("Authorization", "Bearer other-token")])
        .await;
    assert_eq!((code, body.as_str()), (401, UNAUTHORIZED));
    // A bad certificate plus a valid token: the token wins (union).
    let stranger = h.pki.other_ca.client_cert("x", &[]).unwrap();
    let who = h
        .whoami(
            &h.client(Some(&stranger)),
            &[("Authorization", "Bearer good-token")],
        )
        .await;
    assert_eq!(who["name"], "tina");
}

#[tokio::test]
async fn subject_access_review_allow_deny_error() {
    let h = Harness::start().await;
    h.fake.add_token("t-ann", "ann", &[]);
    h.fake.add_token("t-carol", "carol", &[]);
    h.fake.allow("ann");
    let c = h.client(None);
    let (code, _) = h
        .get(&c, DR_LIST, &[("Authorization", "Bearer t-ann")])
        .await;
    assert_eq!(code, 200);
    let (code, body) = h
        .get(&c, DR_LIST, &[("Authorization", "Bearer t-carol")])
        .await;
    assert_eq!(code, 403);
    assert_eq!(
        body,
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"datarecords.data.kubedojo.io is forbidden: User \"carol\" cannot list resource \"datarecords\" in API group \"data.kubedojo.io\" in the namespace \"default\"","reason":"Forbidden","details":{"group":"data.kubedojo.io","kind":"datarecords"},"code":403}"#
    );
    h.fake.state.sar_error.store(true, Ordering::SeqCst);
    let path = "/apis/data.kubedojo.io/v1alpha1/namespaces/other/datarecords";
    let resp = c
        .get(format!("{}{}", h.base, path))
        .bearer_auth("t-ann")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();
    assert!(
        text.starts_with(&format!(
            "Internal Server Error: \"{path}\": subject access review failed:"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn subject_access_review_attributes() {
    let h = Harness::start().await;
    h.fake.add_token("t", "dana", &["g1"]);
    let c = h.client(None);
    let auth = [("Authorization", "Bearer t")];
    for path in [
        "/apis/metrics.k8s.io/v1beta1/namespaces/ns1/pods?labelSelector=app%3Dx",
        "/apis/metrics.k8s.io/v1beta1/nodes/n1",
        "/apis/data.kubedojo.io/v1alpha1",
        "/apis/data.kubedojo.io/v1alpha1/namespaces/ns1/datarecords?watch=true",
    ] {
        let (code, _) = h.get(&c, path, &auth).await;
        assert_eq!(code, 403, "{path}");
    }
    let sars = h.fake.sars();
    let base = |extra: Value| {
        let mut v =
            json!({"user": "dana", "uid": "uid-dana", "groups": ["g1", "system:authenticated"]});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    };
    assert_eq!(
        sars[0],
        base(
            json!({"resourceAttributes": {"namespace": "ns1", "verb": "list", "group": "metrics.k8s.io",
            "version": "v1beta1", "resource": "pods",
            "labelSelector": {"requirements": [{"key": "app", "operator": "In", "values": ["x"]}]}}})
        )
    );
    assert_eq!(
        sars[1],
        base(
            json!({"resourceAttributes": {"verb": "get", "group": "metrics.k8s.io",
            "version": "v1beta1", "resource": "nodes", "name": "n1"}})
        )
    );
    assert_eq!(
        sars[2],
        base(
            json!({"nonResourceAttributes": {"path": "/apis/data.kubedojo.io/v1alpha1", "verb": "get"}})
        )
    );
    assert_eq!(
        sars[3],
        base(
            json!({"resourceAttributes": {"namespace": "ns1", "verb": "watch", "group": "data.kubedojo.io",
            "version": "v1alpha1", "resource": "datarecords"}})
        )
    );
}

#[tokio::test]
async fn always_allowed_paths_and_masters_skip_review() {
    let h = Harness::start().await;
    let c = h.client(None);
    for p in ["/healthz", "/readyz", "/livez"] {
        assert_eq!(h.get(&c, p, &[]).await.0, 200, "{p}");
    }
    let proxy = h.client(Some(&h.proxy_cert()));
    let (code, _) = h
        .get(
            &proxy,
            DR_LIST,
            &[
                ("X-Remote-User", "root"),
                ("X-Remote-Group", "system:masters"),
            ],
        )
        .await;
    assert_eq!(code, 200);
    assert!(h.fake.sars().is_empty(), "{:?}", h.fake.sars());
    // /healthz/ping is not an exact match: reviewed (and denied for anonymous).
    assert_eq!(h.get(&c, "/healthz/ping", &[]).await.0, 403);
    assert_eq!(h.fake.sars().len(), 1);
}

#[tokio::test]
async fn configmap_ca_rotation_applies_without_restart() {
    let h = Harness::start().await;
    h.fake.allow("alice");
    let old_proxy = h.client(Some(&h.proxy_cert()));
    let headers = [("X-Remote-User", "alice")];
    assert_eq!(h.get(&old_proxy, "/whoami", &headers).await.0, 200);
    let new_ca = CertificateAuthority::new("front-proxy-ca-2").unwrap();
    h.fake
        .set_configmap(configmap(&new_ca.cert_pem, &h.pki.client_ca.cert_pem));
    let new_proxy = h.client(Some(
        &new_ca.client_cert("front-proxy-client", &[]).unwrap(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let fresh_old = h.client(Some(&h.proxy_cert()));
        let old = h.get(&fresh_old, "/whoami", &headers).await.0;
        let new = h.get(&new_proxy, "/whoami", &headers).await.0;
        if (old, new) == (401, 200) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rotation not applied: old CA {old}, new CA {new}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `/whoami` as the front proxy until it answers `want`.
async fn wait_for_proxy_status(h: &Harness, want: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let client = h.client(Some(&h.proxy_cert()));
        let got = h
            .get(&client, "/whoami", &[("X-Remote-User", "alice")])
            .await
            .0;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {got}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn configmap_appearing_later_is_picked_up_by_the_watch() {
    let h = Harness::start_with(Options {
        configmap: false,
        ..Options::default()
    })
    .await;
    h.fake.allow("alice");
    h.fake.allow("system:anonymous");
    // No CA yet: no client certificate is asked for, so the proxy is anonymous.
    let who = h
        .whoami(
            &h.client(Some(&h.proxy_cert())),
            &[("X-Remote-User", "alice")],
        )
        .await;
    assert_eq!(who["name"], "system:anonymous");
    h.fake.set_configmap(configmap(
        &h.pki.front_proxy_ca.cert_pem,
        &h.pki.client_ca.cert_pem,
    ));
    wait_for_proxy_status(&h, 200).await;
}

#[tokio::test]
async fn periodic_reread_applies_rotation_without_watch_events() {
    let h = Harness::start_with(Options {
        silent_watch: true,
        refresh_interval: Duration::from_millis(200),
        ..Options::default()
    })
    .await;
    h.fake.allow("alice");
    wait_for_proxy_status(&h, 200).await;
    let before = h.fake.state.configmap_gets.load(Ordering::SeqCst);
    let new_ca = CertificateAuthority::new("front-proxy-ca-2").unwrap();
    h.fake
        .set_configmap(configmap(&new_ca.cert_pem, &h.pki.client_ca.cert_pem));
    wait_for_proxy_status(&h, 401).await;
    assert!(h.fake.state.configmap_gets.load(Ordering::SeqCst) > before);
}

#[tokio::test]
async fn configmap_lookup_failure_is_fatal_unless_tolerated() {
    common::crypto();
    let fake = FakeApiServer::start().await;
    fake.state.configmap_forbidden.store(true, Ordering::SeqCst);
    let start = |delegation: DelegationArgs| {
        let (a, b) = (fake.client(), fake.client());
        async move {
            start_with_clients(
                &delegation,
                &CertAuthArgs::default(),
                a,
                b,
                vec![],
                Tuning::default(),
            )
            .await
        }
    };
    let err = start(DelegationArgs::default()).await.err().unwrap();
    assert!(format!("{err:#}").contains("403"), "{err:#}");
    let tolerated = start(DelegationArgs {
        authentication_tolerate_lookup_failure: true,
        ..DelegationArgs::default()
    })
    .await
    .unwrap();
    assert!(tolerated.trust.load().requestheader.is_none());
    tolerated.refresh.abort();
    let skipped = start(DelegationArgs {
        authentication_skip_lookup: true,
        ..DelegationArgs::default()
    })
    .await
    .unwrap();
    skipped.refresh.abort();
}

#[tokio::test]
async fn demo_accepts_a_front_proxy() {
    common::crypto();
    let ca = CertificateAuthority::new("demo-front-proxy-ca").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("front-proxy-ca.crt");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let mut args = common::demo_args(dir.path(), None);
    args.cert_auth.requestheader_client_ca_file = Some(ca_file);
    args.cert_auth.requestheader_allowed_names = vec!["front-proxy-client".into()];
    let server = kubedojo_data_api::demo::start(&args).await.unwrap();
    let proxy = ca.client_cert("front-proxy-client", &[]).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(server.ca_pem.as_bytes()).unwrap()])
        .identity(
            reqwest::Identity::from_pem(format!("{}{}", proxy.cert_pem, proxy.key_pem).as_bytes())
                .unwrap(),
        )
        .build()
        .unwrap();
    let url = format!("https://localhost:{}{}", server.addr.port(), DR_LIST);
    let get = |headers: Vec<(&'static str, &'static str)>| {
        let mut r = client.get(&url);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.send()
    };
    assert_eq!(
        get(vec![("X-Remote-User", "someone")])
            .await
            .unwrap()
            .status(),
        403
    );
    let ok = get(vec![
        ("X-Remote-User", "someone"),
        ("X-Remote-Group", "system:masters"),
    ]);
    assert_eq!(ok.await.unwrap().status(), 200);
    server.stop().await;
}

fn leaf_der(pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

async fn served_leaf(client: &reqwest::Client, url: &str) -> (http::Version, Vec<u8>) {
    let resp = client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let version = resp.version();
    let leaf = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .unwrap()
        .to_vec();
    (version, leaf)
}

#[tokio::test]
async fn serving_certificate_rotation_without_restart() {
    common::crypto();
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::new("rotating-ca").unwrap();
    let first = ca.serving_cert("first", &["localhost".into()]).unwrap();
    let files = CertFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    std::fs::write(&files.cert, &first.cert_pem).unwrap();
    std::fs::write(&files.key, &first.key_pem).unwrap();
    let cert = ReloadingCert::new(files.clone()).unwrap();
    let watch = tokio::spawn(cert.clone().watch(Duration::from_millis(50)));
    let tls = server_config(cert, None, MinTlsVersion::Tls12).unwrap();
    let records = load_records(None, None).await.unwrap();
    let chain = AuthChain::new(
        vec![],
        vec![Arc::new(AlwaysAllowPaths(vec!["/healthz".into()]))],
        true,
    );
    let app = Arc::new(build_app(AppParts::new(records, chain)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://localhost:{}/healthz",
        listener.local_addr().unwrap().port()
    );
    let shutdown = CancellationToken::new();
    tokio::spawn(kubedojo_data_api::server::serve(
        listener,
        Arc::new(tls),
        app,
        shutdown.clone(),
    ));
    let client = || {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).unwrap()])
            .tls_info(true)
            .build()
            .unwrap()
    };
    let long_lived = client();
    let (version, leaf) = served_leaf(&long_lived, &url).await;
    assert_eq!(version, http::Version::HTTP_2);
    assert_eq!(leaf, leaf_der(&first.cert_pem));

    // Rewrite both files (key first, as a renewal would) with a later mtime.
    let second = ca.serving_cert("second", &["localhost".into()]).unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    for (path, body) in [
        (&files.key, &second.key_pem),
        (&files.cert, &second.cert_pem),
    ] {
        std::fs::write(path, body).unwrap();
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(later)
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, leaf) = served_leaf(&client(), &url).await;
        if leaf == leaf_der(&second.cert_pem) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "new certificate never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The HTTP/2 connection opened before the rotation still works, on the old certificate.
    let (version, leaf) = served_leaf(&long_lived, &url).await;
    assert_eq!(version, http::Version::HTTP_2);
    assert_eq!(leaf, leaf_der(&first.cert_pem));
    shutdown.cancel();
    watch.abort();
}

/// Issue 13 §1.1: a repeated `fieldSelector` must be authorized and served as the same
/// (first) value. Before the fix, `?fieldSelector=metadata.name%3Duser-config&fieldSelector=`
/// was reviewed as a list of `user-config` (allowed by `resourceNames`) and then served
/// every record of the namespace.
#[tokio::test]
async fn repeated_selectors_are_authorized_as_served() {
    let h = Harness::start().await;
    h.fake.add_token("t-rn", "rn", &[]);
    h.fake.allow_name("rn", "user-config");
    let c = h.client(None);
    let auth = [("Authorization", "Bearer t-rn")];
    let names = |body: &str| -> Vec<String> {
        let v: Value = serde_json::from_str(body).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    // Sanity: the namespace has more than the allowed record, and a plain list is denied.
    assert_eq!(h.get(&c, DR_LIST, &auth).await.0, 403);
    for q in [
        "fieldSelector=metadata.name%3Duser-config&fieldSelector=",
        "fieldSelector=metadata.name%3Duser-config&fieldSelector=metadata.name%3Dfeature-flags",
        "fieldSelector=metadata.name%3Duser-config&labelSelector=&fieldSelector=metadata.name!%3Duser-config",
        "fieldSelector=metadata.name%3Duser-config&fieldSelector",
    ] {
        let (code, body) = h.get(&c, &format!("{DR_LIST}?{q}"), &auth).await;
        assert_eq!(code, 200, "{q}: {body}");
        assert_eq!(names(&body), ["user-config"], "{q}");
    }
    // The other order is reviewed without a name, so it is denied.
    for q in [
        "fieldSelector=&fieldSelector=metadata.name%3Duser-config",
        "fieldSelector=metadata.name%3Dfeature-flags&fieldSelector=metadata.name%3Duser-config",
    ] {
        let (code, body) = h.get(&c, &format!("{DR_LIST}?{q}"), &auth).await;
        assert_eq!(code, 403, "{q}: {body}");
    }
    // The same for a watch: only the allowed object's events.
    let resp = c
        .get(format!(
            "{}{DR_LIST}?watch=1&timeoutSeconds=1&fieldSelector=metadata.name%3Duser-config&fieldSelector=",
            h.base
        ))
        .bearer_auth("t-rn")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = tokio::time::timeout(std::time::Duration::from_secs(10), resp.text())
        .await
        .expect("watch ends at its timeout")
        .unwrap();
    let watched: Vec<String> = text
        .lines()
        .map(|l| {
            let e: Value = serde_json::from_str(l).unwrap();
            e["object"]["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(watched, ["user-config"], "{text}");
    // A repeated `watch` follows the first value, for the review and for the handler.
    let (code, body) = h
        .get(
            &c,
            &format!("{DR_LIST}?watch=0&watch=1&fieldSelector=metadata.name%3Duser-config"),
            &auth,
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(names(&body), ["user-config"]);
    assert!(body.contains("\"kind\":\"DataRecordList\""), "{body}");
    let verbs: Vec<String> = h
        .fake
        .sars()
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s["resourceAttributes"]["verb"].as_str().unwrap(),
                s["resourceAttributes"]["name"].as_str().unwrap_or("-")
            )
        })
        .collect();
    assert!(
        verbs.contains(&"watch user-config".to_string()),
        "{verbs:?}"
    );
    assert!(verbs.contains(&"list user-config".to_string()), "{verbs:?}");
    assert!(
        !verbs
            .iter()
            .any(|v| v.ends_with(" -") && v.starts_with("watch")),
        "{verbs:?}"
    );
}
