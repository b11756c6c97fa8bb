//! Authentication and authorization, mirroring k8s.io/apiserver's delegating
//! chain: authenticators tried in order (a failed credential is 401, never
//! anonymous), then authorizers in order (first Allow or Deny wins).

#[cfg(feature = "server")]
mod authorizers;
#[cfg(feature = "server")]
pub mod cache;
pub mod client_cert;
#[cfg(feature = "server")]
pub mod configmap;
#[cfg(feature = "server")]
pub mod delegated;
#[cfg(feature = "server")]
mod forbidden;
pub mod front_proxy;
#[cfg(feature = "server")]
pub mod options;
#[cfg(feature = "server")]
pub mod review;
#[cfg(feature = "server")]
pub mod sar;
#[cfg(feature = "server")]
mod token;
#[cfg(feature = "server")]
pub mod token_review;
pub mod trust;
pub mod verifier;

#[cfg(feature = "server")]
pub use authorizers::{AlwaysAllowGroups, AlwaysAllowPaths, StaticUsers};
pub use client_cert::ClientCertAuthenticator;
#[cfg(feature = "server")]
pub use forbidden::forbidden;
pub use front_proxy::FrontProxyAuthenticator;
#[cfg(feature = "server")]
pub use sar::SubjectAccessReviewAuthorizer;
#[cfg(feature = "server")]
pub use token::StaticTokenAuthenticator;
#[cfg(feature = "server")]
pub use token_review::TokenReviewAuthenticator;
pub use trust::{TrustConfig, TrustStore};
pub use verifier::DynamicClientVerifier;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use http::{HeaderMap, HeaderName};
use rustls_pki_types::CertificateDer;

use crate::api::request_info::RequestInfo;

/// The group every authenticated user is given.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// The anonymous user.
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// The group of anonymous requests.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
/// Members of this group are allowed everything without a review.
pub const MASTERS_GROUP: &str = "system:masters";

/// Who made a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// Unique id, if known.
    pub uid: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The anonymous user.
    pub fn anonymous() -> Self {
        UserInfo {
            name: ANONYMOUS_USER.into(),
            groups: vec![UNAUTHENTICATED_GROUP.into()],
            ..UserInfo::default()
        }
    }

    /// Adds `system:authenticated` unless the user is anonymous or already has
    /// `system:authenticated` or `system:unauthenticated` (upstream's
    /// AuthenticatedGroupAdder).
    pub fn with_authenticated_group(mut self) -> Self {
        if self.name != ANONYMOUS_USER
            && !self
                .groups
                .iter()
                .any(|g| g == AUTHENTICATED_GROUP || g == UNAUTHENTICATED_GROUP)
        {
            self.groups.push(AUTHENTICATED_GROUP.into());
        }
        self
    }
}

/// What an authenticator sees of a request.
pub struct AuthRequest<'a> {
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// The client certificate chain presented in the TLS handshake, leaf first.
    pub peer_certificates: Option<&'a [CertificateDer<'static>]>,
}

/// The outcome of one authenticator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthnOutcome {
    /// The request carries valid credentials of this user.
    Authenticated(UserInfo),
    /// This authenticator found no credentials it handles.
    NoCredentials,
    /// Credentials were presented and are invalid: the request is refused (401).
    Failed(String),
}

/// Headers that carry identity and are removed once a request is authenticated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentityHeaders {
    /// Exact header names.
    pub names: Vec<HeaderName>,
    /// Lower-case name prefixes.
    pub prefixes: Vec<String>,
}

/// The identity headers always stripped (the standard front-proxy names).
pub const STANDARD_IDENTITY_HEADERS: [&str; 3] =
    ["x-remote-user", "x-remote-uid", "x-remote-group"];
/// The standard extra-header prefix, always stripped.
pub const STANDARD_EXTRA_PREFIX: &str = "x-remote-extra-";

/// One way of authenticating a request.
pub trait Authenticator: Send + Sync {
    /// Authenticates the request.
    fn authenticate<'a>(&'a self, req: &'a AuthRequest<'a>) -> BoxFuture<'a, AuthnOutcome>;

    /// Custom identity headers this authenticator reads (stripped after authentication).
    fn identity_headers(&self) -> IdentityHeaders {
        IdentityHeaders::default()
    }
}

/// An authorizer's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Denied, with an optional reason appended to the 403 message.
    Deny(String),
    /// No opinion: ask the next authorizer.
    NoOpinion,
}

/// One way of authorizing a request.
pub trait Authorizer: Send + Sync {
    /// Decides, or fails (a failure is a 500, never an allow).
    fn authorize<'a>(
        &'a self,
        user: &'a UserInfo,
        info: &'a RequestInfo,
    ) -> BoxFuture<'a, Result<Decision, String>>;
}

/// Why a request was not let through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// Bad credentials (401).
    Unauthorized(String),
    /// Not allowed (403) with the reason.
    Forbidden(String),
    /// The authorization check itself failed (500).
    Internal(String),
}

/// The authentication and authorization chain every request goes through.
#[derive(Clone)]
pub struct AuthChain {
    authenticators: Vec<Arc<dyn Authenticator>>,
    authorizers: Vec<Arc<dyn Authorizer>>,
    allow_anonymous: bool,
}

