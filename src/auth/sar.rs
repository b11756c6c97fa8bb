//! Delegated authorization: a `SubjectAccessReview` to kube-apiserver built from
//! the request attributes, cached with separate TTLs for allowed and denied answers
//! (`--authorization-webhook-cache-authorized-ttl` / `-unauthorized-ttl`).

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::authorization::v1::{
    FieldSelectorAttributes, LabelSelectorAttributes, NonResourceAttributes, ResourceAttributes,
    SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    FieldSelectorRequirement, LabelSelectorRequirement,
};
use kube::api::{Api, PostParams};

use super::cache::TtlCache;
use super::review::{Retry, ReviewError, call_with_retry};
use super::{Authorizer, Decision, UserInfo};
use crate::api::label_selector::{LabelSelector, Operator};
use crate::api::request_info::RequestInfo;

/// Specs longer than this (summed attribute lengths) are not cached, as upstream.
const MAX_CACHEABLE: usize = 10_000;

fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// `labelSelector` requirements for a SAR: `=`,`==`,`in` → In; `!=`,`notin` → NotIn;
/// `key` → Exists; `!key` → DoesNotExist; `>`/`<` dropped. `None` when the selector
/// does not parse or has no usable requirement.
pub fn label_requirements(raw: &str) -> Option<Vec<LabelSelectorRequirement>> {
    let parsed = LabelSelector::parse(raw).ok()?;
    let reqs: Vec<LabelSelectorRequirement> = parsed
        .requirements()
        .iter()
        .filter_map(|r| {
            let operator = match r.op {
                Operator::In => "In",
                Operator::NotIn => "NotIn",
                Operator::Exists => "Exists",
                Operator::DoesNotExist => "DoesNotExist",
                Operator::GreaterThan | Operator::LessThan => return None,
            };
            Some(LabelSelectorRequirement {
                key: r.key.clone(),
                operator: operator.into(),
                values: (!r.values.is_empty()).then(|| r.values.clone()),
            })
        })
        .collect();
    (!reqs.is_empty()).then_some(reqs)
}

/// `fieldSelector` requirements for a SAR: `=`/`==` → In, `!=` → NotIn, one value
/// each (backslash escapes as in apimachinery's field selector). `None` when it does
/// not parse.
pub fn field_requirements(raw: &str) -> Option<Vec<FieldSelectorRequirement>> {
    let mut out = Vec::new();
    for term in split_unescaped(raw, ',') {
        if term.is_empty() {
            continue;
        }
        let (key, op, value) = if let Some(i) = find_unescaped(&term, "!=") {
            (&term[..i], "NotIn", &term[i + 2..])
        } else if let Some(i) = find_unescaped(&term, "==") {
            (&term[..i], "In", &term[i + 2..])
        } else if let Some(i) = find_unescaped(&term, "=") {
            (&term[..i], "In", &term[i + 1..])
        } else {
            return None;
        };
        let key = key.trim();
        if key.is_empty() {
            return None;
        }
        out.push(FieldSelectorRequirement {
            key: key.to_string(),
            operator: op.into(),
            values: Some(vec![unescape(value)]),
        });
    }
    (!out.is_empty()).then_some(out)
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            cur.push(c);
            escaped = true;
        } else if c == sep {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
}

