//! Membership through `coordination.k8s.io/v1` Leases (`docs/ha.md` §1): each replica renews
//! its own Lease, carrying its peer address and certificate pin, and lists the others'. A
//! member is live while its `renewTime` keeps changing within its lease duration, as observed
//! on the local clock (as client-go's leader election does), so clock skew does not matter.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use tokio_util::sync::CancellationToken;

use super::membership::{Member, MemberSet, Membership};
use super::peer::{hex, parse_hex};

/// The label every member Lease carries (the list selector).
pub const MEMBER_LABEL: (&str, &str) = ("app.kubernetes.io/component", "kubedojo-ha-member");
/// Annotation: `host:port` of the member's peer listener.
pub const ADDRESS_ANNOTATION: &str = "ha.kubedojo.io/peer-address";
/// Annotation: hex SHA-256 of the member's peer certificate.
pub const PIN_ANNOTATION: &str = "ha.kubedojo.io/peer-cert-sha256";

/// This replica's Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the member Leases (the release's).
    pub namespace: String,
    /// Lease name prefix; the Lease is `<prefix>-<id>`.
    pub prefix: String,
    /// This replica: id, address and pin.
    pub me: Member,
    /// Lease duration; renewed every third of it.
    pub duration: Duration,
}

impl LeaseConfig {
    fn lease_name(&self) -> String {
        format!("{}-{}", self.prefix, self.me.id)
    }

    fn lease(&self, resource_version: Option<String>, acquired: Option<MicroTime>) -> Lease {
        let now = MicroTime(jiff::Timestamp::now());
        Lease {
            metadata: ObjectMeta {
                name: Some(self.lease_name()),
                namespace: Some(self.namespace.clone()),
                resource_version,
                labels: Some(BTreeMap::from([(
                    MEMBER_LABEL.0.to_string(),
                    MEMBER_LABEL.1.to_string(),
                )])),
                annotations: Some(BTreeMap::from([
                    (ADDRESS_ANNOTATION.to_string(), self.me.address.clone()),
                    (PIN_ANNOTATION.to_string(), hex(&self.me.cert_sha256)),
                ])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.me.id.clone()),
                lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
                acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
                renew_time: Some(now),
                ..LeaseSpec::default()
            }),
        }
    }
}

/// When each other member's `renewTime` was last seen to change, on the local clock.
#[derive(Default)]
pub struct Observed {
    seen: HashMap<String, (String, Instant)>,
}

impl Observed {
    /// The live members among `leases` (this replica's own excluded), recording renewals.
    pub fn live(&mut self, leases: &[Lease], me: &str, now: Instant) -> Vec<Member> {
        let mut out = Vec::new();
        let mut present = Vec::new();
        for lease in leases {
            let Some(member) = member_of(lease) else {
                continue;
            };
            let Some(spec) = &lease.spec else { continue };
            let duration =
                Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(1) as u64);
            let Some(renew) = &spec.renew_time else {
                continue;
            };
            let key = lease.metadata.name.clone().unwrap_or_default();
            present.push(key.clone());
            let renew_str = renew.0.to_string();
            let entry = self.seen.entry(key).or_insert_with(|| {
                // First sight: trust the wall-clock age once (clamped), then only local time.
                let age = jiff::Timestamp::now()
                    .duration_since(renew.0)
                    .unsigned_abs()
                    .min(duration);
                (renew_str.clone(), now.checked_sub(age).unwrap_or(now))
            });
            if entry.0 != renew_str {
                *entry = (renew_str, now);
            }
            if member.id != me && now.duration_since(entry.1) < duration {
                out.push(member);
            }
        }
        self.seen.retain(|k, _| present.contains(k));
        out
    }
}

/// The member a Lease describes, if it is complete.
pub fn member_of(lease: &Lease) -> Option<Member> {
    let annotations = lease.metadata.annotations.as_ref()?;
    Some(Member {
        id: lease.spec.as_ref()?.holder_identity.clone()?,
        address: annotations.get(ADDRESS_ANNOTATION)?.clone(),
        cert_sha256: parse_hex(annotations.get(PIN_ANNOTATION)?)?,
    })
}

