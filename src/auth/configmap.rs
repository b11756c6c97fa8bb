//! Keeps the [`TrustStore`] current: reads the
//! `kube-system/extension-apiserver-authentication` ConfigMap at start, watches
//! that one object (field selector on its name) and re-reads everything (the
//! ConfigMap and any flag-given CA files) every minute, so rotated CAs and changed
//! header settings take effect without a restart.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use super::trust::{
    CONFIGMAP_NAME, CONFIGMAP_NAMESPACE, ConfigMapTrust, TrustConfig, TrustFlags, TrustStore,
};

/// How often everything is re-read even without watch events (upstream: 1 minute).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// Where the trust settings come from: flags, plus the ConfigMap unless lookup is
/// skipped.
#[derive(Clone)]
pub struct TrustSource {
    flags: TrustFlags,
    api: Option<Api<ConfigMap>>,
}

fn parse(cm: &ConfigMap) -> Result<ConfigMapTrust, String> {
    ConfigMapTrust::from_data(&cm.data.clone().unwrap_or_default())
}

impl TrustSource {
    /// Flags only (demo mode, or `--authentication-skip-lookup`).
    pub fn flags_only(flags: TrustFlags) -> Self {
        TrustSource { flags, api: None }
    }

    /// Flags over the ConfigMap read with `client`.
    pub fn with_configmap(flags: TrustFlags, client: kube::Client) -> Self {
        TrustSource {
            flags,
            api: Some(Api::namespaced(client, CONFIGMAP_NAMESPACE)),
        }
    }

    /// Reads the ConfigMap now; a missing ConfigMap is `Ok(None)`.
    pub async fn fetch(&self) -> Result<Option<ConfigMapTrust>, String> {
        let Some(api) = &self.api else {
            return Ok(None);
        };
        match api.get_opt(CONFIGMAP_NAME).await {
            Ok(Some(cm)) => parse(&cm).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(format!(
                "reading configmap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME}: {e}"
            )),
        }
    }

    /// The settings at start-up. A missing ConfigMap is fine (no front proxy, or
    /// whatever the flags say); a failed lookup is fatal unless `tolerate_failure`.
    pub async fn initial(
        &self,
        tolerate_failure: bool,
    ) -> Result<(TrustConfig, Option<ConfigMapTrust>), String> {
        let cm = match self.fetch().await {
            Ok(cm) => cm,
            Err(e) if tolerate_failure => {
                tracing::warn!(error = %e, "cannot look up the authentication configuration; continuing without it");
                None
            }
            Err(e) => return Err(e),
        };
        if self.api.is_some() && cm.is_none() {
            tracing::warn!(
                "configmap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME} not found; front-proxy authentication disabled until it appears"
            );
        }
        let config = self.flags.resolve(cm.as_ref())?;
        Ok((config, cm))
    }

    fn apply(&self, store: &TrustStore, cm: Option<&ConfigMapTrust>) {
        match self.flags.resolve(cm) {
            Ok(config) => store.store(config),
            Err(e) => {
                tracing::warn!(error = %e, "new authentication configuration is unusable; keeping the current one")
            }
        }
    }

    /// Keeps `store` current until the task is dropped: watch events apply at once,
    /// and everything is re-read every `interval`.
    pub async fn run(
        self,
        store: Arc<TrustStore>,
        mut last: Option<ConfigMapTrust>,
        interval: Duration,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut events = match &self.api {
            Some(api) => watcher::watcher(
                api.clone(),
                watcher::Config::default().fields(&format!("metadata.name={CONFIGMAP_NAME}")),
            )
            .backoff(crate::cluster::backoff::watch_backoff())
            .boxed(),
            None => futures::stream::pending().boxed(),
        };
        let mut seen_in_init = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    match self.fetch().await {
                        Ok(cm) => last = cm,
                        Err(e) => tracing::warn!(error = %e, "periodic re-read failed; keeping the current configmap contents"),
                    }
                    self.apply(&store, last.as_ref());
                }
                event = events.next() => match event {
                    Some(Ok(Event::Apply(cm))) | Some(Ok(Event::InitApply(cm))) => {
                        seen_in_init = true;
                        match parse(&cm) {
                            Ok(t) => {
                                last = Some(t);
                                self.apply(&store, last.as_ref());
                            }
                            Err(e) => tracing::warn!(error = %e, "configmap {CONFIGMAP_NAME} is malformed; ignoring this version"),
                        }
                    }
                    Some(Ok(Event::Delete(_))) => {
                        last = None;
                        self.apply(&store, None);
                    }
                    Some(Ok(Event::Init)) => seen_in_init = false,
                    Some(Ok(Event::InitDone)) => {
                        if !seen_in_init {
                            last = None;
                            self.apply(&store, None);
                        }
                    }
                    Some(Err(e)) => tracing::debug!(error = %e, "configmap watch error; retrying"),
                    None => events = futures::stream::pending().boxed(),
                },
            }
        }
    }
}
