//! Trust settings for client certificates and the front proxy: which CAs sign
//! client certificates, which CA signs the front proxy's certificate, its allowed
//! names and identity headers.
//!
//! They come from the `kube-system/extension-apiserver-authentication` ConfigMap
//! (written by kube-apiserver) or from metrics-server style flags; a flag overrides
//! its part of the ConfigMap as k8s.io/apiserver does. The live settings are an
//! `ArcSwap<TrustConfig>` ([`TrustStore`]) read by the authenticators and the TLS
//! client verifier.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderName;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::{Digest, Sha256};

use super::verifier::DynamicClientVerifier;

/// Name of the ConfigMap kube-apiserver publishes its authentication trust in.
pub const CONFIGMAP_NAME: &str = "extension-apiserver-authentication";
/// Namespace of that ConfigMap.
pub const CONFIGMAP_NAMESPACE: &str = "kube-system";

/// A CA bundle with a verifier for client certificates that chain to it alone.
#[derive(Clone)]
pub struct CaBundle {
    pem: String,
    certs: Vec<CertificateDer<'static>>,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaBundle")
            .field("certificates", &self.certs.len())
            .finish()
    }
}

impl CaBundle {
    /// Parses a PEM bundle; fails when it holds no usable CA certificate.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(certs.iter().cloned());
        if added == 0 {
            return Err("no usable CA certificate in the bundle".into());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("building a verifier: {e}"))?;
        Ok(CaBundle {
            pem: pem.to_string(),
            certs,
            verifier,
        })
    }

    /// The CA certificates, DER.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// The bundle as given, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Verifies a client chain (leaf first) against this bundle alone, requiring the
    /// clientAuth extended key usage when the leaf lists key usages (as Go's x509).
    pub fn verify(&self, chain: &[CertificateDer<'static>]) -> Result<(), String> {
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or_else(|| "empty certificate chain".to_string())?;
        self.verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// The front proxy (request-header) settings.
#[derive(Clone, Debug)]
pub struct RequestHeaderConfig {
    /// CA that signs the front proxy's client certificate.
    pub ca: CaBundle,
    /// Allowed common names of that certificate; empty means any.
    pub allowed_names: Vec<String>,
    /// Headers carrying the user name; the first non-empty one wins.
    pub username_headers: Vec<HeaderName>,
    /// Headers carrying the uid (optional).
    pub uid_headers: Vec<HeaderName>,
    /// Headers carrying groups, one group per header line.
    pub group_headers: Vec<HeaderName>,
    /// Prefixes of extra-attribute headers, lower-cased.
    pub extra_prefixes: Vec<String>,
}

/// The live trust settings.
#[derive(Clone, Debug, Default)]
pub struct TrustConfig {
    /// CA of ordinary client certificates (user = CN, groups = O).
    pub client_ca: Option<CaBundle>,
    /// Front proxy settings.
    pub requestheader: Option<RequestHeaderConfig>,
}

impl TrustConfig {
    /// A digest of both CA bundles: equal digests mean the TLS verifier need not change.
    pub fn ca_fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"client-ca\0");
        if let Some(ca) = &self.client_ca {
            h.update(ca.pem.as_bytes());
        }
        h.update(b"\0requestheader-ca\0");
        if let Some(rh) = &self.requestheader {
            h.update(rh.ca.pem.as_bytes());
        }
        h.finalize().into()
    }

    /// Every trusted CA certificate (client CA and front-proxy CA).
    pub fn all_ca_certificates(&self) -> Vec<CertificateDer<'static>> {
        let mut out = Vec::new();
        if let Some(ca) = &self.client_ca {
            out.extend(ca.certs.iter().cloned());
        }
        if let Some(rh) = &self.requestheader {
            out.extend(rh.ca.certs.iter().cloned());
        }
        out
    }
}

/// Header names as configured (case-insensitive); invalid names are an error.
pub fn header_names(names: &[String]) -> Result<Vec<HeaderName>, String> {
    names
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            HeaderName::from_bytes(s.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("invalid header name {s:?}"))
        })
        .collect()
}

