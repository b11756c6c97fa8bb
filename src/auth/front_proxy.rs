//! The front-proxy (request-header) authenticator: kube-apiserver's aggregator
//! connects with a client certificate from the requestheader CA and passes the end
//! user in `X-Remote-*` headers. Those headers are believed only when that
//! certificate verifies against the requestheader CA alone (clientAuth usage) and
//! its CN is allowed.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderName};
use rustls_pki_types::CertificateDer;

use super::client_cert::subject;
use super::trust::{RequestHeaderConfig, TrustStore};
use super::{AuthRequest, Authenticator, AuthnOutcome, IdentityHeaders, UserInfo};

/// Authenticates requests relayed by a verified front proxy.
pub struct FrontProxyAuthenticator {
    trust: Arc<TrustStore>,
}

impl FrontProxyAuthenticator {
    /// An authenticator reading its settings from `trust`.
    pub fn new(trust: Arc<TrustStore>) -> Self {
        FrontProxyAuthenticator { trust }
    }

    fn check(
        &self,
        headers: &HeaderMap,
        chain: Option<&[CertificateDer<'static>]>,
    ) -> AuthnOutcome {
        let Some(chain) = chain.filter(|c| !c.is_empty()) else {
            return AuthnOutcome::NoCredentials;
        };
        let trust = self.trust.load();
        let Some(config) = &trust.requestheader else {
            return AuthnOutcome::NoCredentials;
        };
        if let Err(e) = verify_proxy(config, chain) {
            return AuthnOutcome::Failed(e);
        }
        match user_from_headers(config, headers) {
            Some(user) => AuthnOutcome::Authenticated(user),
            None => AuthnOutcome::NoCredentials,
        }
    }
}

/// Verifies the proxy's chain against the requestheader CA alone and checks its CN
/// against the allowed names (any CN when the list is empty).
pub fn verify_proxy(
    config: &RequestHeaderConfig,
    chain: &[CertificateDer<'static>],
) -> Result<(), String> {
    config
        .ca
        .verify(chain)
        .map_err(|e| format!("front-proxy certificate: {e}"))?;
    if config.allowed_names.is_empty() {
        return Ok(());
    }
    let cn = chain
        .first()
        .map(subject)
        .transpose()?
        .map(|s| s.common_name)
        .unwrap_or_default();
    if config.allowed_names.contains(&cn) {
        Ok(())
    } else {
        Err(format!(
            "x509: subject with cn={cn} is not in the allowed list"
        ))
    }
}

fn values<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok())
}

/// The user named by the identity headers, or `None` when no username header has a
/// value. Username and uid: the first value of the first listed header that has a
/// non-empty one; groups: every non-empty value of every group header, in order;
/// extras: every header under a prefix, key lower-cased then percent-decoded.
pub fn user_from_headers(config: &RequestHeaderConfig, headers: &HeaderMap) -> Option<UserInfo> {
    let first = |names: &[HeaderName]| {
        names
            .iter()
            .filter_map(|n| values(headers, n).next())
            .find(|v| !v.is_empty())
            .map(str::to_string)
    };
    let name = first(&config.username_headers)?;
    let uid = first(&config.uid_headers).unwrap_or_default();
    let groups = config
        .group_headers
        .iter()
        .flat_map(|n| values(headers, n))
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for prefix in &config.extra_prefixes {
        for header in headers.keys() {
            let lower = header.as_str().to_ascii_lowercase();
            let Some(raw_key) = lower.strip_prefix(prefix.as_str()) else {
                continue;
            };
            let key = unescape_extra_key(raw_key);
            extra
                .entry(key)
                .or_default()
                .extend(values(headers, header).map(str::to_string));
        }
    }
    Some(UserInfo {
        name,
        uid,
        groups,
        extra,
    })
}