/// Renews this replica's Lease and tracks the others' until `shutdown`, then deletes its own
/// Lease so its nodes move at once.
pub async fn run(
    client: kube::Client,
    config: LeaseConfig,
    membership: Arc<Membership>,
    shutdown: CancellationToken,
) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let selector = format!("{}={}", MEMBER_LABEL.0, MEMBER_LABEL.1);
    let mut observed = Observed::default();
    let mut every = tokio::time::interval((config.duration / 3).max(Duration::from_millis(200)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = every.tick() => {}
        }
        if let Err(e) = renew(&api, &config).await {
            tracing::warn!(error = %e, "cannot renew the replica's Lease");
        }
        match api.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => {
                let others = observed.live(&list.items, &config.me.id, Instant::now());
                membership.set(MemberSet::new(config.me.clone(), others));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list replica Leases; keeping the last membership")
            }
        }
    }
    match api
        .delete(&config.lease_name(), &DeleteParams::default())
        .await
    {
        Ok(_) => tracing::info!("deleted the replica's Lease"),
        Err(e) => tracing::warn!(error = %e, "cannot delete the replica's Lease"),
    }
}

async fn renew(api: &Api<Lease>, config: &LeaseConfig) -> Result<(), kube::Error> {
    let name = config.lease_name();
    match api.get_opt(&name).await? {
        None => {
            api.create(&PostParams::default(), &config.lease(None, None))
                .await?;
        }
        Some(current) => {
            let acquired = current.spec.and_then(|s| s.acquire_time);
            let next = config.lease(current.metadata.resource_version, acquired);
            api.replace(&name, &PostParams::default(), &next).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: &str) -> LeaseConfig {
        LeaseConfig {
            namespace: "ns".into(),
            prefix: "kd".into(),
            me: Member {
                id: id.into(),
                address: format!("10.0.0.{}:10251", id.len()),
                cert_sha256: [id.len() as u8; 32],
            },
            duration: Duration::from_secs(15),
        }
    }

    #[test]
    fn a_lease_round_trips_to_its_member() {
        let c = config("pod-a");
        let lease = c.lease(None, None);
        assert_eq!(lease.metadata.name.as_deref(), Some("kd-pod-a"));
        assert_eq!(member_of(&lease), Some(c.me.clone()));
    }

    #[test]
    fn members_live_while_their_renew_time_moves_on_the_local_clock() {
        let mut o = Observed::default();
        let t0 = Instant::now();
        let a = config("pod-a").lease(None, None);
        let b = config("pod-bb").lease(None, None);
        let live = o.live(&[a.clone(), b.clone()], "pod-a", t0);
        assert_eq!(
            live.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            ["pod-bb"]
        );
        // b stops renewing: still live within its duration, gone after it.
        let live = o.live(
            &[a.clone(), b.clone()],
            "pod-a",
            t0 + Duration::from_secs(10),
        );
        assert_eq!(live.len(), 1);
        let live = o.live(
            &[a.clone(), b.clone()],
            "pod-a",
            t0 + Duration::from_secs(16),
        );
        assert!(live.is_empty());
        // b renews (a new renewTime): live again.
        std::thread::sleep(Duration::from_millis(2));
        let b2 = config("pod-bb").lease(None, None);
        let live = o.live(&[a, b2], "pod-a", t0 + Duration::from_secs(17));
        assert_eq!(live.len(), 1);
    }

    #[test]
    fn an_old_lease_seen_for_the_first_time_is_not_live() {
        let mut o = Observed::default();
        let mut old = config("pod-c").lease(None, None);
        if let Some(spec) = old.spec.as_mut() {
            spec.renew_time = Some(MicroTime(
                jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60),
            ));
        }
        assert!(o.live(&[old], "pod-a", Instant::now()).is_empty());
        // An incomplete Lease (no pin) is ignored.
        let mut partial = config("pod-d").lease(None, None);
        partial
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(PIN_ANNOTATION);
        assert!(o.live(&[partial], "pod-a", Instant::now()).is_empty());
    }
}
