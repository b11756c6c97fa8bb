//! Wiring shared by every mode: logging, record loading, assembling the app,
//! the in-cluster `serve` mode and signal handling.

use std::sync::Arc;

use anyhow::Context;

use crate::api::discovery::GroupVersion;
use crate::api::openapi::spec_for;
use crate::api::resource::ResourceProvider;
use crate::auth::AuthChain;
use crate::config::{CommonArgs, LogFormat, ServeArgs};
use crate::groups::records as records_group;
use crate::records::{MetricsInputs, RecordSet, RecordSource, SourcesConfig, default_sources};
use crate::server::app::{App, ExtraRoutes};
use crate::server::health::Health;
use crate::server::sni::SniResolver;
use crate::server::tls::{
    CertFiles, ReloadingCert, default_sans, ensure_self_signed, service_sans,
};

/// Sets up tracing from `-v` and `--log-format`.
pub fn init_logging(common: &CommonArgs) {
    let level = match common.verbosity {
        0 | 1 => "info",
        2 | 3 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KUBEDOJO_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{level},hyper=warn,rustls=warn,h2=warn,tower=warn,kube=info"
        ))
    });
    // Colour only on a terminal: container logs stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match common.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Reads `--sources-config` (or turns `--records-file` into one file source); `None`
/// when neither is given. A bad file fails start-up with its file, key and line.
pub fn sources_config(common: &CommonArgs) -> anyhow::Result<Option<SourcesConfig>> {
    match (&common.sources_config, &common.records_file) {
        (Some(path), _) => Ok(Some(SourcesConfig::load(path)?)),
        (None, Some(file)) => Ok(Some(SourcesConfig::single_file(file.clone()))),
        (None, None) => Ok(None),
    }
}

/// Builds the record sources (the configured ones, else the lab's embedded records plus
/// the computed ones when `metrics` is given) and loads them once; a bad records file
/// fails start-up.
pub async fn load_records(
    config: Option<&SourcesConfig>,
    metrics: Option<MetricsInputs>,
) -> anyhow::Result<Arc<RecordSet>> {
    load_records_with_kube(config, metrics, None).await
}

/// As [`load_records`], with a Kubernetes client for ConfigMap-held query definitions.
pub async fn load_records_with_kube(
    config: Option<&SourcesConfig>,
    metrics: Option<MetricsInputs>,
    kube: Option<&kube::Client>,
) -> anyhow::Result<Arc<RecordSet>> {
    let sources: Vec<Box<dyn RecordSource>> = match config {
        Some(config) => {
            crate::records::build::build_sources_with_kube(config, metrics.as_ref(), kube)
                .map_err(|e| anyhow::anyhow!("cannot build the DataRecord sources: {e}"))?
        }
        None => default_sources(metrics.as_ref()),
    };
    let set = Arc::new(RecordSet::new(sources));
    tracing::info!(sources = ?set.source_names(), epoch = %set.epoch(), "DataRecord sources");
    if let Some(e) = set.refresh().await.into_iter().next() {
        return Err(anyhow::Error::new(e).context("cannot load DataRecords"));
    }
    Ok(set)
}

/// Starts the PostgreSQL table source of the sources configuration (`kind: postgres`),
/// or the one `--postgres-dsn-file` / `$KUBEDOJO_PG_DSN` gives (`None` when there is
/// neither; both is an error). A database that is down does not stop start-up
/// (requests get 503 until it is back), except with `migrate`.
pub async fn start_postgres(
    args: &crate::config::PostgresArgs,
    sources: Option<&SourcesConfig>,
) -> anyhow::Result<Option<crate::records::postgres::RunningTable>> {
    use crate::records::postgres::start_table;
    let configured = match sources {
        Some(config) => crate::records::build::table_source(config)
            .map_err(|e| anyhow::anyhow!("--sources-config: {e}"))?,
        None => None,
    };
    let (connection, source, migrate, union) = match configured {
        Some(spec) => {
            if args.postgres_dsn_file.is_some() {
                anyhow::bail!(
                    "--postgres-dsn-file and a postgres source in --sources-config both name a table source: use one"
                );
            }
            let union = spec.combined.then_some(spec.sources_before);
            (spec.connection, spec.source, spec.migrate, union)
        }
        None => match postgres_from_flags(args)? {
            Some((c, s, m)) => (c, s, m, None),
            None => return Ok(None),
        },
    };
    let schema = source.schema.clone();
    let mut running =
        start_table(&connection, &source, migrate, &records_group::DATARECORDS).await?;
    running.union = union;
    tracing::info!(connection = %connection.name, schema = %schema, union = union.is_some(), "serving DataRecords from PostgreSQL");
    Ok(Some(running))
}

