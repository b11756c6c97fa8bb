//! Starting the sharding pieces: in a cluster (Lease membership, TokenReview-checked peers)
//! and on loopback for `demo --replicas` and tests (a fixed member list, a shared secret).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::args::HaArgs;
use super::coordinator::{Coordinator, PeerStats};
use super::lease::{self, LeaseConfig};
use super::membership::{Member, MemberSet, Membership};
use super::peer::{self, PeerClient, PeerIdentity, PeerToken};
use super::peer_auth::{PeerAuthenticator, ServiceAccountPeers, SharedSecret, token_subject};
use super::shard::OwnShard;

/// The running sharding pieces of one replica.
pub struct Started {
    /// Hand this to the scraper (`Scraper::with_ha`).
    pub coordinator: Arc<Coordinator>,
    /// The membership this replica sees.
    pub membership: Arc<Membership>,
    /// Listener and membership tasks (they stop with the shutdown token).
    pub tasks: Vec<JoinHandle<()>>,
}

/// In a cluster: Lease membership in the release's namespace, peers authenticated by their
/// ServiceAccount token (TokenReview) and this replica's own identity; the exchange counts into
/// `stats`. `None` when `--peer-port` is 0.
pub async fn start_in_cluster(
    args: &HaArgs,
    bind: IpAddr,
    resolution: Duration,
    client: kube::Client,
    stats: PeerStats,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<Started>> {
    if args.peer_port == 0 {
        return Ok(None);
    }
    let id = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .context("--peer-port needs POD_NAME (the downward API's metadata.name)")?;
    let host = args
        .peer_advertise_address
        .clone()
        .filter(|s| !s.is_empty())
        .context("--peer-port needs --peer-advertise-address or POD_IP")?;
    let namespace = args
        .peer_lease_namespace
        .clone()
        .filter(|s| !s.is_empty())
        .context("--peer-port needs --peer-lease-namespace or POD_NAMESPACE")?;
    let token = std::fs::read_to_string(&args.peer_token_file)
        .with_context(|| format!("reading {}", args.peer_token_file.display()))?;
    let identity_name = token_subject(&token).with_context(|| {
        format!(
            "{} is not a ServiceAccount token (no sub claim)",
            args.peer_token_file.display()
        )
    })?;
    let reviewer = Arc::new(crate::auth::token_review::KubeTokenReviewer::new(
        client.clone(),
        Vec::new(),
    ));
    let authenticator: Arc<dyn PeerAuthenticator> = Arc::new(ServiceAccountPeers {
        authenticator: Arc::new(crate::auth::TokenReviewAuthenticator::new(
            reviewer,
            Duration::from_secs(60),
        )),
        identity: identity_name,
    });
    let listener = TcpListener::bind((bind, args.peer_port))
        .await
        .with_context(|| format!("cannot listen on {bind}:{} (peers)", args.peer_port))?;
    let identity = PeerIdentity::generate().context("generating the peer certificate")?;
    let address = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{}", args.peer_port)
    } else {
        format!("{host}:{}", args.peer_port)
    };
    let me = Member {
        id,
        address,
        cert_sha256: identity.cert_sha256,
    };
    let membership = Membership::new(MemberSet::new(me.clone(), []));
    let shard = Arc::new(OwnShard::counting(stats.bytes_served.clone()));
    let keep_alive = peer::KeepAlive::for_resolution(resolution);
    let client_side = PeerClient::new(
        PeerToken::File(args.peer_token_file.clone()),
        args.timeout(resolution),
        args.peer_max_response_bytes,
        keep_alive.client_idle,
    );
    let coordinator = Coordinator::new(
        membership.clone(),
        args.scrape_replication as usize,
        shard.clone(),
        client_side,
        resolution / 2,
        stats,
    );
    let tasks = vec![
        tokio::spawn(peer::serve(
            listener,
            identity,
            authenticator,
            shard,
            keep_alive.server_idle,
            shutdown.clone(),
        )),
        tokio::spawn(lease::run(
            client,
            LeaseConfig {
                namespace,
                prefix: args.peer_lease_prefix.clone(),
                me,
                duration: args.peer_lease_duration,
            },
            membership.clone(),
            shutdown,
        )),
    ];
    tracing::info!(
        replication = args.scrape_replication,
        "sharded scraping on; peers on port {}",
        args.peer_port
    );
    Ok(Some(Started {
        coordinator,
        membership,
        tasks,
    }))
}

/// A loopback replica's peer listener, bound before the member list is known.
pub struct LocalPeer {
    /// Its member record.
    pub member: Member,
    listener: TcpListener,
    identity: PeerIdentity,
}

impl LocalPeer {
    /// Binds `ip:0` and generates a certificate for replica `id`.
    pub async fn bind(id: &str, ip: IpAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((ip, 0)).await?;
        let identity = PeerIdentity::generate()?;
        Ok(LocalPeer {
            member: Member {
                id: id.to_string(),
                address: listener.local_addr()?.to_string(),
                cert_sha256: identity.cert_sha256,
            },
            listener,
            identity,
        })
    }

    /// Starts serving with a fixed member list and a shared secret, counting into `stats`.
    pub fn start(
        self,
        members: &[Member],
        replication: usize,
        secret: &str,
        resolution: Duration,
        stats: PeerStats,
        shutdown: CancellationToken,
    ) -> Started {
        let membership =
            Membership::new(MemberSet::new(self.member.clone(), members.iter().cloned()));
        let shard = Arc::new(OwnShard::counting(stats.bytes_served.clone()));
        let keep_alive = peer::KeepAlive::for_resolution(resolution);
        let coordinator = Coordinator::new(
            membership.clone(),
            replication,
            shard.clone(),
            PeerClient::new(
                PeerToken::Fixed(secret.to_string()),
                resolution / 4,
                256 * 1024 * 1024,
                keep_alive.client_idle,
            ),
            resolution / 2,
            stats,
        );
        let task = tokio::spawn(peer::serve(
            self.listener,
            self.identity,
            Arc::new(SharedSecret(secret.to_string())),
            shard,
            keep_alive.server_idle,
            shutdown,
        ));
        Started {
            coordinator,
            membership,
            tasks: vec![task],
        }
    }
}