/// Percent-decodes an extra key as Go's `url.PathUnescape`; a malformed escape (or
/// a result that is not UTF-8) leaves the key as it is, as upstream does.
pub fn unescape_extra_key(key: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let decoded = bytes
                .get(i + 1)
                .and_then(|h| hex(*h))
                .zip(bytes.get(i + 2).and_then(|l| hex(*l)));
            match decoded {
                Some((h, l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                None => return key.to_string(),
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| key.to_string())
}

impl Authenticator for FrontProxyAuthenticator {
    fn authenticate<'a>(&'a self, req: &'a AuthRequest<'a>) -> BoxFuture<'a, AuthnOutcome> {
        futures::future::ready(self.check(req.headers, req.peer_certificates)).boxed()
    }

    fn identity_headers(&self) -> IdentityHeaders {
        let trust = self.trust.load();
        let Some(rh) = &trust.requestheader else {
            return IdentityHeaders::default();
        };
        let mut names = rh.username_headers.clone();
        names.extend(rh.uid_headers.iter().cloned());
        names.extend(rh.group_headers.iter().cloned());
        IdentityHeaders {
            names,
            prefixes: rh.extra_prefixes.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::trust::{CaBundle, RequestHeaderSettings, TrustConfig};
    use crate::server::pki::CertificateAuthority;
    use http::HeaderValue;
    use rustls_pki_types::pem::PemObject;

    fn der(pem: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn settings(ca: &CertificateAuthority, allowed: &[&str]) -> RequestHeaderConfig {
        RequestHeaderSettings {
            ca_pem: ca.cert_pem.clone(),
            allowed_names: allowed.iter().map(|s| s.to_string()).collect(),
            username_headers: vec!["X-Remote-User".into(), "X-Other-User".into()],
            uid_headers: vec!["X-Remote-Uid".into()],
            group_headers: vec!["X-Remote-Group".into()],
            extra_prefixes: vec!["X-Remote-Extra-".into()],
        }
        .parse()
        .unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn percent_decoding_follows_path_unescape() {
        assert_eq!(
            unescape_extra_key("authentication.kubernetes.io%2fcredential-id"),
            "authentication.kubernetes.io/credential-id"
        );
        assert_eq!(unescape_extra_key("a%2Fb%25c"), "a/b%c");
        assert_eq!(unescape_extra_key("plain+key"), "plain+key");
        assert_eq!(unescape_extra_key("bad%zzkey"), "bad%zzkey");
        assert_eq!(unescape_extra_key("trailing%2"), "trailing%2");
        assert_eq!(unescape_extra_key("%ff"), "%ff");
    }

    #[test]
    fn headers_become_the_user() {
        let ca = CertificateAuthority::new("front-proxy-ca").unwrap();
        let cfg = settings(&ca, &[]);
        let h = headers(&[
            ("X-Remote-User", ""),
            ("X-Other-User", "alice"),
            ("X-Remote-Uid", "uid-1"),
            ("X-Remote-Group", "team-a"),
            ("X-Remote-Group", ""),
            ("X-Remote-Group", "team-b, with comma"),
            (
                "X-Remote-Extra-Authentication.kubernetes.io%2fcredential-Id",
                "JTI=1",
            ),
            ("X-Remote-Extra-Scopes", "a"),
            ("X-Remote-Extra-Scopes", "b"),
        ]);
        let u = user_from_headers(&cfg, &h).unwrap();
        assert_eq!(u.name, "alice");
        assert_eq!(u.uid, "uid-1");
        assert_eq!(u.groups, vec!["team-a", "team-b, with comma"]);
        assert_eq!(
            u.extra["authentication.kubernetes.io/credential-id"],
            vec!["JTI=1"]
        );
        assert_eq!(u.extra["scopes"], vec!["a", "b"]);
        assert!(user_from_headers(&cfg, &headers(&[("X-Remote-Group", "g")])).is_none());
    }

    #[test]
    fn only_a_verified_allowed_proxy_is_believed() {
        let ca = CertificateAuthority::new("front-proxy-ca").unwrap();
        let other = CertificateAuthority::new("client-ca").unwrap();
        let trust = TrustStore::new(TrustConfig {
            client_ca: Some(CaBundle::from_pem(&other.cert_pem).unwrap()),
            requestheader: Some(settings(&ca, &["front-proxy-client"])),
        });
        let a = FrontProxyAuthenticator::new(trust);
        let h = headers(&[("X-Remote-User", "alice")]);
        let proxy = der(&ca.client_cert("front-proxy-client", &[]).unwrap().cert_pem);
        assert!(
            matches!(a.check(&h, Some(&proxy)), AuthnOutcome::Authenticated(u) if u.name == "alice")
        );
        // Verified proxy without a user header: not this authenticator's request.
        assert_eq!(
            a.check(&HeaderMap::new(), Some(&proxy)),
            AuthnOutcome::NoCredentials
        );
        let wrong_cn = der(&ca.client_cert("someone", &[]).unwrap().cert_pem);
        assert_eq!(
            a.check(&h, Some(&wrong_cn)),
            AuthnOutcome::Failed("x509: subject with cn=someone is not in the allowed list".into())
        );
        let impostor = der(&other
            .client_cert("front-proxy-client", &[])
            .unwrap()
            .cert_pem);
        assert!(matches!(
            a.check(&h, Some(&impostor)),
            AuthnOutcome::Failed(_)
        ));
        assert_eq!(a.check(&h, None), AuthnOutcome::NoCredentials);
        let ih = a.identity_headers();
        assert_eq!(ih.prefixes, vec!["x-remote-extra-"]);
        assert!(ih.names.contains(&HeaderName::from_static("x-other-user")));
    }
}