/// The DataRecords backend of a running table source: the table alone, or its union
/// with the in-memory `records` when the configuration combines them.
pub fn records_backend(
    pg: &crate::records::postgres::RunningTable,
    records: &Arc<RecordSet>,
) -> Arc<dyn crate::api::resource::AsyncBackend> {
    match pg.union {
        Some(before) => Arc::new(crate::records::union::UnionBackend::new(
            records.clone(),
            pg.table.clone(),
            pg.feed.clone(),
            before,
            &records_group::DATARECORDS,
        )),
        None => pg.backend.clone(),
    }
}

/// The table source the `--postgres-*` flags describe, when a DSN is given.
fn postgres_from_flags(
    args: &crate::config::PostgresArgs,
) -> anyhow::Result<
    Option<(
        crate::records::postgres::ConnectionConfig,
        crate::records::postgres::TableSourceConfig,
        bool,
    )>,
> {
    use crate::records::postgres::{ConnectionConfig, TableSourceConfig, TlsMode};
    let dsn = match &args.postgres_dsn_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--postgres-dsn-file {}: {e}", path.display()))?
            .trim()
            .to_string(),
        None => match std::env::var("KUBEDOJO_PG_DSN") {
            Ok(dsn) if !dsn.trim().is_empty() => dsn.trim().to_string(),
            _ => return Ok(None),
        },
    };
    let mut connection = ConnectionConfig::new("main", dsn);
    connection.max_connections = args.postgres_max_connections;
    connection.connect_timeout = args.postgres_connect_timeout;
    connection.statement_timeout = args.postgres_statement_timeout;
    connection.tls = match args.postgres_tls_mode.as_str() {
        "require" => TlsMode::Require,
        "verify-full" => TlsMode::VerifyFull,
        _ => TlsMode::Disable,
    };
    connection.ca_file = args.postgres_ca_file.clone();
    let mut source = TableSourceConfig::new(args.postgres_schema.clone());
    source.keep_changes = args.postgres_keep_changes;
    Ok(Some((connection, source, args.postgres_migrate)))
}

/// What goes into an [`App`].
pub struct AppParts {
    /// DataRecords.
    pub records: Arc<RecordSet>,
    /// The auth chain.
    pub auth: AuthChain,
    /// Health checks.
    pub health: Health,
    /// More groups (metrics.k8s.io) with their providers and OpenAPI schemas.
    pub extra_groups: Vec<GroupVersion>,
    /// Providers of the extra groups.
    pub extra_providers: Vec<Arc<dyn ResourceProvider>>,
    /// OpenAPI of the extra groups.
    pub extra_schemas: Vec<(
        crate::api::openapi::ResourceSchema,
        crate::api::openapi::Schemas,
    )>,
    /// Routes outside our groups.
    pub extra_routes: Vec<Arc<dyn ExtraRoutes>>,
    /// DataRecords answered by an asynchronous backend (a PostgreSQL table) instead of
    /// the in-memory record set.
    pub records_backend: Option<Arc<dyn crate::api::resource::AsyncBackend>>,
}

impl AppParts {
    /// Parts serving only DataRecords.
    pub fn new(records: Arc<RecordSet>, auth: AuthChain) -> Self {
        AppParts {
            records,
            auth,
            health: Health::new(),
            extra_groups: Vec::new(),
            extra_providers: Vec::new(),
            extra_schemas: Vec::new(),
            extra_routes: Vec::new(),
            records_backend: None,
        }
    }
}

