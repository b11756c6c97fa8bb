//! Assembles delegated authentication and authorization for serve mode: trust from
//! flags and the ConfigMap, the authenticator chain (front proxy, client
//! certificate, TokenReview) and the authorizer chain (`system:masters`,
//! always-allowed paths, SubjectAccessReview).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::configmap::{REFRESH_INTERVAL, TrustSource};
use super::options::{CertAuthArgs, DelegationArgs};
use super::review::Retry;
use super::sar::KubeAccessReviewer;
use super::token_review::KubeTokenReviewer;
use super::trust::TrustStore;
use super::{
    AlwaysAllowGroups, AlwaysAllowPaths, AuthChain, Authenticator, Authorizer,
    ClientCertAuthenticator, FrontProxyAuthenticator, MASTERS_GROUP, SubjectAccessReviewAuthorizer,
    TokenReviewAuthenticator,
};

/// A kube client from a kubeconfig file, or inferred (in-cluster service account,
/// else `$KUBECONFIG`/`~/.kube/config`).
pub async fn kube_client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let config = kube_config(kubeconfig).await?;
    kube::Client::try_from(config).context("creating the Kubernetes client")
}

/// The kube configuration from a kubeconfig file, or inferred.
pub async fn kube_config(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Config> {
    Ok(match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig given and no in-cluster configuration found")?,
    })
}

/// The running delegated auth: the chain for the app, the trust store whose
/// verifier goes into the TLS configuration, and the refresh task.
pub struct Delegated {
    /// The live trust settings.
    pub trust: Arc<TrustStore>,
    /// The authentication and authorization chain.
    pub chain: AuthChain,
    /// Keeps the trust settings current; abort it on shutdown.
    pub refresh: tokio::task::JoinHandle<()>,
}

/// Knobs for [`start_with_clients`] that tests change.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// How often trust settings are re-read.
    pub refresh_interval: Duration,
    /// Retry policy of review calls.
    pub retry: Retry,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            refresh_interval: REFRESH_INTERVAL,
            retry: Retry::default(),
        }
    }
}

/// Starts delegated auth, creating kube clients from the kubeconfig flags
/// (`fallback_kubeconfig` is `--kubeconfig`).
pub async fn start(
    delegation: &DelegationArgs,
    certs: &CertAuthArgs,
    fallback_kubeconfig: Option<&Path>,
    always_allow_paths: Vec<String>,
) -> anyhow::Result<Delegated> {
    let authn = kube_client(
        delegation
            .authentication_kubeconfig
            .as_deref()
            .or(fallback_kubeconfig),
    )
    .await
    .context("authentication client")?;
    let authz = kube_client(
        delegation
            .authorization_kubeconfig
            .as_deref()
            .or(fallback_kubeconfig),
    )
    .await
    .context("authorization client")?;
    start_with_clients(
        delegation,
        certs,
        authn,
        authz,
        always_allow_paths,
        Tuning::default(),
    )
    .await
}

/// Starts delegated auth with the given clients.
pub async fn start_with_clients(
    delegation: &DelegationArgs,
    certs: &CertAuthArgs,
    authn: kube::Client,
    authz: kube::Client,
    always_allow_paths: Vec<String>,
    tuning: Tuning,
) -> anyhow::Result<Delegated> {
    let source = if delegation.authentication_skip_lookup {
        TrustSource::flags_only(certs.trust_flags())
    } else {
        TrustSource::with_configmap(certs.trust_flags(), authn.clone())
    };
    let (initial, cm) = source
        .initial(delegation.authentication_tolerate_lookup_failure)
        .await
        .map_err(anyhow::Error::msg)
        .context("authentication configuration")?;
    let trust = TrustStore::new(initial);
    let refresh = tokio::spawn(source.run(trust.clone(), cm, tuning.refresh_interval));
    let authenticators: Vec<Arc<dyn Authenticator>> = vec![
        Arc::new(FrontProxyAuthenticator::new(trust.clone())),
        Arc::new(ClientCertAuthenticator::new(trust.clone())),
        Arc::new(
            TokenReviewAuthenticator::new(
                Arc::new(KubeTokenReviewer::new(authn, Vec::new())),
                delegation.authentication_token_webhook_cache_ttl,
            )
            .with_retry(tuning.retry.clone()),
        ),
    ];
    let authorizers: Vec<Arc<dyn Authorizer>> = vec![
        Arc::new(AlwaysAllowGroups(vec![MASTERS_GROUP.into()])),
        Arc::new(AlwaysAllowPaths(always_allow_paths)),
        Arc::new(
            SubjectAccessReviewAuthorizer::new(
                Arc::new(KubeAccessReviewer::new(authz)),
                delegation.authorization_webhook_cache_authorized_ttl,
                delegation.authorization_webhook_cache_unauthorized_ttl,
            )
            .with_retry(tuning.retry),
        ),
    ];
    Ok(Delegated {
        trust,
        chain: AuthChain::new(authenticators, authorizers, true),
        refresh,
    })
}
