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
use crate::runtime::{AppParts, build_app, load_records, sources_config};
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
    /// The nodes and pods every replica's scraper and API see (tests add pods to it as the
    /// pod informer would).
    pub view: Arc<crate::cluster::ClusterView>,
    /// Every replica (one unless `--replicas`); the first serves on `addr`.
    pub replicas: Vec<Replica>,
    /// The PostgreSQL table source of each replica, when one is configured (kept for
    /// its feed and compaction tasks).
    pub postgres: Vec<crate::records::postgres::RunningTable>,
    shutdown: CancellationToken,
    lifecycle: Lifecycle,
    shutdown_delay: std::time::Duration,
    task: tokio::task::JoinHandle<()>,
}

/// One replica of the demo.
pub struct Replica {
    /// The address it serves the API on.
    pub addr: SocketAddr,
    /// Cancel to stop this replica alone (its API, scraper and peer listener).
    pub stop: CancellationToken,
    /// Its store.
    pub store: Arc<crate::store::Store>,
    /// Its sharding state (`None` for a lone replica).
    pub coordinator: Option<Arc<crate::ha::coordinator::Coordinator>>,
    /// The members it sees (fixed in the demo; tests replace it as a Lease expiry would).
    pub membership: Option<Arc<crate::ha::membership::Membership>>,
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

/// Starts the demo server (and with `--replicas N`, N replicas sharing the simulated
/// kubelets); returns once every replica is listening.
pub async fn start(args: &DemoArgs) -> anyhow::Result<DemoServer> {
    let sources = sources_config(&args.common)?;
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
    let tls = Arc::new(server_config(
        resolver,
        Some(trust.verifier()),
        args.common.tls_min_version,
    )?);

    let token = args.token.clone().unwrap_or_else(random_token);
    let mut world = world::SimulatedWorld::start(args).await?;
    let replicas = usize::from(args.ha.replicas.max(1));
    // Peer listeners first: every replica needs every member's address and pin.
    let mut peers = Vec::new();
    if replicas > 1 {
        for i in 0..replicas {
            peers.push(
                crate::ha::setup::LocalPeer::bind(&format!("replica-{i}"), args.bind_address)
                    .await
                    .context("binding a replica's peer listener")?,
            );
        }
    }
    let members: Vec<crate::ha::membership::Member> =
        peers.iter().map(|p| p.member.clone()).collect();
    let secret = random_token();
    let lifecycle = Lifecycle::new();
    let shutdown = lifecycle.stop_token();
    let mut handles = Vec::new();
    let audit =
        crate::server::audit::AuditLog::from_args(&args.audit).map_err(anyhow::Error::msg)?;
    let mut tasks = Vec::new();
    let mut pipelines = Vec::new();
    for i in 0..replicas {
        let pipeline = if i == 0 {
            let spare = world.replica_pipeline()?;
            std::mem::replace(&mut world.pipeline, spare)
        } else {
            world.replica_pipeline()?
        };
        pipelines.push(pipeline);
    }
    // A record set per replica, as separate pods have: each loads the file itself, has its
    // own resourceVersion epoch, and computes its records from its own store.
    let mut record_sets = Vec::new();
    for pipeline in &pipelines {
        record_sets.push(load_records(sources.as_ref(), Some(pipeline.metrics_inputs())).await?);
    }
    let mut refreshes = Vec::new();
    let mut peers = peers.into_iter();
    let mut postgres = Vec::new();
    for (i, (mut pipeline, records)) in pipelines.into_iter().zip(record_sets).enumerate() {
        let stop = shutdown.child_token();
        let mut coordinator = None;
        let mut membership = None;
        if let Some(peer) = peers.next() {
            let started = peer.start(
                &members,
                usize::from(args.ha.scrape_replication.max(1)),
                &secret,
                args.metric_resolution,
                pipeline.telemetry.peer.clone(),
                stop.clone(),
            );
            coordinator = Some(started.coordinator.clone());
            membership = Some(started.membership.clone());
            pipeline.scraper = pipeline.scraper.with_ha(started.coordinator);
            tasks.extend(started.tasks);
        }
        refreshes.push(tokio::spawn(
            records
                .clone()
                .run_refresh(args.common.records_refresh_interval),
        ));
        let mut parts = AppParts::new(records, demo_auth(&trust, &token));
        // Each replica has its own table source (pool and listener), as separate pods do.
        if let Some(pg) = crate::runtime::start_postgres(&args.postgres, sources.as_ref()).await? {
            parts.records_backend = Some(crate::runtime::records_backend(&pg, &parts.records));
            postgres.push(pg);
        }
        parts
            .health
            .add_ready("shutdown", lifecycle.readiness_check());
        pipeline.add_to(&mut parts);
        parts.extra_routes.push(Arc::new(world.core_api()));
        if args.common.profiling {
            parts
                .extra_routes
                .push(Arc::new(crate::server::pprof::Profiling::new(
                    args.serving.request_timeout,
                )));
        }
        let app = Arc::new(
            build_app(parts)
                .with_serving(&args.serving)
                .with_audit(audit.clone()),
        );
        let port = if args.secure_port == 0 {
            0
        } else {
            args.secure_port
                .checked_add(i as u16)
                .context("--secure-port + --replicas overflows")?
        };
        let listener = args
            .serving
            .bind(SocketAddr::new(args.bind_address, port))
            .with_context(|| format!("cannot listen on {}:{port}", args.bind_address))?;
        let addr = listener.local_addr()?;
        let scraper = tokio::spawn(pipeline.scraper.run(stop.clone()));
        let server_tls = tls.clone();
        let server_stop = stop.clone();
        let serving = args.serving.clone();
        tasks.push(tokio::spawn(async move {
            crate::server::serve_with(listener, server_tls, app, server_stop, &serving).await;
            scraper.abort();
        }));
        handles.push(Replica {
            addr,
            stop,
            store: pipeline.store.clone(),
            coordinator,
            membership,
        });
    }
    let addr = handles[0].addr;
    let kubeconfig_text = kubeconfig::render(addr, &ca.cert_pem, DEMO_ADMIN, &token);
    kubeconfig::write(&args.write_kubeconfig, &kubeconfig_text).with_context(|| {
        format!(
            "cannot write the kubeconfig to {}",
            args.write_kubeconfig.display()
        )
    })?;
    for (i, r) in handles.iter().enumerate().skip(1) {
        let path = replica_kubeconfig(&args.write_kubeconfig, i);
        let text = kubeconfig::render(r.addr, &ca.cert_pem, DEMO_ADMIN, &token);
        kubeconfig::write(&path, &text)
            .with_context(|| format!("cannot write the kubeconfig to {}", path.display()))?;
    }

    let trust_refresh = tokio::spawn(trust_source.run(trust, None, REFRESH_INTERVAL));
    let all_stopped = shutdown.clone();
    let task = tokio::spawn(async move {
        all_stopped.cancelled().await;
        for t in tasks {
            let _ = t.await;
        }
        for r in refreshes {
            r.abort();
        }
        trust_refresh.abort();
        // Requests have drained: store what batch mode still buffers.
        if let Some(audit) = audit {
            let _ = tokio::task::spawn_blocking(move || audit.shutdown()).await;
        }
    });
    let view = world.view();
    let world::SimulatedWorld { sim, .. } = world;
    Ok(DemoServer {
        addr,
        ca_pem: ca.cert_pem,
        token,
        kubeconfig: args.write_kubeconfig.clone(),
        sim: Some(sim),
        view,
        replicas: handles,
        postgres,
        shutdown,
        lifecycle,
        shutdown_delay: args.serving.shutdown_delay_duration,
        task,
    })
}

/// The kubeconfig of replica `i` (> 0): `<file>-<i>` beside the main one.
pub fn replica_kubeconfig(main: &std::path::Path, i: usize) -> PathBuf {
    let mut name = main.file_name().unwrap_or_default().to_os_string();
    name.push(format!("-{i}"));
    main.with_file_name(name)
}

fn demo_auth(trust: &Arc<TrustStore>, token: &str) -> AuthChain {
    let admin = UserInfo {
        name: DEMO_ADMIN.into(),
        uid: "kubedojo-demo-admin".into(),
        groups: vec![MASTERS_GROUP.into()],
        ..UserInfo::default()
    };
    AuthChain::new(
        vec![
            Arc::new(FrontProxyAuthenticator::new(trust.clone())),
            Arc::new(ClientCertAuthenticator::new(trust.clone())),
            Arc::new(StaticTokenAuthenticator::new(vec![(
                token.to_string(),
                admin,
            )])),
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
    )
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
    if server.replicas.len() > 1 {
        println!(
            "{} replicas share the {} simulated kubelets (each node scraped by {}):",
            server.replicas.len(),
            args.nodes,
            args.ha.scrape_replication
        );
        for (i, r) in server.replicas.iter().enumerate() {
            let kc = if i == 0 {
                server.kubeconfig.clone()
            } else {
                replica_kubeconfig(&server.kubeconfig, i)
            };
            println!(
                "  replica-{i}: https://{} (kubeconfig: {})",
                r.addr,
                kc.display()
            );
        }
    }
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
