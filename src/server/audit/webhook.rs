//! The `webhook` plugin (upstream's `plugin/pkg/audit/webhook`): each batch is POSTed as
//! an `audit.k8s.io/v1` `EventList` to the server of a kubeconfig
//! (`--audit-webhook-config-file`: its current context's cluster `server`, CA or
//! `insecure-skip-tls-verify`, and user client certificate, token or basic auth). Any
//! failure (transport or a non-2xx status) is retried with exponential backoff as
//! upstream's `GenericWebhook`: five attempts, waiting `--audit-webhook-initial-backoff`
//! then 1.5 times longer each time (jitter 0.2); each attempt times out after 30 s. A batch
//! that fails every attempt is counted in `apiserver_audit_error_total{plugin="webhook"}`.
//!
//! The HTTP client runs on its own thread (a one-thread Tokio runtime), so the plugin
//! can be called from the batch thread or, in blocking modes, from a request.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::backend::{Backend, Event};

/// The plugin name in error metrics.
const PLUGIN: &str = "webhook";

/// Attempts per batch (upstream's backoff `Steps`).
const ATTEMPTS: u32 = 5;

/// Per-attempt timeout (upstream's webhook client timeout).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how to POST.
struct Target {
    client: reqwest::Client,
    url: String,
    token: Option<String>,
    basic: Option<(String, String)>,
    initial_backoff: Duration,
}

/// A batch and where to say whether it was stored (`None`: nobody waits).
type Job = (Vec<Event>, Option<std::sync::mpsc::SyncSender<bool>>);

/// Batches being sent; shutdown waits until there are none.
#[derive(Default)]
struct InFlight {
    count: std::sync::Mutex<usize>,
    done: std::sync::Condvar,
}

impl InFlight {
    fn add(&self) {
        *self.count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }

    fn finish(&self) {
        let mut n = self.count.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        self.done.notify_all();
    }