impl AuthChain {
    /// A chain of the given authenticators and authorizers.
    pub fn new(
        authenticators: Vec<Arc<dyn Authenticator>>,
        authorizers: Vec<Arc<dyn Authorizer>>,
        allow_anonymous: bool,
    ) -> Self {
        AuthChain {
            authenticators,
            authorizers,
            allow_anonymous,
        }
    }

    /// Runs the authenticators in order (upstream's union): the first that
    /// authenticates wins; when none does, any failed credential is a 401, and only a
    /// request with no credentials at all is anonymous.
    pub async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<UserInfo, AuthError> {
        let mut failures = Vec::new();
        for a in &self.authenticators {
            match a.authenticate(req).await {
                AuthnOutcome::Authenticated(user) => return Ok(user.with_authenticated_group()),
                AuthnOutcome::Failed(why) => failures.push(why),
                AuthnOutcome::NoCredentials => {}
            }
        }
        if !failures.is_empty() {
            return Err(AuthError::Unauthorized(failures.join("; ")));
        }
        if self.allow_anonymous {
            Ok(UserInfo::anonymous())
        } else {
            Err(AuthError::Unauthorized("no credentials".into()))
        }
    }

    /// Removes `Authorization` and every identity header (standard and configured)
    /// so that handlers never see credentials or unverified identities.
    pub fn strip_credentials(&self, headers: &mut HeaderMap) {
        headers.remove(http::header::AUTHORIZATION);
        for name in STANDARD_IDENTITY_HEADERS {
            headers.remove(name);
        }
        let mut prefixes = vec![STANDARD_EXTRA_PREFIX.to_string()];
        for a in &self.authenticators {
            let custom = a.identity_headers();
            for name in &custom.names {
                headers.remove(name);
            }
            prefixes.extend(custom.prefixes);
        }
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|k| prefixes.iter().any(|p| k.as_str().starts_with(p.as_str())))
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(&name);
        }
    }

    /// Runs the authorizers in order; the first Allow or Deny wins.
    pub async fn authorize(&self, user: &UserInfo, info: &RequestInfo) -> Result<(), AuthError> {
        let mut failure = None;
        for a in &self.authorizers {
            match a.authorize(user, info).await {
                Ok(Decision::Allow) => return Ok(()),
                Ok(Decision::Deny(reason)) => return Err(AuthError::Forbidden(reason)),
                Ok(Decision::NoOpinion) => {}
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) => Err(AuthError::Internal(e)),
            None => Err(AuthError::Forbidden(String::new())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    struct Fixed(AuthnOutcome);

    impl Authenticator for Fixed {
        fn authenticate<'a>(&'a self, _: &'a AuthRequest<'a>) -> BoxFuture<'a, AuthnOutcome> {
            futures::future::ready(self.0.clone()).boxed()
        }

        fn identity_headers(&self) -> IdentityHeaders {
            IdentityHeaders {
                names: vec![HeaderName::from_static("x-custom-user")],
                prefixes: vec!["x-custom-extra-".into()],
            }
        }
    }

    fn chain(outcomes: Vec<AuthnOutcome>) -> AuthChain {
        AuthChain::new(
            outcomes
                .into_iter()
                .map(|o| Arc::new(Fixed(o)) as Arc<dyn Authenticator>)
                .collect(),
            vec![],
            true,
        )
    }

    fn user(name: &str) -> UserInfo {
        UserInfo {
            name: name.into(),
            ..UserInfo::default()
        }
    }

    #[tokio::test]
    async fn union_semantics() {
        let headers = HeaderMap::new();
        let req = AuthRequest {
            headers: &headers,
            peer_certificates: None,
        };
        let failed = || AuthnOutcome::Failed("bad".into());
        // A failure does not stop a later authenticator from succeeding.
        let c = chain(vec![failed(), AuthnOutcome::Authenticated(user("a"))]);
        assert_eq!(
            c.authenticate(&req).await.unwrap().groups,
            vec![AUTHENTICATED_GROUP]
        );
        // A failure with no success is 401, never anonymous.
        let c = chain(vec![AuthnOutcome::NoCredentials, failed()]);
        assert_eq!(
            c.authenticate(&req).await,
            Err(AuthError::Unauthorized("bad".into()))
        );
        // No credentials at all: anonymous, without system:authenticated.
        let c = chain(vec![AuthnOutcome::NoCredentials]);
        assert_eq!(c.authenticate(&req).await.unwrap(), UserInfo::anonymous());
        // An authenticated anonymous name or an unauthenticated group gets nothing added.
        let c = chain(vec![AuthnOutcome::Authenticated(user(ANONYMOUS_USER))]);
        assert!(c.authenticate(&req).await.unwrap().groups.is_empty());
    }

    #[test]
    fn credentials_and_identity_headers_are_stripped() {
        let c = chain(vec![AuthnOutcome::NoCredentials]);
        let mut h = HeaderMap::new();
        for name in [
            "authorization",
            "x-remote-user",
            "x-remote-uid",
            "x-remote-group",
            "x-remote-extra-scopes",
            "x-custom-user",
            "x-custom-extra-a",
            "accept",
            "x-remote-other",
        ] {
            h.append(
                HeaderName::from_static(name),
                http::HeaderValue::from_static("v"),
            );
        }
        c.strip_credentials(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, vec!["accept", "x-remote-other"]);
    }
}
