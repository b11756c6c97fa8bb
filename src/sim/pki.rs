//! The simulator's PKI: one CA, one serving certificate per node.
//!
//! Clients connect to kubelets by IP, so no SNI is sent and a listener cannot pick a
//! certificate per name: every node gets its own rustls config whose certificate names
//! its address (IP SAN) and its node name (DNS SAN). All leaves share one ECDSA P-256
//! key, so start-up costs one signature per node and no key generation.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::{
    ServerConfig,
    crypto::{CryptoProvider, ring},
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    sign::{CertifiedKey, SigningKey, SingleCertAndKey},
};

use super::{SimError, SimNode};

/// The CA and what is needed to sign node certificates.
pub(crate) struct Pki {
    /// PEM of the CA certificate that clients must trust.
    pub(crate) ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    leaf_key: KeyPair,
    signing_key: Arc<dyn SigningKey>,
    provider: Arc<CryptoProvider>,
}

impl Pki {
    /// Generates the CA and the shared leaf key.
    pub(crate) fn new() -> Result<Self, SimError> {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(SimError::Certificate)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "kubedojo-sim-kubelet-ca");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().map_err(SimError::Certificate)?;
        let ca_pem = params
            .self_signed(&ca_key)
            .map_err(SimError::Certificate)?
            .pem();
        let leaf_key = KeyPair::generate().map_err(SimError::Certificate)?;
        let provider = Arc::new(ring::default_provider());
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let signing_key = provider
            .key_provider
            .load_private_key(der)
            .map_err(SimError::Tls)?;
        Ok(Self {
            ca_pem,
            issuer: Issuer::new(params, ca_key),
            leaf_key,
            signing_key,
            provider,
        })
    }

    /// A TLS server config for `node`, advertising h2 and HTTP/1.1 by ALPN.
    pub(crate) fn server_config(&self, node: &SimNode) -> Result<Arc<ServerConfig>, SimError> {
        let cert = self.node_certificate(node)?;
        let key = CertifiedKey::new(vec![cert], self.signing_key.clone());
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(SimError::Tls)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(key)));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    fn node_certificate(&self, node: &SimNode) -> Result<CertificateDer<'static>, SimError> {
        let names = vec![node.address.to_string(), node.name.clone()];
        let mut params = CertificateParams::new(names).map_err(SimError::Certificate)?;
        params
            .distinguished_name
            .push(DnType::CommonName, node.name.as_str());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&self.leaf_key, &self.issuer)
            .map_err(SimError::Certificate)?;
        Ok(cert.der().clone())
    }
}
