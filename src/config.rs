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
#[command(args_conflicts_with_subcommands = true)]
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
    Demo(DemoArgs),
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
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// A YAML or JSON list of DataRecords to serve (default: the three built-in lab records).
    #[arg(long, value_name = "FILE")]
    pub records_file: Option<PathBuf>,
    /// How often record sources are re-read.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub records_refresh_interval: Duration,
    /// Minimum TLS version: VersionTLS12 or VersionTLS13.
    #[arg(long, default_value = "VersionTLS12")]
    pub tls_min_version: MinTlsVersion,
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
    /// kubeconfig for talking to kube-apiserver (default: in-cluster service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Non-resource paths allowed without authorization.
    #[arg(long, value_delimiter = ',', default_value = "/healthz,/readyz,/livez")]
    pub authorization_always_allow_paths: Vec<String>,
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
    /// Client-certificate and front-proxy trust (try the aggregator's path locally).
    #[command(flatten)]
    pub cert_auth: CertAuthArgs,
    /// Shared flags.
    #[command(flatten)]
    pub common: CommonArgs,
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
