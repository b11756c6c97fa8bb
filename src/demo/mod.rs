//! `demo`: the production server with a simulated world. Same server, auth
//! pipeline and API code; a generated CA and serving certificate, a demo admin
//! token, and a kubeconfig for kubectl.

pub mod core_api;
pub mod kubeconfig;
pub mod world;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::server::lifecycle::Lifecycle;

use crate::auth::configmap::{REFRESH_INTERVAL, TrustSource};
use crate::auth::{
    AlwaysAllowGroups, AlwaysAllowPaths, AuthChain, ClientCertAuthenticator,
    FrontProxyAuthenticator, MASTERS_GROUP, StaticTokenAuthenticator, StaticUsers, TrustStore,
    UserInfo,
};
use crate::config::DemoArgs;
use crate::runtime::{AppParts, build_app, load_records};
use crate::server::pki::CertificateAuthority;
use crate::server::tls::server_config;

/// The demo admin user.
pub const DEMO_ADMIN: &str = "kubedojo-demo-admin";

/// A running demo server.
pub struct DemoServer {
    /// The address it serves on.
    pub addr: SocketAddr,
    /// The CA that signed its serving certificate.
    pub ca_pem: String,
    /// The admin's bearer token.
    pub token: String,
    /// Where the kubeconfig was written.
    pub kubeconfig: PathBuf,
    /// The simulated kubelets.
    pub sim: Option<crate::sim::SimHandle>,
    shutdown: CancellationToken,
    lifecycle: Lifecycle,
    shutdown_delay: std::time::Duration,
    task: tokio::task::JoinHandle<()>,
}

impl DemoServer {
    /// Runs the SIGTERM sequence: readiness fails, serving continues for
    /// `--shutdown-delay-duration`, then the listener closes and requests drain.
    pub async fn terminate(&self) {
        self.lifecycle.terminate(self.shutdown_delay).await;
    }

    /// True once the server task has finished (listener closed, connections drained).
    pub fn finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the server and the simulated kubelets.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let _ = (&mut self.task).await;
        if let Some(sim) = self.sim.take() {
            sim.shutdown().await;
        }
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the server stops, then stops the simulated kubelets.
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
        if let Some(sim) = self.sim.take() {
            sim.shutdown().await;
        }
    }
}

/// A random 32-character token.
pub fn random_token() -> String {
    let mut rng = rand::rng();
    (0..32)
        .map(|_| {
            let n: u8 = rng.random_range(0..36);
            char::from_digit(n as u32, 36).expect("digit below 36")
        })
        .collect()
}

