//! The flags of sharded scraping (`docs/ha.md`), flattened into `serve` and `demo`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::config::parse_duration;

/// Sharding and peer-exchange flags. Sharding is off while `--peer-port` is 0.
#[derive(Debug, Clone, Args)]
pub struct HaArgs {
    /// Port of the peer listener that serves this replica's shard to the other replicas;
    /// 0 (the default) runs alone, scraping every node, exactly like a single replica.
    #[arg(long, default_value_t = 0)]
    pub peer_port: u16,
    /// Replicas that scrape each node (R). 2 doubles the kubelet load but leaves no gap at all
    /// when a replica dies; more than the replica count means every replica scrapes every node.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub scrape_replication: u16,
    /// Address the other replicas reach this one's peer listener at (default: $POD_IP).
    #[arg(long, env = "POD_IP")]
    pub peer_advertise_address: Option<String>,
    /// Namespace of the member Leases (default: $POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE")]
    pub peer_lease_namespace: Option<String>,
    /// Prefix of the member Lease names.
    #[arg(long, default_value = "kubedojo-data-api")]
    pub peer_lease_prefix: String,
    /// Lease duration of a member (renewed every third of it).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub peer_lease_duration: Duration,
    /// Deadline of one peer fetch (default: a quarter of --metric-resolution).
    #[arg(long, value_parser = parse_duration)]
    pub peer_timeout: Option<Duration>,
    /// Largest shard accepted from a peer.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    pub peer_max_response_bytes: usize,
    /// The ServiceAccount token presented to peers and whose subject they must match.
    #[arg(
        long,
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )]
    pub peer_token_file: PathBuf,
}

impl HaArgs {
    /// The peer fetch deadline for `resolution`.
    pub fn timeout(&self, resolution: Duration) -> Duration {
        self.peer_timeout.unwrap_or(resolution / 4)
    }

    /// Checks the flags against the resolution.
    pub fn validate(&self, resolution: Duration) -> Result<(), String> {
        if self.peer_port == 0 {
            return Ok(());
        }
        if self.timeout(resolution) * 2 > resolution {
            return Err("--peer-timeout must be at most half of --metric-resolution".into());
        }
        if self.peer_lease_duration < Duration::from_secs(1) {
            return Err("--peer-lease-duration must be at least 1s".into());
        }
        Ok(())
    }
}

impl Default for HaArgs {
    fn default() -> Self {
        HaArgs {
            peer_port: 0,
            scrape_replication: 1,
            peer_advertise_address: None,
            peer_lease_namespace: None,
            peer_lease_prefix: "kubedojo-data-api".into(),
            peer_lease_duration: Duration::from_secs(15),
            peer_timeout: None,
            peer_max_response_bytes: 256 * 1024 * 1024,
            peer_token_file: PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        }
    }
}

/// `demo`'s replica flags.
#[derive(Debug, Clone, Args, Default)]
pub struct DemoHaArgs {
    /// Replicas to start on loopback, sharing the simulated kubelets (each on the next port).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub replicas: u16,
    /// Replicas that scrape each simulated node (R).
    #[arg(long = "scrape-replication", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub scrape_replication: u16,
}
