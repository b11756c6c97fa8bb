//! Client-certificate authentication against the client CA (`client-ca-file`):
//! user = subject CN, groups = subject O, as k8s.io/apiserver's x509 authenticator.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use super::trust::TrustStore;
use super::{AuthRequest, Authenticator, AuthnOutcome, UserInfo};

/// Extra key carrying the credential id (`X509SHA256=<hex>`), as upstream.
pub const CREDENTIAL_ID_EXTRA: &str = "authentication.kubernetes.io/credential-id";

/// The subject of a certificate: common name and organizations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    /// First common name (empty if none).
    pub common_name: String,
    /// Organizations, in order.
    pub organizations: Vec<String>,
}

/// Reads the subject of a DER certificate.
pub fn subject(cert: &CertificateDer<'_>) -> Result<Subject, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("cannot parse the client certificate: {e}"))?;
    let subject = parsed.subject();
    let text = |attr: &x509_parser::x509::AttributeTypeAndValue<'_>| {
        attr.as_str().map(str::to_string).unwrap_or_default()
    };
    Ok(Subject {
        common_name: subject
            .iter_common_name()
            .next()
            .map(text)
            .unwrap_or_default(),
        organizations: subject.iter_organization().map(text).collect(),
    })
}

/// Authenticates requests whose client certificate chains to the client CA.
pub struct ClientCertAuthenticator {
    trust: Arc<TrustStore>,
}

impl ClientCertAuthenticator {
    /// An authenticator reading the client CA from `trust`.
    pub fn new(trust: Arc<TrustStore>) -> Self {
        ClientCertAuthenticator { trust }
    }

    fn check(&self, chain: Option<&[CertificateDer<'static>]>) -> AuthnOutcome {
        let Some(chain) = chain.filter(|c| !c.is_empty()) else {
            return AuthnOutcome::NoCredentials;
        };
        let trust = self.trust.load();
        let Some(ca) = &trust.client_ca else {
            return AuthnOutcome::NoCredentials;
        };
        if let Err(e) = ca.verify(chain) {
            return AuthnOutcome::Failed(format!("client certificate: {e}"));
        }
        let leaf = &chain[0];
        let subject = match subject(leaf) {
            Ok(s) => s,
            Err(e) => return AuthnOutcome::Failed(e),
        };
        if subject.common_name.is_empty() {
            return AuthnOutcome::NoCredentials;
        }
        let digest = Sha256::digest(leaf.as_ref());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let mut user = UserInfo {
            name: subject.common_name,
            groups: subject.organizations,
            ..UserInfo::default()
        };
        user.extra.insert(
            CREDENTIAL_ID_EXTRA.into(),
            vec![format!("X509SHA256={hex}")],
        );
        AuthnOutcome::Authenticated(user)
    }
}

impl Authenticator for ClientCertAuthenticator {
    fn authenticate<'a>(&'a self, req: &'a AuthRequest<'a>) -> BoxFuture<'a, AuthnOutcome> {
        futures::future::ready(self.check(req.peer_certificates)).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::trust::{CaBundle, TrustConfig};
    use crate::server::pki::CertificateAuthority;
    use rustls_pki_types::pem::PemObject;

    fn der(pem: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn cn_is_user_and_o_are_groups() {
        let ca = CertificateAuthority::new("client-ca").unwrap();
        let other = CertificateAuthority::new("other").unwrap();
        let trust = TrustStore::new(TrustConfig {
            client_ca: Some(CaBundle::from_pem(&ca.cert_pem).unwrap()),
            requestheader: None,
        });
        let a = ClientCertAuthenticator::new(trust);
        let cert = der(&ca.client_cert("alice", &["dev"]).unwrap().cert_pem);
        let AuthnOutcome::Authenticated(u) = a.check(Some(&cert)) else {
            panic!("authenticated expected")
        };
        assert_eq!(u.name, "alice");
        assert_eq!(u.groups, vec!["dev"]);
        assert!(u.extra[CREDENTIAL_ID_EXTRA][0].starts_with("X509SHA256="));

        let bad = der(&other.client_cert("alice", &[]).unwrap().cert_pem);
        assert!(matches!(a.check(Some(&bad)), AuthnOutcome::Failed(_)));
        assert_eq!(a.check(None), AuthnOutcome::NoCredentials);
        // A serving certificate lacks the clientAuth usage.
        let serving = der(&ca
            .serving_cert("alice", &["localhost".into()])
            .unwrap()
            .cert_pem);
        assert!(matches!(a.check(Some(&serving)), AuthnOutcome::Failed(_)));
    }
}
