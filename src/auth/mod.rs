//! Authentication and authorization, mirroring k8s.io/apiserver's delegating
//! chain: authenticators tried in order (a failed credential is 401, never
//! anonymous), then authorizers in order (first Allow or Deny wins).

mod authorizers;
mod forbidden;
mod token;

pub use authorizers::{AlwaysAllowGroups, AlwaysAllowPaths, StaticUsers};
pub use forbidden::forbidden;
pub use token::StaticTokenAuthenticator;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use http::HeaderMap;
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

    /// Adds `system:authenticated` unless already present (upstream does this for
    /// every authenticated user).
    pub fn with_authenticated_group(mut self) -> Self {
        if !self.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
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

/// One way of authenticating a request.
pub trait Authenticator: Send + Sync {
    /// Authenticates the request.
    fn authenticate<'a>(&'a self, req: &'a AuthRequest<'a>) -> BoxFuture<'a, AuthnOutcome>;
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

    /// Runs the authenticators in order.
    pub async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<UserInfo, AuthError> {
        for a in &self.authenticators {
            match a.authenticate(req).await {
                AuthnOutcome::Authenticated(user) => return Ok(user.with_authenticated_group()),
                AuthnOutcome::Failed(why) => return Err(AuthError::Unauthorized(why)),
                AuthnOutcome::NoCredentials => {}
            }
        }
        if self.allow_anonymous {
            Ok(UserInfo::anonymous())
        } else {
            Err(AuthError::Unauthorized("no credentials".into()))
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