    fn wait(&self) {
        let mut n = self.count.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            n = self.done.wait(n).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The webhook plugin.
pub struct Webhook {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    in_flight: Arc<InFlight>,
}

fn read(kubeconfig: &Path, path: &str) -> Result<Vec<u8>, String> {
    let base = kubeconfig.parent().unwrap_or(Path::new("."));
    let full = base.join(path);
    std::fs::read(&full).map_err(|e| format!("{}: {e}", full.display()))
}

fn data(field: &str, b64: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("{field}: {e}"))
}

impl Target {
    fn from_kubeconfig(path: &Path, initial_backoff: Duration) -> Result<Self, String> {
        use kube::config::Kubeconfig;
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        use secrecy::ExposeSecret;
        let kc = Kubeconfig::read_from(path).map_err(|e| e.to_string())?;
        let context_name = kc
            .current_context
            .clone()
            .or_else(|| kc.contexts.first().map(|c| c.name.clone()));
        let context = context_name.as_ref().and_then(|name| {
            kc.contexts
                .iter()
                .find(|c| &c.name == name)
                .and_then(|c| c.context.clone())
        });
        let (cluster_name, user_name) = match &context {
            Some(c) => (Some(c.cluster.clone()), c.user.clone()),
            None => (kc.clusters.first().map(|c| c.name.clone()), None),
        };
        let cluster = cluster_name
            .and_then(|n| kc.clusters.iter().find(|c| c.name == n))
            .and_then(|c| c.cluster.clone())
            .ok_or("no cluster for the current context")?;
        let user = user_name
            .or_else(|| kc.auth_infos.first().map(|a| a.name.clone()))
            .and_then(|n| kc.auth_infos.iter().find(|a| a.name == n))
            .and_then(|a| a.auth_info.clone())
            .unwrap_or_default();
        let url = cluster.server.clone().ok_or("the cluster has no server")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let ca = match (
            &cluster.certificate_authority_data,
            &cluster.certificate_authority,
        ) {
            (Some(d), _) => Some(data("certificate-authority-data", d)?),
            (None, Some(p)) => Some(read(path, p)?),
            (None, None) => None,
        };
        let builder = if cluster.insecure_skip_tls_verify == Some(true) {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(crate::tls::AcceptAnyServerCert::new(
                    provider,
                )))
        } else if let Some(pem) = ca {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                roots
                    .add(cert.map_err(|e| format!("certificate authority: {e}"))?)
                    .map_err(|e| format!("certificate authority: {e}"))?;
            }
            if roots.is_empty() {
                return Err("certificate authority: no certificate in the bundle".into());
            }
            builder.with_root_certificates(roots)
        } else {
            let verifier = rustls_platform_verifier::Verifier::new(provider)
                .map_err(|e| format!("system roots: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
        };
        let cert = match (&user.client_certificate_data, &user.client_certificate) {
            (Some(d), _) => Some(data("client-certificate-data", d)?),
            (None, Some(p)) => Some(read(path, p)?),
            (None, None) => None,
        };
        let key = match (&user.client_key_data, &user.client_key) {
            (Some(d), _) => Some(data("client-key-data", d.expose_secret())?),
            (None, Some(p)) => Some(read(path, p)?),
            (None, None) => None,
        };
        let tls = match (cert, key) {
            (Some(cert), Some(key)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("client certificate: {e}"))?;
                let key =
                    PrivateKeyDer::from_pem_slice(&key).map_err(|e| format!("client key: {e}"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("client certificate: {e}"))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err("a client certificate needs both certificate and key".into()),
        };
        let token = match (&user.token, &user.token_file) {
            (Some(t), _) => Some(t.expose_secret().trim().to_string()),
            (None, Some(p)) => Some(String::from_utf8_lossy(&read(path, p)?).trim().to_string()),
            (None, None) => None,
        };
        let basic = match (&user.username, &user.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.expose_secret().to_string())),
            _ => None,
        };
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(ATTEMPT_TIMEOUT)
            .user_agent(concat!("kubedojo-data-api/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Target {
            client,
            url,
            token,
            basic,
            initial_backoff,
        })
    }

    async fn post_once(&self, body: &[u8]) -> Result<(), String> {
        let mut req = self
            .client
            .post(&self.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        } else if let Some((u, p)) = &self.basic {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        Err(format!(
            "the webhook answered {status}: {}",
            text.chars().take(200).collect::<String>()
        ))
    }

    /// POSTs `events` as an `EventList`, retrying as upstream; the last error if every
    /// attempt failed.
    async fn send(&self, events: &[Event]) -> Result<(), String> {
        let body = serde_json::to_vec(&serde_json::json!({
            "kind": "EventList",
            "apiVersion": "audit.k8s.io/v1",
            "metadata": {},
            "items": events,
        }))
        .map_err(|e| e.to_string())?;
        let mut wait = self.initial_backoff;
        let mut attempt = 1;
        loop {
            match self.post_once(&body).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt >= ATTEMPTS => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "audit webhook failed; retrying");
                }
            }
            let jitter = wait.mul_f64(0.2 * rand::random::<f64>());
            tokio::time::sleep(wait + jitter).await;
            wait = wait.mul_f64(1.5);
            attempt += 1;
        }
    }
}

impl Webhook {
    /// The plugin for the kubeconfig at `path`; a readable error for a bad file.
    pub fn new(path: &Path, initial_backoff: Duration) -> Result<Self, String> {
        let target = Target::from_kubeconfig(path, initial_backoff)
            .map_err(|e| format!("--audit-webhook-config-file {}: {e}", path.display()))?;
        let target = Arc::new(target);
        let (jobs, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let in_flight = Arc::new(InFlight::default());
        let flights = in_flight.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("audit webhook runtime: {e}"))?;
        std::thread::Builder::new()
            .name("audit-webhook".into())
            .spawn(move || {
                runtime.block_on(async move {
                    while let Some((events, reply)) = rx.recv().await {
                        let target = target.clone();
                        let flights = flights.clone();
                        tokio::spawn(async move {
                            let ok = match target.send(&events).await {
                                Ok(()) => true,
                                Err(e) => {
                                    super::metrics::plugin_error(PLUGIN, &e, &events);
                                    false
                                }
                            };
                            if let Some(reply) = reply {
                                let _ = reply.send(ok);
                            }
                            flights.finish();
                        });
                    }
                });
            })
            .map_err(|e| format!("audit webhook thread: {e}"))?;
        Ok(Webhook { jobs, in_flight })
    }
}