fn prefixes(names: &[String]) -> Vec<String> {
    names
        .iter()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The request-header part of the ConfigMap or the flags, before parsing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestHeaderSettings {
    /// CA bundle, PEM.
    pub ca_pem: String,
    /// Allowed common names.
    pub allowed_names: Vec<String>,
    /// Username headers.
    pub username_headers: Vec<String>,
    /// Uid headers.
    pub uid_headers: Vec<String>,
    /// Group headers.
    pub group_headers: Vec<String>,
    /// Extra header prefixes.
    pub extra_prefixes: Vec<String>,
}

impl RequestHeaderSettings {
    /// Parses the settings into the live form.
    pub fn parse(&self) -> Result<RequestHeaderConfig, String> {
        Ok(RequestHeaderConfig {
            ca: CaBundle::from_pem(&self.ca_pem)
                .map_err(|e| format!("requestheader-client-ca-file: {e}"))?,
            allowed_names: self
                .allowed_names
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
            username_headers: header_names(&self.username_headers)?,
            uid_headers: header_names(&self.uid_headers)?,
            group_headers: header_names(&self.group_headers)?,
            extra_prefixes: prefixes(&self.extra_prefixes),
        })
    }
}

/// What the ConfigMap says, before parsing the CAs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigMapTrust {
    /// `client-ca-file`, PEM.
    pub client_ca_pem: Option<String>,
    /// The request-header keys, when `requestheader-client-ca-file` is present.
    pub requestheader: Option<RequestHeaderSettings>,
}

fn json_list(data: &BTreeMap<String, String>, key: &str) -> Result<Vec<String>, String> {
    match data.get(key).map(|s| s.trim()) {
        None | Some("") | Some("null") => Ok(Vec::new()),
        Some(text) => serde_json::from_str::<Option<Vec<String>>>(text)
            .map(Option::unwrap_or_default)
            .map_err(|e| format!("{key}: not a JSON array of strings: {e}")),
    }
}

impl ConfigMapTrust {
    /// Reads the ConfigMap's `data` (list values are JSON arrays in strings).
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<Self, String> {
        let client_ca_pem = data
            .get("client-ca-file")
            .filter(|s| !s.trim().is_empty())
            .cloned();
        let requestheader = match data
            .get("requestheader-client-ca-file")
            .filter(|s| !s.trim().is_empty())
        {
            None => None,
            Some(ca) => Some(RequestHeaderSettings {
                ca_pem: ca.clone(),
                allowed_names: json_list(data, "requestheader-allowed-names")?,
                username_headers: json_list(data, "requestheader-username-headers")?,
                uid_headers: json_list(data, "requestheader-uid-headers")?,
                group_headers: json_list(data, "requestheader-group-headers")?,
                extra_prefixes: json_list(data, "requestheader-extra-headers-prefix")?,
            }),
        };
        Ok(ConfigMapTrust {
            client_ca_pem,
            requestheader,
        })
    }
}

/// Trust settings given by flags (files are re-read on every refresh).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustFlags {
    /// `--client-ca-file`.
    pub client_ca_file: Option<PathBuf>,
    /// `--requestheader-client-ca-file`.
    pub requestheader_client_ca_file: Option<PathBuf>,
    /// `--requestheader-allowed-names`.
    pub requestheader_allowed_names: Vec<String>,
    /// `--requestheader-username-headers`.
    pub requestheader_username_headers: Vec<String>,
    /// `--requestheader-uid-headers`.
    pub requestheader_uid_headers: Vec<String>,
    /// `--requestheader-group-headers`.
    pub requestheader_group_headers: Vec<String>,
    /// `--requestheader-extra-headers-prefix`.
    pub requestheader_extra_headers_prefix: Vec<String>,
}

fn read_file(path: &std::path::Path, flag: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("--{flag} {}: {e}", path.display()))
}

impl TrustFlags {
    /// Builds the trust settings: each flag-configured part replaces the same part of
    /// the ConfigMap (`--client-ca-file` the client CA, `--requestheader-client-ca-file`
    /// every request-header setting).
    pub fn resolve(&self, configmap: Option<&ConfigMapTrust>) -> Result<TrustConfig, String> {
        let client_ca_pem = match &self.client_ca_file {
            Some(path) => Some(read_file(path, "client-ca-file")?),
            None => configmap.and_then(|c| c.client_ca_pem.clone()),
        };
        let client_ca = client_ca_pem
            .map(|pem| CaBundle::from_pem(&pem).map_err(|e| format!("client-ca-file: {e}")))
            .transpose()?;
        let requestheader = match &self.requestheader_client_ca_file {
            Some(path) => Some(RequestHeaderSettings {
                ca_pem: read_file(path, "requestheader-client-ca-file")?,
                allowed_names: self.requestheader_allowed_names.clone(),
                username_headers: self.requestheader_username_headers.clone(),
                uid_headers: self.requestheader_uid_headers.clone(),
                group_headers: self.requestheader_group_headers.clone(),
                extra_prefixes: self.requestheader_extra_headers_prefix.clone(),
            }),
            None => configmap.and_then(|c| c.requestheader.clone()),
        };
        let requestheader = requestheader.map(|s| s.parse()).transpose()?;
        Ok(TrustConfig {
            client_ca,
            requestheader,
        })
    }
}

