//! Command-line flags, named like metrics-server's where the meaning is the same,
//! with their validation.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::auth::options::{CertAuthArgs, DelegationArgs};
use crate::server::tls::MinTlsVersion;

/// A Kubernetes aggregated API server: metrics.k8s.io (a drop-in for
/// metrics-server) and data.kubedojo.io DataRecords.
///
/// With no subcommand it serves in a cluster, like metrics-server.
#[derive(Debug, Parser)]
#[command(name = "kubedojo-data-api", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true, args_override_self = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags for serving in a cluster (used when no subcommand is given).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything on this machine with no cluster: the same server, with a
    /// generated certificate, a demo token and a kubeconfig for kubectl.
    Demo(Box<DemoArgs>),
    /// Serve simulated kubelets (`/metrics/resource` over TLS) on loopback
    /// addresses, for tests, benchmarks and the real-cluster harness.
    KubeletSim(Box<KubeletSimArgs>),
}

/// Flags of the metrics pipeline (scraping kubelets).
#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// How often kubelets are scraped (minimum 10s).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub metric_resolution: Duration,
    /// The kubelet port used when --kubelet-use-node-status-port is off or the node reports none.
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// Use the port in the node's status.daemonEndpoints.kubeletEndpoint.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set, value_parser = parse_go_bool)]
    pub kubelet_use_node_status_port: bool,
    /// Node address types to use, in priority order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "Hostname,InternalDNS,InternalIP,ExternalDNS,ExternalIP"
    )]
    pub kubelet_preferred_address_types: Vec<String>,
    /// Timeout of one kubelet request (default 10s, or 90% of a shorter --metric-resolution).
    #[arg(long, value_parser = parse_duration)]
    pub kubelet_request_timeout: Option<Duration>,
    /// Do not verify kubelet serving certificates.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set, value_parser = parse_go_bool)]
    pub kubelet_insecure_tls: bool,
    /// CA bundle (PEM) for kubelet serving certificates (default: the cluster CA).
    #[arg(long, value_name = "FILE")]
    pub kubelet_certificate_authority: Option<PathBuf>,
    /// Client certificate (PEM) for kubelets.
    #[arg(long, value_name = "FILE", requires = "kubelet_client_key")]
    pub kubelet_client_certificate: Option<PathBuf>,
    /// Client key (PEM) for kubelets.
    #[arg(long, value_name = "FILE", requires = "kubelet_client_certificate")]
    pub kubelet_client_key: Option<PathBuf>,
    /// Scrape only nodes matching this label selector.
    #[arg(short = 'l', long, default_value = "")]
    pub node_selector: String,
    /// Most kubelets scraped at once.
    #[arg(long, default_value_t = 128)]
    pub kubelet_max_concurrency: usize,
    /// Largest kubelet response accepted, in bytes.
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    pub kubelet_max_response_bytes: usize,
    /// How long a node whose scrapes fail keeps serving its last values (0s: dropped at the
    /// first failure, as metrics-server does).
    #[arg(long, default_value = "0s", value_parser = parse_duration_or_zero)]
    pub metric_stale_tolerance: Duration,
    /// Ask kubelets for gzip-compressed responses (Accept-Encoding: gzip).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true, value_parser = parse_go_bool)]
    pub kubelet_gzip: bool,
    /// Bytes of events the metrics watch keeps for resuming and slow watchers (an estimate),
    /// beyond its newest 2 ticks; at most 16 ticks in any case. 0: no byte bound.
    #[arg(long, default_value_t = crate::groups::metrics_watch::HISTORY_BYTES)]
    pub watch_history_bytes: usize,
}

impl MetricsArgs {
    /// The kubelet request timeout: the flag, else 10s capped at 90% of the resolution.
    pub fn request_timeout(&self) -> Duration {
        self.kubelet_request_timeout
            .unwrap_or_else(|| Duration::from_secs(10).min(self.metric_resolution.mul_f64(0.9)))
    }