impl Webhook {
    fn send(&self, events: Vec<Event>, reply: Option<std::sync::mpsc::SyncSender<bool>>) -> bool {
        self.in_flight.add();
        if let Err(e) = self.jobs.send((events, reply)) {
            self.in_flight.finish();
            super::metrics::plugin_error(PLUGIN, &"the webhook thread has stopped", &e.0.0);
            return false;
        }
        true
    }
}

/// Waits for the webhook thread's answer. On a multi-thread Tokio runtime the worker hands
/// its queued tasks to another thread first (`block_in_place`): a task parked in this
/// worker's LIFO slot cannot be stolen, so a plain blocking wait could stall it (and, when
/// that task is what the webhook waits for, until the POST times out).
fn wait_for_reply(answer: &std::sync::mpsc::Receiver<bool>) -> bool {
    let recv = || answer.recv().unwrap_or(false);
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(recv)
        }
        _ => recv(),
    }
}

impl Backend for Webhook {
    fn process(&self, events: &[Event]) -> bool {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        if !self.send(events.to_vec(), Some(reply)) {
            return false;
        }
        wait_for_reply(&answer)
    }

    fn submit(&self, events: Vec<Event>) {
        self.send(events, None);
    }

    /// Waits for the batches still being sent (their retries included).
    fn shutdown(&self) {
        self.in_flight.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Target, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, text).unwrap();
        Target::from_kubeconfig(&path, Duration::from_secs(1))
    }

    const HEAD: &str = "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {cluster: k, user: u}\n";

    #[test]
    fn kubeconfig_mistakes_are_readable_errors() {
        let no_server = format!(
            "{HEAD}clusters:\n- name: k\n  cluster: {{insecure-skip-tls-verify: true}}\nusers:\n- name: u\n  user: {{}}\n"
        );
        assert!(load(&no_server).err().unwrap().contains("no server"));
        let half_cert = format!(
            "{HEAD}clusters:\n- name: k\n  cluster: {{server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}}\nusers:\n- name: u\n  user: {{client-certificate: /nope.crt}}\n"
        );
        assert!(load(&half_cert).err().unwrap().contains("/nope.crt"));
        let no_cluster = "apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncontexts: []\n";
        assert!(load(no_cluster).err().unwrap().contains("no cluster"));
        let bad_ca = format!(
            "{HEAD}clusters:\n- name: k\n  cluster: {{server: 'https://127.0.0.1:1', certificate-authority-data: 'bm90IGEgY2VydA=='}}\nusers:\n- name: u\n  user: {{token: t}}\n"
        );
        assert!(
            load(&bad_ca)
                .err()
                .unwrap()
                .contains("certificate authority")
        );
    }

    #[test]
    fn the_current_contexts_server_and_token_are_used() {
        let ok = format!(
            "{HEAD}clusters:\n- name: other\n  cluster: {{server: 'https://wrong'}}\n- name: k\n  cluster: {{server: 'https://127.0.0.1:9/hook', insecure-skip-tls-verify: true}}\nusers:\n- name: u\n  user: {{token: ' secret '}}\n"
        );
        let t = load(&ok).unwrap();
        assert_eq!(t.url, "https://127.0.0.1:9/hook");
        assert_eq!(t.token.as_deref(), Some("secret"));
    }
}