fn find_unescaped(s: &str, pat: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if s[i..].starts_with(pat) {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

/// Builds the SAR spec for `user` doing `info`, as k8s.io/apiserver's webhook
/// authorizer: empty strings omitted; selectors for list, watch and deletecollection.
pub fn build_spec(user: &UserInfo, info: &RequestInfo) -> SubjectAccessReviewSpec {
    let mut spec = SubjectAccessReviewSpec {
        user: opt(&user.name),
        uid: opt(&user.uid),
        groups: (!user.groups.is_empty()).then(|| user.groups.clone()),
        extra: (!user.extra.is_empty()).then(|| user.extra.clone().into_iter().collect()),
        ..SubjectAccessReviewSpec::default()
    };
    if info.is_resource_request {
        let mut attrs = ResourceAttributes {
            namespace: opt(&info.namespace),
            verb: opt(&info.verb),
            group: opt(&info.api_group),
            version: opt(&info.api_version),
            resource: opt(&info.resource),
            subresource: opt(&info.subresource),
            name: opt(&info.name),
            ..ResourceAttributes::default()
        };
        if !info.label_selector.is_empty() {
            attrs.label_selector =
                label_requirements(&info.label_selector).map(|r| LabelSelectorAttributes {
                    raw_selector: None,
                    requirements: Some(r),
                });
        }
        if !info.field_selector.is_empty() {
            attrs.field_selector =
                field_requirements(&info.field_selector).map(|r| FieldSelectorAttributes {
                    raw_selector: None,
                    requirements: Some(r),
                });
        }
        spec.resource_attributes = Some(attrs);
    } else {
        spec.non_resource_attributes = Some(NonResourceAttributes {
            path: opt(&info.path),
            verb: opt(&info.verb),
        });
    }
    spec
}

/// Maps a SAR status to a decision: denied → Deny; allowed → Allow; both → an error;
/// neither → NoOpinion, or Deny with kube-apiserver's reason when it gave one (this
/// authorizer is the last of the chain, so the 403 carries that reason as upstream).
pub fn decision(status: &SubjectAccessReviewStatus) -> Result<Decision, String> {
    let reason = status.reason.clone().unwrap_or_default();
    match (status.allowed, status.denied == Some(true)) {
        (true, true) => {
            Err("webhook subject access review returned both allow and deny response".into())
        }
        (_, true) => Ok(Decision::Deny(reason)),
        (true, false) => Ok(Decision::Allow),
        (false, false) if reason.is_empty() => Ok(Decision::NoOpinion),
        (false, false) => Ok(Decision::Deny(reason)),
    }
}

/// Something that answers SubjectAccessReviews (kube-apiserver, or a test double).
pub trait AccessReviewer: Send + Sync {
    /// Reviews one spec; `Err` when the call failed.
    fn review<'a>(
        &'a self,
        spec: &'a SubjectAccessReviewSpec,
    ) -> BoxFuture<'a, Result<SubjectAccessReviewStatus, ReviewError>>;
}

/// `SubjectAccessReview` through the kube client.
pub struct KubeAccessReviewer {
    client: kube::Client,
}

impl KubeAccessReviewer {
    /// Reviews with `client`.
    pub fn new(client: kube::Client) -> Self {
        KubeAccessReviewer { client }
    }
}

impl AccessReviewer for KubeAccessReviewer {
    fn review<'a>(
        &'a self,
        spec: &'a SubjectAccessReviewSpec,
    ) -> BoxFuture<'a, Result<SubjectAccessReviewStatus, ReviewError>> {
        async move {
            let sar = SubjectAccessReview {
                spec: spec.clone(),
                ..SubjectAccessReview::default()
            };
            let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
            let answer = api.create(&PostParams::default(), &sar).await?;
            Ok(answer.status.unwrap_or_default())
        }
        .boxed()
    }
}

/// Authorizes with SubjectAccessReviews, cached.
pub struct SubjectAccessReviewAuthorizer {
    reviewer: Arc<dyn AccessReviewer>,
    cache: TtlCache<String, Decision>,
    allowed_ttl: Duration,
    denied_ttl: Duration,
    retry: Retry,
}

impl SubjectAccessReviewAuthorizer {
    /// Caches allowed answers for `allowed_ttl` and the others for `denied_ttl`.
    pub fn new(
        reviewer: Arc<dyn AccessReviewer>,
        allowed_ttl: Duration,
        denied_ttl: Duration,
    ) -> Self {
        SubjectAccessReviewAuthorizer {
            reviewer,
            cache: TtlCache::new(10_000),
            allowed_ttl,
            denied_ttl,
            retry: Retry::default(),
        }
    }

    /// Uses `retry` for failed review calls instead of upstream's default backoff.
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    async fn check(&self, user: &UserInfo, info: &RequestInfo) -> Result<Decision, String> {
        let spec = build_spec(user, info);
        let size = [
            &info.namespace,
            &info.verb,
            &info.api_group,
            &info.api_version,
            &info.resource,
            &info.subresource,
            &info.name,
            &info.path,
        ]
        .iter()
        .map(|s| s.len())
        .sum::<usize>();
        let key = (size < MAX_CACHEABLE)
            .then(|| serde_json::to_string(&spec).ok())
            .flatten();
        if let Some(hit) = key.as_ref().and_then(|k| self.cache.get(k)) {
            return Ok(hit);
        }
        let status = call_with_retry(&self.retry, || self.reviewer.review(&spec))
            .await
            .map_err(|e| format!("subject access review failed: {e}"))?;
        let d = decision(&status)?;
        if let Some(k) = key {
            let ttl = if d == Decision::Allow {
                self.allowed_ttl
            } else {
                self.denied_ttl
            };
            self.cache.insert(k, d.clone(), ttl);
        }
        Ok(d)
    }
}