/// Assembles the app: discovery, OpenAPI and providers for every group.
pub fn build_app(parts: AppParts) -> App {
    let mut groups = parts.extra_groups;
    groups.push(records_group::group_version());
    let mut providers = parts.extra_providers;
    providers.push(Arc::new(match parts.records_backend {
        Some(backend) => {
            records_group::DataRecordsProvider::with_backend(parts.records.clone(), backend)
        }
        None => records_group::DataRecordsProvider::new(parts.records.clone()),
    }));
    let (record_schema, record_defs) = records_group::schemas();
    let mut resource_schemas = vec![record_schema];
    let mut defs = record_defs;
    for (rs, d) in parts.extra_schemas {
        resource_schemas.push(rs);
        defs.extend(d);
    }
    let openapi = spec_for(&groups, resource_schemas, defs)
        .render("kubedojo-data-api", concat!("v", env!("CARGO_PKG_VERSION")));
    let mut health = parts.health;
    let records = parts.records;
    health.add_ready(
        "records-loaded",
        Arc::new(move || {
            if records.loaded() {
                Ok(())
            } else {
                Err("a record source has not loaded yet".into())
            }
        }),
    );
    App::new(
        groups,
        providers,
        openapi,
        parts.auth,
        health,
        parts.extra_routes,
    )
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Runs the server for a real cluster until SIGTERM.
pub async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    args.metrics
        .validate(std::time::Duration::from_secs(10))
        .map_err(anyhow::Error::msg)?;
    args.ha
        .validate(args.metrics.metric_resolution)
        .map_err(anyhow::Error::msg)?;
    let sources = sources_config(&args.common)?;
    let files = match (&args.tls_cert_file, &args.tls_private_key_file) {
        (Some(cert), Some(key)) => CertFiles {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => {
            let mut extra = args.tls_sans.clone();
            extra.extend(service_sans(
                std::env::var("SERVICE_NAME").ok().as_deref(),
                std::env::var("POD_NAMESPACE").ok().as_deref(),
            ));
            let (files, generated) = ensure_self_signed(&args.cert_dir, &default_sans(&extra))?;
            if generated.is_some() {
                tracing::info!(dir = %args.cert_dir.display(), "generated a self-signed serving certificate");
            }
            files
        }
    };
    let cert = SniResolver::new(ReloadingCert::new(files)?, &args.tls_sni_cert_key)?;
    if !args.tls_sni_cert_key.is_empty() {
        tracing::info!(names = ?cert.names(), "serving SNI certificates (--tls-sni-cert-key)");
    }
    let delegated = crate::auth::delegated::start(
        &args.delegation,
        &args.cert_auth,
        args.kubeconfig.as_deref(),
        args.authorization_always_allow_paths.clone(),
    )
    .await?;
    let suites = (!args.serving.tls_cipher_suites.is_empty())
        .then(|| crate::server::options::cipher_suites(&args.serving.tls_cipher_suites))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let tls = crate::server::tls::server_config_with_suites(
        cert.clone(),
        Some(delegated.trust.verifier()),
        args.common.tls_min_version,
        suites,
    )?;
    let kube_config = crate::auth::delegated::kube_config(args.kubeconfig.as_deref()).await?;
    let client =
        kube::Client::try_from(kube_config.clone()).context("creating the Kubernetes client")?;
    let view = crate::cluster::ClusterView::new();
    let node_selector =
        (!args.metrics.node_selector.is_empty()).then(|| args.metrics.node_selector.clone());
    let watch_nodes = tokio::spawn(crate::cluster::watch::watch_nodes(
        client.clone(),
        view.clone(),
        node_selector,
    ));
    let ha_client = client.clone();
    let records_client = client.clone();
    let watch_pods = tokio::spawn(crate::cluster::watch::watch_pods(client, view.clone()));
    let kubelet = crate::scrape::KubeletClient::new(crate::pipeline::kubelet_client_config(
        &args.metrics,
        &kube_config,
    )?)
    .map_err(anyhow::Error::msg)?;
    let scraper_config = crate::scrape::ScraperConfig {
        resolution: args.metrics.metric_resolution,
        concurrency: args.metrics.kubelet_max_concurrency,
        node_selector: crate::api::label_selector::LabelSelector::parse(
            &args.metrics.node_selector,
        )
        .map_err(|e| anyhow::anyhow!("--node-selector: {e}"))?,
        addressing: crate::cluster::address::KubeletAddressing {
            preferred_types: args.metrics.kubelet_preferred_address_types.clone(),
            port: args.metrics.kubelet_port,
            use_node_status_port: args.metrics.kubelet_use_node_status_port,
            scheme: "https",
        },
        publish_interval: std::time::Duration::from_secs(1),
    };
    let store_config = crate::store::StoreConfig::new(args.metrics.metric_resolution)
        .with_stale_tolerance(args.metrics.metric_stale_tolerance);
    let mut pipeline = crate::pipeline::Pipeline::with_store_config(
        scraper_config,
        store_config,
        kubelet,
        view.clone(),
        args.metrics.request_timeout(),
    );
    pipeline.watch_history_bytes = args.metrics.watch_history_bytes;
    let records = load_records_with_kube(
        sources.as_ref(),
        Some(pipeline.metrics_inputs()),
        Some(&records_client),
    )
    .await?;
    let postgres = start_postgres(&args.postgres, sources.as_ref()).await?;
    let mut parts = AppParts::new(records.clone(), delegated.chain);
    parts.records_backend = postgres.as_ref().map(|p| records_backend(p, &records));
    let lifecycle = crate::server::lifecycle::Lifecycle::new();
    parts
        .health
        .add_ready("shutdown", lifecycle.readiness_check());
    let shutdown = lifecycle.stop_token();
    let ha = crate::ha::setup::start_in_cluster(
        &args.ha,
        args.bind_address,
        args.metrics.metric_resolution,
        ha_client,
        pipeline.telemetry.peer.clone(),
        shutdown.clone(),
    )
    .await?;
    if let Some(ha) = &ha {
        pipeline.scraper = pipeline.scraper.with_ha(ha.coordinator.clone());
    }
    pipeline.add_to(&mut parts);
    if args.common.profiling {
        parts
            .extra_routes
            .push(Arc::new(crate::server::pprof::Profiling::new(
                args.serving.request_timeout,
            )));
    }
    let audit =
        crate::server::audit::AuditLog::from_args(&args.audit).map_err(anyhow::Error::msg)?;
    let app = Arc::new(
        build_app(parts)
            .with_serving(&args.serving)
            .with_audit(audit.clone()),
    );
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
    tracing::info!(addr = %listener.local_addr()?, "serving");
    let refresh = tokio::spawn(records.run_refresh(args.common.records_refresh_interval));
    let watch = tokio::spawn(cert.watch(std::time::Duration::from_secs(10)));
    let delay = args.serving.shutdown_delay_duration;
    tokio::spawn(async move {
        shutdown_signal().await;
        lifecycle.terminate(delay).await;
    });
    let scraper = tokio::spawn(
        pipeline
            .scraper
            .run_once_nodes_synced(std::time::Duration::from_secs(30), shutdown.clone()),
    );
    crate::server::serve_with(listener, Arc::new(tls), app, shutdown, &args.serving).await;
    // Requests have drained: store what batch mode still buffers.
    if let Some(audit) = audit {
        let _ = tokio::task::spawn_blocking(move || audit.shutdown()).await;
    }
    refresh.abort();
    watch.abort();
    watch_nodes.abort();
    watch_pods.abort();
    scraper.abort();
    delegated.refresh.abort();
    if let Some(ha) = ha {
        // The Lease loop deletes this replica's Lease on shutdown, so its nodes move at once.
        for task in ha.tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
        }
    }
    Ok(())
}