/// Starts the demo server; returns once it is listening.
pub async fn start(args: &DemoArgs) -> anyhow::Result<DemoServer> {
    let records = load_records(&args.common).await?;
    let ca = CertificateAuthority::new("kubedojo-demo-ca").context("generating the demo CA")?;
    let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let bind = args.bind_address.to_string();
    if !sans.contains(&bind) && !args.bind_address.is_unspecified() {
        sans.push(bind);
    }
    let serving = ca
        .serving_cert("kubedojo-demo", &sans)
        .context("generating the demo serving certificate")?;
    let certified = crate::server::tls::certified_key_from_pem(&serving.cert_pem, &serving.key_pem)
        .context("loading the demo serving certificate")?;
    let resolver = Arc::new(crate::server::tls::StaticCert(Arc::new(certified)));
    // Client certificates and the front proxy from flags only (no cluster here).
    let trust_source = TrustSource::flags_only(args.cert_auth.trust_flags());
    let (trust_config, _) = trust_source
        .initial(false)
        .await
        .map_err(anyhow::Error::msg)
        .context("client certificate flags")?;
    let trust = TrustStore::new(trust_config);
    let tls = server_config(
        resolver,
        Some(trust.verifier()),
        args.common.tls_min_version,
    )?;

    let token = args.token.clone().unwrap_or_else(random_token);
    let admin = UserInfo {
        name: DEMO_ADMIN.into(),
        uid: "kubedojo-demo-admin".into(),
        groups: vec![MASTERS_GROUP.into()],
        ..UserInfo::default()
    };
    let auth = AuthChain::new(
        vec![
            Arc::new(FrontProxyAuthenticator::new(trust.clone())),
            Arc::new(ClientCertAuthenticator::new(trust.clone())),
            Arc::new(StaticTokenAuthenticator::new(vec![(token.clone(), admin)])),
        ],
        vec![
            Arc::new(AlwaysAllowGroups(vec![MASTERS_GROUP.into()])),
            Arc::new(AlwaysAllowPaths(vec![
                "/healthz".into(),
                "/readyz".into(),
                "/livez".into(),
            ])),
            Arc::new(StaticUsers(vec![DEMO_ADMIN.into()])),
        ],
        true,
    );
    let mut parts = AppParts::new(records.clone(), auth);
    let lifecycle = Lifecycle::new();
    parts
        .health
        .add_ready("shutdown", lifecycle.readiness_check());
    let world = world::SimulatedWorld::start(args).await?;
    world.pipeline.add_to(&mut parts);
    parts.extra_routes.push(Arc::new(world.core_api()));
    let app = Arc::new(build_app(parts).with_serving(&args.serving));

    let listener = args
        .serving
        .bind(std::net::SocketAddr::new(
            args.bind_address,
            args.secure_port,
        ))
        .with_context(|| {
            format!(
                "cannot listen on {}:{}",
                args.bind_address, args.secure_port
            )
        })?;
    let addr = listener.local_addr()?;
    let kubeconfig_text = kubeconfig::render(addr, &ca.cert_pem, DEMO_ADMIN, &token);
    kubeconfig::write(&args.write_kubeconfig, &kubeconfig_text).with_context(|| {
        format!(
            "cannot write the kubeconfig to {}",
            args.write_kubeconfig.display()
        )
    })?;

    let shutdown = lifecycle.stop_token();
    let refresh = tokio::spawn(
        records
            .clone()
            .run_refresh(args.common.records_refresh_interval),
    );
    let trust_refresh = tokio::spawn(trust_source.run(trust, None, REFRESH_INTERVAL));
    let server_shutdown = shutdown.clone();
    let world::SimulatedWorld { pipeline, sim, .. } = world;
    let scraper = tokio::spawn(pipeline.scraper.run(shutdown.clone()));
    let serving = args.serving.clone();
    let task = tokio::spawn(async move {
        crate::server::serve_with(listener, Arc::new(tls), app, server_shutdown, &serving).await;
        refresh.abort();
        scraper.abort();
        trust_refresh.abort();
    });
    Ok(DemoServer {
        addr,
        ca_pem: ca.cert_pem,
        token,
        kubeconfig: args.write_kubeconfig.clone(),
        sim: Some(sim),
        shutdown,
        lifecycle,
        shutdown_delay: args.serving.shutdown_delay_duration,
        task,
    })
}

/// Runs the demo until Ctrl-C / SIGTERM.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let server = start(&args).await?;
    let kc = server.kubeconfig.display().to_string();
    println!(
        "kubedojo-data-api demo is serving on https://{addr} (kubeconfig: {kc})\n\
         Try:\n  \
         kubectl --kubeconfig {kc} api-resources --api-group=data.kubedojo.io\n  \
         kubectl --kubeconfig {kc} get dr -A\n  \
         kubectl --kubeconfig {kc} get dr user-config -n default -o yaml\n  \
         kubectl --kubeconfig {kc} describe dr user-config -n default\n  \
         kubectl --kubeconfig {kc} explain dr.spec\n  \
         kubectl --kubeconfig {kc} top node\n  \
         kubectl --kubeconfig {kc} top pod -A",
        addr = server.addr
    );
    let server = Arc::new(server);
    let s = server.clone();
    tokio::spawn(async move {
        crate::runtime::shutdown_signal().await;
        s.terminate().await;
    });
    while !server.finished() {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}