impl Authorizer for SubjectAccessReviewAuthorizer {
    fn authorize<'a>(
        &'a self,
        user: &'a UserInfo,
        info: &'a RequestInfo,
    ) -> BoxFuture<'a, Result<Decision, String>> {
        self.check(user, info).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn info(method: Method, path: &str, query: &[(&str, &str)]) -> RequestInfo {
        let q = crate::api::query::Query::from_pairs(query.iter().copied());
        RequestInfo::new(&method, path, &q)
    }

    fn alice() -> UserInfo {
        UserInfo {
            name: "alice".into(),
            groups: vec!["team-a".into(), "system:authenticated".into()],
            ..Default::default()
        }
    }

    #[test]
    fn specs_match_the_conventions() {
        let spec = build_spec(
            &alice(),
            &info(
                Method::GET,
                "/apis/metrics.k8s.io/v1beta1/namespaces/ns1/pods",
                &[
                    ("labelSelector", "app=x,tier notin (a,b),!old,n>1"),
                    ("fieldSelector", "spec.nodeName!=n1"),
                ],
            ),
        );
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            serde_json::json!({
                "user": "alice",
                "groups": ["team-a", "system:authenticated"],
                "resourceAttributes": {
                    "namespace": "ns1", "verb": "list", "group": "metrics.k8s.io",
                    "version": "v1beta1", "resource": "pods",
                    "labelSelector": {"requirements": [
                        {"key": "app", "operator": "In", "values": ["x"]},
                        {"key": "tier", "operator": "NotIn", "values": ["a", "b"]},
                        {"key": "old", "operator": "DoesNotExist"}
                    ]},
                    "fieldSelector": {"requirements": [
                        {"key": "spec.nodeName", "operator": "NotIn", "values": ["n1"]}
                    ]}
                }
            })
        );
        let spec = build_spec(
            &alice(),
            &info(Method::GET, "/apis/data.kubedojo.io/v1alpha1", &[]),
        );
        assert_eq!(
            serde_json::to_value(&spec).unwrap()["nonResourceAttributes"],
            serde_json::json!({"path": "/apis/data.kubedojo.io/v1alpha1", "verb": "get"})
        );
        let spec = build_spec(
            &alice(),
            &info(Method::GET, "/apis/metrics.k8s.io/v1beta1/nodes/n1", &[]),
        );
        let ra = spec.resource_attributes.unwrap();
        assert_eq!(
            (ra.verb.as_deref(), ra.name.as_deref(), ra.namespace),
            (Some("get"), Some("n1"), None)
        );
        let spec = build_spec(
            &alice(),
            &info(
                Method::GET,
                "/apis/data.kubedojo.io/v1alpha1/namespaces/ns1/datarecords",
                &[("watch", "true"), ("labelSelector", "app")],
            ),
        );
        let ra = spec.resource_attributes.unwrap();
        assert_eq!(ra.verb.as_deref(), Some("watch"));
        assert_eq!(
            ra.label_selector.unwrap().requirements.unwrap()[0].operator,
            "Exists"
        );
    }

    #[test]
    fn field_selector_parsing() {
        let r = field_requirements(r"metadata.name==a\,b,status.phase=Running").unwrap();
        assert_eq!(r[0].key, "metadata.name");
        assert_eq!(r[0].values, Some(vec!["a,b".to_string()]));
        assert_eq!(
            (
                r[1].operator.as_str(),
                r[1].values.as_ref().unwrap()[0].as_str()
            ),
            ("In", "Running")
        );
        assert!(field_requirements("novalue").is_none());
        assert!(label_requirements("a in (").is_none());
    }

    #[test]
    fn status_mapping() {
        let st = |allowed, denied: Option<bool>, reason: &str| SubjectAccessReviewStatus {
            allowed,
            denied,
            reason: opt(reason),
            evaluation_error: None,
        };
        assert_eq!(decision(&st(true, None, "")), Ok(Decision::Allow));
        assert_eq!(
            decision(&st(false, Some(true), "no")),
            Ok(Decision::Deny("no".into()))
        );
        assert_eq!(decision(&st(false, None, "")), Ok(Decision::NoOpinion));
        assert_eq!(
            decision(&st(false, None, "why")),
            Ok(Decision::Deny("why".into()))
        );
        assert!(decision(&st(true, Some(true), "")).is_err());
    }

    struct Fixed {
        calls: AtomicUsize,
    }

    impl AccessReviewer for Fixed {
        fn review<'a>(
            &'a self,
            spec: &'a SubjectAccessReviewSpec,
        ) -> BoxFuture<'a, Result<SubjectAccessReviewStatus, ReviewError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let allowed = spec.user.as_deref() == Some("alice");
            futures::future::ready(Ok(SubjectAccessReviewStatus {
                allowed,
                ..Default::default()
            }))
            .boxed()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn allow_and_deny_have_their_own_ttl() {
        let r = Arc::new(Fixed {
            calls: AtomicUsize::new(0),
        });
        let a = SubjectAccessReviewAuthorizer::new(
            r.clone(),
            Duration::from_secs(10),
            Duration::from_secs(2),
        );
        let i = info(Method::GET, "/apis/metrics.k8s.io/v1beta1/nodes", &[]);
        let bob = UserInfo {
            name: "bob".into(),
            ..Default::default()
        };
        for _ in 0..3 {
            assert_eq!(a.check(&alice(), &i).await, Ok(Decision::Allow));
            assert_eq!(a.check(&bob, &i).await, Ok(Decision::NoOpinion));
        }
        assert_eq!(r.calls.load(Ordering::SeqCst), 2);
        tokio::time::advance(Duration::from_secs(2)).await;
        a.check(&alice(), &i).await.unwrap();
        a.check(&bob, &i).await.unwrap();
        assert_eq!(r.calls.load(Ordering::SeqCst), 3, "only the denial expired");
        tokio::time::advance(Duration::from_secs(8)).await;
        a.check(&alice(), &i).await.unwrap();
        assert_eq!(r.calls.load(Ordering::SeqCst), 4);
    }
}