    /// Cross-flag checks, as metrics-server does them.
    pub fn validate(&self, minimum_resolution: Duration) -> Result<(), String> {
        if self.kubelet_insecure_tls && self.kubelet_certificate_authority.is_some() {
            return Err(
                "Cannot use both --kubelet-certificate-authority and --kubelet-insecure-tls".into(),
            );
        }
        if self.metric_resolution < minimum_resolution {
            return Err(format!(
                "--metric-resolution must be at least {}",
                humantime::format_duration(minimum_resolution)
            ));
        }
        if self.metric_resolution.mul_f64(0.9) < self.request_timeout() {
            return Err(format!(
                "--kubelet-request-timeout ({}) must be at most 90% of --metric-resolution ({})",
                humantime::format_duration(self.request_timeout()),
                humantime::format_duration(self.metric_resolution)
            ));
        }
        crate::api::label_selector::LabelSelector::parse(&self.node_selector)
            .map_err(|e| format!("--node-selector: {e}"))?;
        Ok(())
    }
}

/// Flags of `kubelet-sim`.
#[derive(Debug, Clone, Args)]
pub struct KubeletSimArgs {
    /// Number of simulated nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Pods per node.
    #[arg(long, default_value_t = 10)]
    pub pods_per_node: usize,
    /// Containers per pod.
    #[arg(long, default_value_t = 2)]
    pub containers_per_pod: usize,
    /// Address of the first node; the others follow.
    #[arg(long, default_value = "127.1.0.1")]
    pub first_address: std::net::Ipv4Addr,
    /// Kubelet port on every node address.
    #[arg(long, default_value_t = 10250)]
    pub port: u16,
    /// Write the Node and Pod objects (a v1 List, JSON) here.
    #[arg(long, value_name = "FILE")]
    pub objects_out: Option<PathBuf>,
    /// Write the CA (PEM) of the kubelets' serving certificates here.
    #[arg(long, value_name = "FILE")]
    pub ca_out: Option<PathBuf>,
    /// Require this bearer token, as kubelets do.
    #[arg(long)]
    pub token: Option<String>,
    /// Share of containers, in percent (0..=100), whose CPU counter never moves (it stays at a
    /// small non-zero value, as a real idle container's does).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub idle_percent: u8,
    /// Namespaces the deployments spread over: `default`, `team-a`, `team-b`, then
    /// `team-3`, `team-4`… (at least 1).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    pub namespaces: u16,
    /// Deployment sizes `MIN-MAX` (pods): many deployments of sizes drawn from that range
    /// (the HPA's targets: hundreds of deployments of 5 to 50 pods) instead of one
    /// deployment per (namespace, app) sharing the pods equally.
    #[arg(long, value_name = "MIN-MAX", value_parser = parse_range)]
    pub deployment_pods: Option<(usize, usize)>,
    /// Node indices (0-based) whose kubelet answers every request after `--slow-delay`.
    #[arg(long, value_delimiter = ',')]
    pub slow_nodes: Vec<usize>,
    /// Delay of the `--slow-nodes` kubelets.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub slow_delay: Duration,
    /// Node indices (0-based) whose kubelet answers `/metrics/resource` with 500.
    #[arg(long, value_delimiter = ',')]
    pub failing_nodes: Vec<usize>,
    /// Write the kubelet requests received so far (all nodes, one number) to this file
    /// every 100 ms (replaced atomically), for harnesses that count requests per cycle.
    #[arg(long, value_name = "FILE")]
    pub requests_out: Option<PathBuf>,
    /// How usage moves over time: `constant` (exact, time-independent figures, as the
    /// harnesses validate) or `wave` (every container's CPU and memory follow a smooth wave).
    #[arg(long, value_enum, default_value_t = crate::sim::UsageModel::Constant)]
    pub usage: crate::sim::UsageModel,
    /// Serve the control endpoint (plain HTTP, add/re-size/remove pods at run time; see
    /// `sim::control`) on this loopback address, e.g. `127.0.0.1:18080`.
    #[arg(long, value_name = "ADDR:PORT")]
    pub control_address: Option<std::net::SocketAddr>,
    /// Log verbosity.
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    pub verbosity: u8,
}

