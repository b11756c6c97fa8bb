//! An in-process server with delegated auth against the kube-apiserver double,
//! real certificate chains, and a `/whoami` route that shows what handlers see.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::Response;
use kubedojo_data_api::api::query::Query;
use kubedojo_data_api::api::request_info::RequestInfo;
use kubedojo_data_api::api::response::{self, Body};
use kubedojo_data_api::auth::UserInfo;
use kubedojo_data_api::auth::delegated::{Delegated, Tuning, start_with_clients};
use kubedojo_data_api::auth::options::{CertAuthArgs, DelegationArgs};
use kubedojo_data_api::auth::review::Retry;
use kubedojo_data_api::config::CommonArgs;
use kubedojo_data_api::runtime::{AppParts, build_app, load_records};
use kubedojo_data_api::server::app::ExtraRoutes;
use kubedojo_data_api::server::pki::{CertificateAuthority, PemPair};
use kubedojo_data_api::server::tls::{
    MinTlsVersion, StaticCert, certified_key_from_pem, server_config,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::fake_apiserver::FakeApiServer;

pub const UNAUTHORIZED: &str = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#;
pub const DR_LIST: &str = "/apis/data.kubedojo.io/v1alpha1/namespaces/default/datarecords";

/// `/whoami`: what a handler sees of the request (user and headers).
pub struct Echo;

impl ExtraRoutes for Echo {
    fn handle(&self, _: &RequestInfo, _: &Query, _: Option<&str>) -> Option<Response<Body>> {
        None
    }

    fn handle_authenticated(
        &self,
        info: &RequestInfo,
        _: &Query,
        _: Option<&str>,
        user: &UserInfo,
        headers: &http::HeaderMap,
    ) -> Option<Response<Body>> {
        if info.path != "/whoami" {
            return None;
        }
        let mut h: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in headers {
            h.entry(k.to_string())
                .or_default()
                .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
        }
        Some(response::json_value(&json!({
            "name": user.name, "uid": user.uid, "groups": user.groups,
            "extra": user.extra, "headers": h,
        })))
    }
}

pub struct Pki {
    pub serving_ca: CertificateAuthority,
    pub front_proxy_ca: CertificateAuthority,
    pub client_ca: CertificateAuthority,
    pub other_ca: CertificateAuthority,
}

impl Pki {
    pub fn new() -> Self {
        Pki {
            serving_ca: CertificateAuthority::new("serving-ca").unwrap(),
            front_proxy_ca: CertificateAuthority::new("front-proxy-ca").unwrap(),
            client_ca: CertificateAuthority::new("client-ca").unwrap(),
            other_ca: CertificateAuthority::new("other-ca").unwrap(),
        }
    }
}

pub fn configmap(front_proxy_ca: &str, client_ca: &str) -> BTreeMap<String, String> {
    [
        ("client-ca-file", client_ca),
        ("requestheader-client-ca-file", front_proxy_ca),
        ("requestheader-allowed-names", r#"["front-proxy-client"]"#),
        ("requestheader-username-headers", r#"["X-Remote-User"]"#),
        ("requestheader-uid-headers", r#"["X-Remote-Uid"]"#),
        ("requestheader-group-headers", r#"["X-Remote-Group"]"#),
        (
            "requestheader-extra-headers-prefix",
            r#"["X-Remote-Extra-"]"#,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub fn common_args() -> CommonArgs {
    CommonArgs {
        verbosity: 0,
        log_format: kubedojo_data_api::config::LogFormat::Text,
        records_file: None,
        sources_config: None,
        records_refresh_interval: Duration::from_secs(30),
        tls_min_version: MinTlsVersion::Tls12,
        profiling: true,
    }
}

/// Our server with delegated auth against the double.
pub struct Harness {
    pub fake: FakeApiServer,
    pub pki: Pki,
    pub base: String,
    delegated_refresh: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.delegated_refresh.abort();
    }
}

/// How a [`Harness`] starts.
pub struct Options {
    /// Publish the ConfigMap before starting.
    pub configmap: bool,
    /// The double's watches never deliver events (only the periodic re-read works).
    pub silent_watch: bool,
    /// Trust re-read interval.
    pub refresh_interval: Duration,
    /// Serve `/debug/pprof/` (`--profiling`).
    pub profiling: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            configmap: true,
            silent_watch: false,
            refresh_interval: Duration::from_secs(60),
            profiling: false,
        }
    }
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        super::crypto();
        let pki = Pki::new();
        let fake = FakeApiServer::start().await;
        fake.state
            .silent_watch
            .store(options.silent_watch, std::sync::atomic::Ordering::SeqCst);
        if options.configmap {
            fake.set_configmap(configmap(
                &pki.front_proxy_ca.cert_pem,
                &pki.client_ca.cert_pem,
            ));
        }
        let Delegated {
            trust,
            chain,
            refresh,
        } = start_with_clients(
            &DelegationArgs::default(),
            &CertAuthArgs::default(),
            fake.client(),
            fake.client(),
            vec!["/healthz".into(), "/readyz".into(), "/livez".into()],
            Tuning {
                refresh_interval: options.refresh_interval,
                retry: Retry::once(),
            },
        )
        .await
        .unwrap();
        let records = load_records(None, None).await.unwrap();
        let mut parts = AppParts::new(records, chain);
        parts.extra_routes.push(Arc::new(Echo));
        if options.profiling {
            parts
                .extra_routes
                .push(Arc::new(kubedojo_data_api::server::pprof::Profiling::new(
                    Duration::from_secs(60),
                )));
        }
        let app = Arc::new(build_app(parts));
        let serving = pki
            .serving_ca
            .serving_cert("server", &["localhost".into()])
            .unwrap();
        let key = certified_key_from_pem(&serving.cert_pem, &serving.key_pem).unwrap();
        let tls = server_config(
            Arc::new(StaticCert(Arc::new(key))),
            Some(trust.verifier()),
            MinTlsVersion::Tls12,
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!(
            "https://localhost:{}",
            listener.local_addr().unwrap().port()
        );
        let shutdown = CancellationToken::new();
        tokio::spawn(kubedojo_data_api::server::serve(
            listener,
            Arc::new(tls),
            app,
            shutdown.clone(),
        ));
        Harness {
            fake,
            pki,
            base,
            delegated_refresh: refresh,
            shutdown,
        }
    }

    pub fn client(&self, identity: Option<&PemPair>) -> reqwest::Client {
        let mut b = reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(
            self.pki.serving_ca.cert_pem.as_bytes(),
        )
        .unwrap()]);
        if let Some(id) = identity {
            let pem = format!("{}{}", id.cert_pem, id.key_pem);
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        b.build().unwrap()
    }

    pub fn proxy_cert(&self) -> PemPair {
        self.pki
            .front_proxy_ca
            .client_cert("front-proxy-client", &[])
            .unwrap()
    }

    pub async fn get(
        &self,
        client: &reqwest::Client,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let mut req = client.get(format!("{}{}", self.base, path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let code = resp.status().as_u16();
        (code, resp.text().await.unwrap())
    }

    pub async fn whoami(&self, client: &reqwest::Client, headers: &[(&str, &str)]) -> Value {
        let (code, body) = self.get(client, "/whoami", headers).await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

pub fn aggregator_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("X-Remote-User", "alice"),
        ("X-Remote-Uid", "alice-uid"),
        ("X-Remote-Group", "team-a"),
        ("X-Remote-Group", "team-b"),
        (
            "X-Remote-Extra-Authentication.kubernetes.io%2fcredential-Id",
            "JTI=abc",
        ),
        ("X-Remote-Extra-Scopes", "s1"),
        ("Authorization", "Bearer should-be-stripped"),
    ]
}
