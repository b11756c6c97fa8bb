//! Authorizers that need no review: privileged groups, always-allowed paths and
//! named users (demo mode's admin).

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Authorizer, Decision, UserInfo};
use crate::api::request_info::RequestInfo;

/// Allows members of the given groups (`system:masters`).
pub struct AlwaysAllowGroups(pub Vec<String>);

impl Authorizer for AlwaysAllowGroups {
    fn authorize<'a>(
        &'a self,
        user: &'a UserInfo,
        _: &'a RequestInfo,
    ) -> BoxFuture<'a, Result<Decision, String>> {
        let allowed = user.groups.iter().any(|g| self.0.contains(g));
        futures::future::ready(Ok(if allowed {
            Decision::Allow
        } else {
            Decision::NoOpinion
        }))
        .boxed()
    }
}

/// Allows non-resource requests to the given paths (exact, or prefix when the entry ends in `*`).
pub struct AlwaysAllowPaths(pub Vec<String>);

impl AlwaysAllowPaths {
    fn matches(&self, path: &str) -> bool {
        let path = path.trim_start_matches('/');
        self.0.iter().any(|p| {
            let p = p.trim_start_matches('/');
            match p.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix),
                None => path == p,
            }
        })
    }
}

impl Authorizer for AlwaysAllowPaths {
    fn authorize<'a>(
        &'a self,
        _: &'a UserInfo,
        info: &'a RequestInfo,
    ) -> BoxFuture<'a, Result<Decision, String>> {
        let allowed = !info.is_resource_request && self.matches(&info.path);
        futures::future::ready(Ok(if allowed {
            Decision::Allow
        } else {
            Decision::NoOpinion
        }))
        .boxed()
    }
}

/// Allows the named users everything (demo mode's admin).
pub struct StaticUsers(pub Vec<String>);

impl Authorizer for StaticUsers {
    fn authorize<'a>(
        &'a self,
        user: &'a UserInfo,
        _: &'a RequestInfo,
    ) -> BoxFuture<'a, Result<Decision, String>> {
        let allowed = self.0.contains(&user.name);
        futures::future::ready(Ok(if allowed {
            Decision::Allow
        } else {
            Decision::NoOpinion
        }))
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_exactly_or_by_prefix() {
        let p = AlwaysAllowPaths(vec!["/healthz".into(), "/readyz".into(), "/debug/*".into()]);
        assert!(p.matches("/healthz"));
        assert!(!p.matches("/healthz/ping"));
        assert!(p.matches("/debug/pprof"));
        assert!(!p.matches("/metrics"));
    }
}