/// Parses `MIN-MAX` (two positive integers, MIN <= MAX).
fn parse_range(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("expected MIN-MAX, got {s:?}"))?;
    let (a, b): (usize, usize) = (
        a.trim().parse().map_err(|e| format!("{s:?}: {e}"))?,
        b.trim().parse().map_err(|e| format!("{s:?}: {e}"))?,
    );
    if a == 0 || a > b {
        return Err(format!("{s:?}: need 1 <= MIN <= MAX"));
    }
    Ok((a, b))
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags shared by every mode.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Log verbosity (0-10, as klog's -v: 0-1 info, 2-3 debug, 4+ trace).
    #[arg(short = 'v', long = "v", default_value_t = 0, global = true)]
    pub verbosity: u8,
    /// Log format (`--logging-format` as in metrics-server).
    #[arg(long, alias = "logging-format", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// A YAML or JSON list of DataRecords to serve: the shorthand for a sources config
    /// with one file source (default: the lab's three records plus computed records).
    #[arg(long, value_name = "FILE", conflicts_with = "sources_config")]
    pub records_file: Option<PathBuf>,
    /// A YAML file listing the DataRecord sources in order (file, postgres,
    /// postgresQuery, computed) and their PostgreSQL connections; see docs/datarecords.md.
    #[arg(long, value_name = "FILE")]
    pub sources_config: Option<PathBuf>,
    /// How often record sources are re-read.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub records_refresh_interval: Duration,
    /// Minimum TLS version: VersionTLS12 or VersionTLS13.
    #[arg(long, default_value = "VersionTLS12")]
    pub tls_min_version: MinTlsVersion,
    /// Serve /debug/pprof/ (a CPU profile in pprof format, cmdline), authorized like any
    /// other path; on by default, as metrics-server's `--profiling`.
    #[arg(long, default_value_t = true, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set, value_parser = parse_go_bool)]
    pub profiling: bool,
}

/// Flags of `serve` (the default mode).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The port on which to serve HTTPS.
    #[arg(long, default_value_t = 10250)]
    pub secure_port: u16,
    /// The IP address on which to listen.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// Directory of the generated self-signed certificate (ignored with --tls-cert-file).
    #[arg(long, default_value = "apiserver.local.config/certificates")]
    pub cert_dir: PathBuf,
    /// Serving certificate (PEM, chain allowed); reloaded when the file changes.
    #[arg(long, requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// Serving private key (PEM).
    #[arg(long, requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// Extra serving certificate chosen by SNI name: `certfile,keyfile` (serves the
    /// certificate's CN and DNS SANs) or `certfile,keyfile:name1,*.name2` (serves the
    /// given names); repeat the flag for several. Reloaded when the files change.
    #[arg(long = "tls-sni-cert-key", value_name = "CERT,KEY[:NAMES]", action = clap::ArgAction::Append)]
    pub tls_sni_cert_key: Vec<crate::server::sni::NamedCertKey>,
    /// Audit logging (`--audit-policy-file`, `--audit-log-path`,
    /// `--audit-webhook-config-file`).
    #[command(flatten)]
    pub audit: crate::server::audit::AuditArgs,
    /// kubeconfig for talking to kube-apiserver (default: in-cluster service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Non-resource paths allowed without authorization.
    #[arg(long, value_delimiter = ',', default_value = "/healthz,/readyz,/livez")]
    pub authorization_always_allow_paths: Vec<String>,
    /// Metrics pipeline flags.
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// Extra DNS names or IPs for the self-signed serving certificate (the Service
    /// names from SERVICE_NAME/POD_NAMESPACE are added automatically).
    #[arg(long, value_delimiter = ',')]
    pub tls_sans: Vec<String>,
    /// Client-certificate and front-proxy trust.
    #[command(flatten)]
    pub cert_auth: CertAuthArgs,
    /// TokenReview / SubjectAccessReview delegation.
    #[command(flatten)]
    pub delegation: DelegationArgs,
    /// DataRecords from a PostgreSQL table.
    #[command(flatten)]
    pub postgres: PostgresArgs,
    /// Serving limits and shutdown.
    #[command(flatten)]
    pub serving: crate::server::options::ServingOptions,
    /// Sharded scraping across replicas (`docs/ha.md`).
    #[command(flatten)]
    pub ha: crate::ha::args::HaArgs,
    /// Shared flags.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Flags of `demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// The port on which to serve HTTPS.
    #[arg(long, default_value_t = 8443)]
    pub secure_port: u16,
    /// The IP address on which to listen (loopback by default).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: IpAddr,
    /// Where to write the kubeconfig for kubectl.
    #[arg(long, default_value = "./kubedojo-demo.kubeconfig")]
    pub write_kubeconfig: PathBuf,
    /// The demo admin's bearer token (default: random).
    #[arg(long, env = "KUBEDOJO_DEMO_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Number of simulated nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Simulated pods per node.
    #[arg(long, default_value_t = 10)]
    pub pods_per_node: usize,
    /// How often the simulated kubelets are scraped (demo allows down to 1s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub metric_resolution: Duration,
    /// Address of the first simulated kubelet (each node gets the next loopback address).
    #[arg(long, default_value = "127.1.0.1")]
    pub sim_first_address: std::net::Ipv4Addr,
    /// Port of the simulated kubelets (0 = any free port per node).
    #[arg(long, default_value_t = 0)]
    pub sim_port: u16,
    /// How the simulated usage moves: `wave` (CPU and memory of every container vary
    /// smoothly, so `kubectl top` and the computed records change between scrapes) or
    /// `constant`.
    #[arg(long, value_enum, default_value_t = crate::sim::UsageModel::Wave)]
    pub sim_usage: crate::sim::UsageModel,
    /// Client-certificate and front-proxy trust (try the aggregator's path locally).
    #[command(flatten)]
    pub cert_auth: CertAuthArgs,
    /// DataRecords from a PostgreSQL table.
    #[command(flatten)]
    pub postgres: PostgresArgs,
    /// Serving limits and shutdown.
    #[command(flatten)]
    pub serving: crate::server::options::ServingOptions,
    /// Audit logging, as the server's (`--audit-policy-file`, `--audit-log-path`,
    /// `--audit-webhook-config-file`).
    #[command(flatten)]
    pub audit: crate::server::audit::AuditArgs,
    /// Replicas sharing the scraping (`docs/ha.md`).
    #[command(flatten)]
    pub ha: crate::ha::args::DemoHaArgs,
    /// Shared flags.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// The PostgreSQL table source (`kind: postgres` of the sources configuration, as
