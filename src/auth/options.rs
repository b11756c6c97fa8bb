//! Authentication and authorization flags, named and defaulted as metrics-server's
//! (k8s.io/apiserver's delegating options).

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args};

use super::trust::TrustFlags;

/// Parses a duration such as `10s`; zero is allowed (it disables a cache).
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// Client-certificate and front-proxy trust flags (serve and demo).
#[derive(Debug, Clone, Args, PartialEq, Eq)]
pub struct CertAuthArgs {
    /// CA bundle for client certificates (user = CN, groups = O); overrides the
    /// ConfigMap's `client-ca-file`.
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// CA bundle of the front proxy's client certificate; when set, every
    /// requestheader flag overrides the ConfigMap.
    #[arg(long, value_name = "FILE")]
    pub requestheader_client_ca_file: Option<PathBuf>,
    /// Common names allowed for the front proxy's certificate (empty: any).
    #[arg(long, value_delimiter = ',')]
    pub requestheader_allowed_names: Vec<String>,
    /// Headers carrying the user name.
    #[arg(long, value_delimiter = ',', default_value = "x-remote-user")]
    pub requestheader_username_headers: Vec<String>,
    /// Headers carrying the user's uid (none by default).
    #[arg(long, value_delimiter = ',')]
    pub requestheader_uid_headers: Vec<String>,
    /// Headers carrying groups.
    #[arg(long, value_delimiter = ',', default_value = "x-remote-group")]
    pub requestheader_group_headers: Vec<String>,
    /// Prefixes of headers carrying extra attributes.
    #[arg(long, value_delimiter = ',', default_value = "x-remote-extra-")]
    pub requestheader_extra_headers_prefix: Vec<String>,
}

impl Default for CertAuthArgs {
    fn default() -> Self {
        CertAuthArgs {
            client_ca_file: None,
            requestheader_client_ca_file: None,
            requestheader_allowed_names: Vec::new(),
            requestheader_username_headers: vec!["x-remote-user".into()],
            requestheader_uid_headers: Vec::new(),
            requestheader_group_headers: vec!["x-remote-group".into()],
            requestheader_extra_headers_prefix: vec!["x-remote-extra-".into()],
        }
    }
}

impl CertAuthArgs {
    /// The flags as trust settings.
    pub fn trust_flags(&self) -> TrustFlags {
        TrustFlags {
            client_ca_file: self.client_ca_file.clone(),
            requestheader_client_ca_file: self.requestheader_client_ca_file.clone(),
            requestheader_allowed_names: self.requestheader_allowed_names.clone(),
            requestheader_username_headers: self.requestheader_username_headers.clone(),
            requestheader_uid_headers: self.requestheader_uid_headers.clone(),
            requestheader_group_headers: self.requestheader_group_headers.clone(),
            requestheader_extra_headers_prefix: self.requestheader_extra_headers_prefix.clone(),
        }
    }
}

/// Delegation to kube-apiserver (serve mode only).
#[derive(Debug, Clone, Args, PartialEq, Eq)]
pub struct DelegationArgs {
    /// kubeconfig for TokenReview and the authentication ConfigMap (default:
    /// --kubeconfig, else in-cluster).
    #[arg(long, value_name = "FILE")]
    pub authentication_kubeconfig: Option<PathBuf>,
    /// kubeconfig for SubjectAccessReview (default: --kubeconfig, else in-cluster).
    #[arg(long, value_name = "FILE")]
    pub authorization_kubeconfig: Option<PathBuf>,
    /// Do not read the authentication ConfigMap from the cluster.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, value_parser = crate::config::parse_go_bool)]
    pub authentication_skip_lookup: bool,
    /// Start even if the authentication ConfigMap cannot be read.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, value_parser = crate::config::parse_go_bool)]
    pub authentication_tolerate_lookup_failure: bool,
    /// How long TokenReview answers are cached (0 disables).
    #[arg(long, default_value = "10s", value_parser = parse_ttl)]
    pub authentication_token_webhook_cache_ttl: Duration,
    /// How long allowed SubjectAccessReview answers are cached (0 disables).
    #[arg(long, default_value = "10s", value_parser = parse_ttl)]
    pub authorization_webhook_cache_authorized_ttl: Duration,
    /// How long denied SubjectAccessReview answers are cached (0 disables).
    #[arg(long, default_value = "10s", value_parser = parse_ttl)]
    pub authorization_webhook_cache_unauthorized_ttl: Duration,
}

impl Default for DelegationArgs {
    fn default() -> Self {
        DelegationArgs {
            authentication_kubeconfig: None,
            authorization_kubeconfig: None,
            authentication_skip_lookup: false,
            authentication_tolerate_lookup_failure: false,
            authentication_token_webhook_cache_ttl: Duration::from_secs(10),
            authorization_webhook_cache_authorized_ttl: Duration::from_secs(10),
            authorization_webhook_cache_unauthorized_ttl: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        certs: CertAuthArgs,
        #[command(flatten)]
        delegation: DelegationArgs,
    }

    #[test]
    fn defaults_match_upstream_and_default_impls() {
        let t = T::try_parse_from(["x"]).unwrap();
        assert_eq!(t.certs, CertAuthArgs::default());
        assert_eq!(t.delegation, DelegationArgs::default());
        let t = T::try_parse_from([
            "x",
            "--requestheader-allowed-names=front-proxy-client,aggregator",
            "--authentication-skip-lookup",
            "--authentication-tolerate-lookup-failure=true",
            "--authentication-token-webhook-cache-ttl=0s",
        ])
        .unwrap();
        assert_eq!(
            t.certs.requestheader_allowed_names,
            vec!["front-proxy-client", "aggregator"]
        );
        assert!(t.delegation.authentication_skip_lookup);
        assert!(t.delegation.authentication_tolerate_lookup_failure);
        assert!(
            t.delegation
                .authentication_token_webhook_cache_ttl
                .is_zero()
        );
    }
}
