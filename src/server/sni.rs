//! `--tls-sni-cert-key`: extra serving certificates chosen by the name the TLS client
//! asks for (SNI), as kube-apiserver does (k8s.io/apiserver `dynamiccertificates`
//! named certificates, component-base's `NamedCertKey` flag).
//!
//! - Each flag is `certfile,keyfile` or `certfile,keyfile:name1,name2`; the flag may be
//!   given several times.
//! - A certificate without explicit names serves the names it carries: its Subject CN
//!   (when it is a DNS name or `*`) and its DNS SANs. IP SANs are ignored: SNI never
//!   carries an IP address.
//! - Explicit names override names taken from certificates; among certificates of the
//!   same kind the earlier flag wins.
//! - Lookup is Go's `tls.Config.getCertificate`: the lower-cased SNI name exactly, then
//!   with its first label replaced by `*`. No SNI or no match: the default serving
//!   certificate (`--tls-cert-file` or the self-signed one).
//! - Every certificate is re-read when its files change, like the default one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::tls::{CertFiles, ReloadingCert, TlsError};

/// One `--tls-sni-cert-key` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedCertKey {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
    /// The names given after `:`, empty when the certificate's own names are used.
    pub names: Vec<String>,
}

impl std::str::FromStr for NamedCertKey {
    type Err = String;

    /// Parses `certfile,keyfile[:name1,name2]` exactly as component-base's
    /// `NamedCertKey.Set` (spaces around each part are trimmed).
    fn from_str(value: &str) -> Result<Self, String> {
        let (pair, names) = match value.split_once(':') {
            Some((pair, names)) => {
                let names = names.trim();
                if names.is_empty() {
                    return Err("empty names list is not allowed".into());
                }
                let names = names.split(',').map(|n| n.trim().to_string()).collect();
                (pair.trim(), names)
            }
            None => (value.trim(), Vec::new()),
        };
        let parts: Vec<&str> = pair.split(',').collect();
        let [cert, key] = parts.as_slice() else {
            return Err("expected comma separated certificate and key file paths".into());
        };
        let (cert, key) = (cert.trim(), key.trim());
        if cert.is_empty() || key.is_empty() {
            return Err("expected comma separated certificate and key file paths".into());
        }
        Ok(NamedCertKey {
            cert: cert.into(),
            key: key.into(),
            names,
        })
    }
}

struct Named {
    explicit: Vec<String>,
    cert: Arc<ReloadingCert>,
}

/// Picks the serving certificate by SNI name among the `--tls-sni-cert-key`
/// certificates, falling back to the default one.
pub struct SniResolver {
    default: Arc<ReloadingCert>,
    named: Vec<Named>,
    by_name: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<String> = self.by_name.load().keys().cloned().collect();
        names.sort();
        f.debug_struct("SniResolver")
            .field("names", &names)
            .finish()
    }
}

impl SniResolver {
    /// Loads every named certificate now; fails on the first unusable one.
    pub fn new(default: Arc<ReloadingCert>, named: &[NamedCertKey]) -> Result<Arc<Self>, TlsError> {
        let named = named
            .iter()
            .map(|n| {
                let cert = ReloadingCert::new(CertFiles {
                    cert: n.cert.clone(),
                    key: n.key.clone(),
                })?;
                Ok(Named {
                    explicit: n.names.clone(),
                    cert,
                })
            })
            .collect::<Result<Vec<_>, TlsError>>()?;
        let resolver = SniResolver {
            default,
            named,
            by_name: ArcSwap::from_pointee(HashMap::new()),
        };
        resolver.rebuild();
        Ok(Arc::new(resolver))
    }

    /// The names served by a certificate other than the default one, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_name.load().keys().cloned().collect();
        names.sort();
        names
    }

    fn rebuild(&self) {
        let mut implicit = HashMap::new();
        let mut explicit = HashMap::new();
        // Backwards, so that the earlier flag wins a name (as upstream).
        for n in self.named.iter().rev() {
            let key = n.cert.current();
            if n.explicit.is_empty() {
                for name in certificate_names(&key) {
                    implicit.insert(name.to_ascii_lowercase(), key.clone());
                }
            } else {
                for name in &n.explicit {
                    explicit.insert(name.to_ascii_lowercase(), key.clone());
                }
            }
        }
        implicit.extend(explicit);
        self.by_name.store(Arc::new(implicit));
    }

    /// Re-reads every certificate whose files changed; true when any did.
    pub fn reload_if_changed(&self) -> bool {
        let default = self.default.reload_if_changed();
        let mut named = false;
        for n in &self.named {
            named |= n.cert.reload_if_changed();
        }
        if named {
            self.rebuild();
        }
        default || named
    }

    /// Polls the files every `interval` until the task is dropped.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            self.reload_if_changed();
        }
    }

    /// The certificate for an SNI name (`None`: no SNI).
    pub fn select(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name.filter(|n| !n.is_empty()) else {
            return self.default.current();
        };
        let name = name.to_ascii_lowercase();
        let by_name = self.by_name.load();
        if let Some(key) = by_name.get(&name) {
            return key.clone();
        }
        let wildcard = match name.split_once('.') {
            Some((_, rest)) => format!("*.{rest}"),
            None => "*".to_string(),
        };
        match by_name.get(&wildcard) {
            Some(key) => key.clone(),
            None => self.default.current(),
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.select(hello.server_name()))
    }
}

/// The names a certificate serves without explicit names (upstream's
/// `getCertificateNames`): the Subject CN when it is `*` or a DNS subdomain (after an
/// optional `*.`) and not an IP address, then every DNS SAN.
fn certificate_names(key: &CertifiedKey) -> Vec<String> {
    let Some(der) = key.cert.first() else {
        return Vec::new();
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    if let Some(cn) = cert.subject().iter_common_name().next()
        && let Ok(cn) = cn.as_str()
        && (cn == "*" || is_dns1123_subdomain(cn.strip_prefix("*.").unwrap_or(cn)))
        && cn.parse::<std::net::IpAddr>().is_err()
    {
        names.push(cn.to_string());
    }
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_string());
            }
        }
    }
    names
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_parse_as_component_base_does() {
        let n: NamedCertKey = "a.crt,a.key".parse().unwrap();
        assert_eq!(
            (n.cert, n.key, n.names),
            ("a.crt".into(), "a.key".into(), vec![])
        );
        let n: NamedCertKey = " a.crt , a.key : foo.com, *.bar.com ".parse().unwrap();
        assert_eq!(
            (n.cert, n.key, n.names),
            (
                "a.crt".into(),
                "a.key".into(),
                vec!["foo.com".to_string(), "*.bar.com".to_string()]
            )
        );
        for (bad, why) in [
            ("a.crt,a.key:", "empty names list is not allowed"),
            ("a.crt,a.key: ", "empty names list is not allowed"),
            (
                "a.crt",
                "expected comma separated certificate and key file paths",
            ),
            (
                "a,b,c",
                "expected comma separated certificate and key file paths",
            ),
            (
                ",a.key",
                "expected comma separated certificate and key file paths",
            ),
        ] {
            assert_eq!(bad.parse::<NamedCertKey>().unwrap_err(), why, "{bad:?}");
        }
    }

    #[test]
    fn common_names_that_are_not_dns_names_are_not_served() {
        assert!(is_dns1123_subdomain("foo.example.com"));
        assert!(!is_dns1123_subdomain("127.0.0.1:443"));
        assert!(!is_dns1123_subdomain("kubedojo-data-api@1700000000"));
        assert!(!is_dns1123_subdomain("Foo.com"));
    }
}