/// flags): with a DSN, DataRecords are the rows of `<schema>.datarecords`.
#[derive(Debug, Clone, Default, Args)]
pub struct PostgresArgs {
    /// File holding the libpq DSN or postgres:// URL of the DataRecords table source
    /// (a secret: read from a file or $KUBEDOJO_PG_DSN, never from a flag).
    #[arg(long, value_name = "FILE")]
    pub postgres_dsn_file: Option<PathBuf>,
    /// Schema of the DataRecords table and its change log.
    #[arg(long, default_value = "kubedojo")]
    pub postgres_schema: String,
    /// Create or update the schema (idempotent) at start-up.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true, value_parser = parse_go_bool)]
    pub postgres_migrate: bool,
    /// Pooled query connections (the one listening connection is extra).
    #[arg(long, default_value_t = 8)]
    pub postgres_max_connections: usize,
    /// Connect timeout (also the longest wait for a pooled connection).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub postgres_connect_timeout: Duration,
    /// Statement timeout of every query.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub postgres_statement_timeout: Duration,
    /// TLS to the database: disable, require (encrypted, not verified) or verify-full.
    #[arg(long, default_value = "disable", value_parser = ["disable", "require", "verify-full"])]
    pub postgres_tls_mode: String,
    /// CA bundle for --postgres-tls-mode=verify-full.
    #[arg(long, value_name = "FILE")]
    pub postgres_ca_file: Option<PathBuf>,
    /// Changes kept in the change log (older resourceVersions get 410 Expired).
    #[arg(long, default_value_t = 100_000)]
    pub postgres_keep_changes: i64,
}

/// Parses a boolean flag value as Go's `strconv.ParseBool` (pflag): `1 t T TRUE true
/// True` and `0 f F FALSE false False`.
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("invalid boolean {s:?}: use true or false")),
    }
}