/// The live trust settings and the TLS client verifier that follows them.
pub struct TrustStore {
    current: ArcSwap<TrustConfig>,
    verifier: Arc<DynamicClientVerifier>,
}

impl TrustStore {
    /// A store starting with `initial`.
    pub fn new(initial: TrustConfig) -> Arc<Self> {
        let verifier = Arc::new(DynamicClientVerifier::new(&initial));
        Arc::new(TrustStore {
            current: ArcSwap::from_pointee(initial),
            verifier,
        })
    }

    /// The current settings.
    pub fn load(&self) -> Arc<TrustConfig> {
        self.current.load_full()
    }

    /// Replaces the settings; the TLS verifier is rebuilt when a CA changed.
    pub fn store(&self, config: TrustConfig) {
        self.verifier.update(&config);
        self.current.store(Arc::new(config));
    }

    /// The TLS client verifier to put in the rustls server configuration.
    pub fn verifier(&self) -> Arc<DynamicClientVerifier> {
        self.verifier.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::pki::CertificateAuthority;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn configmap_lists_are_json_arrays() {
        let t = ConfigMapTrust::from_data(&data(&[
            ("client-ca-file", "CA1"),
            ("requestheader-client-ca-file", "CA2"),
            ("requestheader-allowed-names", r#"["front-proxy-client"]"#),
            ("requestheader-username-headers", r#"["X-Remote-User"]"#),
            ("requestheader-group-headers", r#"["X-Remote-Group"]"#),
            (
                "requestheader-extra-headers-prefix",
                r#"["X-Remote-Extra-"]"#,
            ),
            ("requestheader-uid-headers", "null"),
        ]))
        .unwrap();
        assert_eq!(t.client_ca_pem.as_deref(), Some("CA1"));
        let rh = t.requestheader.unwrap();
        assert_eq!(rh.ca_pem, "CA2");
        assert_eq!(rh.allowed_names, vec!["front-proxy-client"]);
        assert_eq!(rh.username_headers, vec!["X-Remote-User"]);
        assert!(rh.uid_headers.is_empty());
        assert_eq!(rh.extra_prefixes, vec!["X-Remote-Extra-"]);

        let t = ConfigMapTrust::from_data(&data(&[("client-ca-file", "CA1")])).unwrap();
        assert!(t.requestheader.is_none());
        let e = ConfigMapTrust::from_data(&data(&[
            ("requestheader-client-ca-file", "CA2"),
            ("requestheader-allowed-names", "front-proxy-client"),
        ]))
        .unwrap_err();
        assert!(e.contains("requestheader-allowed-names"), "{e}");
    }

    #[test]
    fn flags_override_their_part_of_the_configmap() {
        let ca1 = CertificateAuthority::new("one").unwrap();
        let ca2 = CertificateAuthority::new("two").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.crt");
        std::fs::write(&file, &ca2.cert_pem).unwrap();
        let cm = ConfigMapTrust {
            client_ca_pem: Some(ca1.cert_pem.clone()),
            requestheader: Some(RequestHeaderSettings {
                ca_pem: ca1.cert_pem.clone(),
                allowed_names: vec!["cm".into()],
                username_headers: vec!["X-Cm-User".into()],
                ..Default::default()
            }),
        };
        let flags = TrustFlags {
            requestheader_client_ca_file: Some(file),
            requestheader_allowed_names: vec!["flag".into()],
            requestheader_username_headers: vec!["X-Remote-User".into()],
            requestheader_extra_headers_prefix: vec!["X-Remote-Extra-".into()],
            ..Default::default()
        };
        let t = flags.resolve(Some(&cm)).unwrap();
        assert_eq!(t.client_ca.unwrap().pem(), ca1.cert_pem);
        let rh = t.requestheader.unwrap();
        assert_eq!(rh.ca.pem(), ca2.cert_pem);
        assert_eq!(rh.allowed_names, vec!["flag"]);
        assert_eq!(
            rh.username_headers,
            vec![HeaderName::from_static("x-remote-user")]
        );
        assert_eq!(rh.extra_prefixes, vec!["x-remote-extra-"]);

        let t = TrustFlags::default().resolve(None).unwrap();
        assert!(t.client_ca.is_none() && t.requestheader.is_none());
        assert!(CaBundle::from_pem("garbage").is_err());
    }
}
