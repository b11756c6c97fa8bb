//! The TLS client-certificate verifier: asks for, but never requires, a client
//! certificate, over the union of the client CA and the front-proxy CA, and follows
//! CA rotation at runtime (the inner verifier lives in an `ArcSwap` and is rebuilt
//! when a CA changes).
//!
//! As Go's `tls.RequestClientCert` in k8s.io/apiserver, the chain is not enforced
//! here: the handshake proves possession of the certificate's key (the signature is
//! always verified), and the authenticators then verify the chain against each CA
//! on its own. A certificate that chains to neither CA thus reaches them and
//! becomes a 401 Status instead of an opaque handshake failure. With no CA
//! configured no certificate is requested at all.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use super::trust::TrustConfig;

struct Inner {
    fingerprint: [u8; 32],
    /// `WebPkiClientVerifier` over the union of the CAs, unauthenticated allowed;
    /// `None` when no CA is configured.
    union: Option<Arc<dyn ClientCertVerifier>>,
}

/// A [`ClientCertVerifier`] whose trusted CAs can be swapped at runtime.
pub struct DynamicClientVerifier {
    inner: ArcSwap<Inner>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl std::fmt::Debug for DynamicClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicClientVerifier")
            .field("offers_client_auth", &self.inner.load().union.is_some())
            .finish()
    }
}

fn build(config: &TrustConfig) -> Inner {
    let certs = config.all_ca_certificates();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(certs);
    let union = if roots.is_empty() {
        None
    } else {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        match WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
        {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "cannot build the client certificate verifier; not asking for client certificates");
                None
            }
        }
    };
    Inner {
        fingerprint: config.ca_fingerprint(),
        union,
    }
}

impl DynamicClientVerifier {
    /// A verifier for the CAs of `config`.
    pub fn new(config: &TrustConfig) -> Self {
        DynamicClientVerifier {
            inner: ArcSwap::from_pointee(build(config)),
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }

    /// Rebuilds the inner verifier if the CAs of `config` differ from the current ones.
    /// Returns whether it changed.
    pub fn update(&self, config: &TrustConfig) -> bool {
        if self.inner.load().fingerprint == config.ca_fingerprint() {
            return false;
        }
        self.inner.store(Arc::new(build(config)));
        tracing::info!("client CA bundle changed; TLS client verifier rebuilt");
        true
    }

    /// True when client certificates are currently requested.
    pub fn offers_client_auth(&self) -> bool {
        self.inner.load().union.is_some()
    }
}

impl ClientCertVerifier for DynamicClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.offers_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    /// No hints: a client then sends its certificate whatever its issuer (Go clients
    /// only send one matching a non-empty hint list), and the hints never go stale
    /// while the CAs rotate.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Some(union) = &self.inner.load().union
            && let Err(e) = union.verify_client_cert(end_entity, intermediates, now)
        {
            tracing::debug!(error = %e, "client certificate does not chain to a trusted CA; authentication will refuse it");
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::trust::CaBundle;
    use crate::server::pki::CertificateAuthority;

    #[test]
    fn offers_client_auth_only_with_a_ca_and_follows_rotation() {
        let none = TrustConfig::default();
        let v = DynamicClientVerifier::new(&none);
        assert!(!v.offer_client_auth());
        assert!(!v.client_auth_mandatory());
        let ca = CertificateAuthority::new("ca").unwrap();
        let with_ca = TrustConfig {
            client_ca: Some(CaBundle::from_pem(&ca.cert_pem).unwrap()),
            requestheader: None,
        };
        assert!(v.update(&with_ca));
        assert!(!v.update(&with_ca));
        assert!(v.offer_client_auth());
        assert!(!v.client_auth_mandatory());
        assert!(v.update(&none));
        assert!(!v.offer_client_auth());
    }
}