/// Parses a duration like [`parse_duration`], accepting `0` and `0s`.
pub fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// Parses `15s`, `1m30s`, `500ms` (humantime), rejecting zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))?;
    if d.is_zero() {
        return Err(format!("invalid duration {s:?}: must be greater than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_subcommand_means_serve_with_metrics_server_names() {
        let cli = Cli::try_parse_from([
            "kubedojo-data-api",
            "--secure-port=4443",
            "--cert-dir=/tmp",
            "-v",
            "2",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.secure_port, 4443);
        assert_eq!(cli.serve.cert_dir, PathBuf::from("/tmp"));
        assert_eq!(cli.serve.common.verbosity, 2);
    }

    #[test]
    fn request_timeout_follows_a_short_resolution() {
        let cli = Cli::try_parse_from(["kubedojo-data-api", "--metric-resolution=10s"]).unwrap();
        assert_eq!(cli.serve.metrics.request_timeout(), Duration::from_secs(9));
        assert!(cli.serve.metrics.validate(Duration::from_secs(10)).is_ok());
        let cli = Cli::try_parse_from(["kubedojo-data-api"]).unwrap();
        assert_eq!(cli.serve.metrics.request_timeout(), Duration::from_secs(10));
        let cli = Cli::try_parse_from([
            "kubedojo-data-api",
            "--metric-resolution=10s",
            "--kubelet-request-timeout=10s",
        ])
        .unwrap();
        assert!(
            cli.serve
                .metrics
                .validate(Duration::from_secs(10))
                .unwrap_err()
                .contains("90%")
        );
        let cli = Cli::try_parse_from(["kubedojo-data-api", "--metric-resolution=5s"]).unwrap();
        assert!(
            cli.serve
                .metrics
                .validate(Duration::from_secs(10))
                .unwrap_err()
                .contains("at least 10s")
        );
    }

    #[test]
    fn kubelet_flags_default_to_metrics_server() {
        let cli = Cli::try_parse_from(["kubedojo-data-api"]).unwrap();
        let m = &cli.serve.metrics;
        assert_eq!(
            m.kubelet_preferred_address_types,
            [
                "Hostname",
                "InternalDNS",
                "InternalIP",
                "ExternalDNS",
                "ExternalIP"
            ]
        );
        assert_eq!(m.metric_stale_tolerance, Duration::ZERO);
        assert!(!m.kubelet_gzip);
        let cli = Cli::try_parse_from([
            "kubedojo-data-api",
            "--metric-stale-tolerance=45s",
            "--kubelet-gzip",
        ])
        .unwrap();
        assert_eq!(
            cli.serve.metrics.metric_stale_tolerance,
            Duration::from_secs(45)
        );
        assert!(cli.serve.metrics.kubelet_gzip);
        for (arg, want) in [
            ("--kubelet-gzip=true", true),
            ("--kubelet-gzip=false", false),
        ] {
            let cli = Cli::try_parse_from(["kubedojo-data-api", arg]).unwrap();
            assert_eq!(cli.serve.metrics.kubelet_gzip, want, "{arg}");
        }
        let cli = Cli::try_parse_from(["kubedojo-data-api", "--metric-stale-tolerance=0"]).unwrap();
        assert_eq!(cli.serve.metrics.metric_stale_tolerance, Duration::ZERO);
        assert!(Cli::try_parse_from(["kubedojo-data-api", "--metric-stale-tolerance=x"]).is_err());
    }

    #[test]
    fn demo_defaults() {
        let cli = Cli::try_parse_from(["kubedojo-data-api", "demo"]).unwrap();
        let Some(Command::Demo(d)) = cli.command else {
            panic!("demo expected")
        };
        assert_eq!(d.secure_port, 8443);
        assert_eq!(d.bind_address.to_string(), "127.0.0.1");
    }

    #[test]
    fn bad_flags_are_readable_errors() {
        let e = Cli::try_parse_from(["kubedojo-data-api", "--secure-port=x"]).unwrap_err();
        assert!(e.to_string().contains("--secure-port"));
        let e = Cli::try_parse_from(["kubedojo-data-api", "--tls-cert-file=/a"]).unwrap_err();
        assert!(e.to_string().contains("--tls-private-key-file"), "{e}");
        let e = Cli::try_parse_from(["kubedojo-data-api", "--records-refresh-interval=0s"])
            .unwrap_err();
        assert!(e.to_string().contains("greater than zero"), "{e}");
        let e = Cli::try_parse_from(["kubedojo-data-api", "--tls-min-version=VersionTLS10"])
            .unwrap_err();
        assert!(e.to_string().contains("not supported"), "{e}");
    }
}
