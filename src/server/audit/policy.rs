//! The audit policy: an `audit.k8s.io/v1` `Policy` file (`--audit-policy-file`) whose first
//! matching rule decides each request's level and the stages left out, as upstream's
//! `policyRuleEvaluator`.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::api::request_info::RequestInfo;
use crate::auth::UserInfo;

/// How much of a request is audited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Level {
    /// Not audited.
    None,
    /// Request metadata: user, verb, resource, timestamps, response code.
    Metadata,
    /// Metadata plus the request body.
    Request,
    /// Metadata plus the request and response bodies.
    RequestResponse,
}

/// The points in a request's life an event is written at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Stage {
    /// The request was received and authenticated.
    RequestReceived,
    /// The response headers were sent (long-running requests only).
    ResponseStarted,
    /// The response body was sent completely.
    ResponseComplete,
    /// The handler panicked.
    Panic,
}

impl Stage {
    /// The name upstream writes.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::RequestReceived => "RequestReceived",
            Stage::ResponseStarted => "ResponseStarted",
            Stage::ResponseComplete => "ResponseComplete",
            Stage::Panic => "Panic",
        }
    }
}

/// An `audit.k8s.io/v1` `Policy`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    api_version: String,
    kind: String,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    rules: Vec<PolicyRule>,
    #[serde(default)]
    omit_stages: Vec<Stage>,
    #[serde(default)]
    omit_managed_fields: bool,
}

/// One rule; empty lists match everything.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyRule {
    level: Level,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    user_groups: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<GroupResources>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
    #[serde(default)]
    omit_stages: Vec<Stage>,
    #[serde(default)]
    omit_managed_fields: Option<bool>,
}

/// Resources of one API group a rule names.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupResources {
    #[serde(default)]
    group: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
}

impl Policy {
    /// Reads and checks a policy file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--audit-policy-file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("--audit-policy-file {}: {e}", path.display()))
    }

    /// Parses a policy (YAML or JSON).
    pub fn parse(text: &str) -> Result<Self, String> {
        let policy: Policy = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        if policy.api_version != "audit.k8s.io/v1" || policy.kind != "Policy" {
            return Err(format!(
                "expected apiVersion audit.k8s.io/v1, kind Policy; got {:?}, {:?}",
                policy.api_version, policy.kind
            ));
        }
        let _ = (&policy.metadata, policy.omit_managed_fields);
        for (i, r) in policy.rules.iter().enumerate() {
            let _ = r.omit_managed_fields;
            if !r.non_resource_urls.is_empty()
                && (!r.resources.is_empty() || !r.namespaces.is_empty())
            {
                return Err(format!(
                    "rules[{i}]: rules cannot apply to both regular resources and non-resource URLs"
                ));
            }
        }
        Ok(policy)
    }

    /// The level and stages to omit for a request (upstream's `policyRuleEvaluator`):
    /// the first rule that matches decides; none matching means `None`.
    pub fn evaluate(&self, user: &UserInfo, info: &RequestInfo) -> (Level, Vec<Stage>) {
        for rule in &self.rules {
            if rule.matches(user, info) {
                let mut omit = self.omit_stages.clone();
                omit.extend(rule.omit_stages.iter().copied());
                return (rule.level, omit);
            }
        }
        (Level::None, self.omit_stages.clone())
    }

    /// The highest level any rule asks for.
    pub fn max_level(&self) -> Level {
        self.rules
            .iter()
            .map(|r| r.level)
            .max()
            .unwrap_or(Level::None)
    }
}

impl PolicyRule {
    fn matches(&self, user: &UserInfo, info: &RequestInfo) -> bool {
        if !self.users.is_empty() && !self.users.contains(&user.name) {
            return false;
        }
        if !self.user_groups.is_empty() && !user.groups.iter().any(|g| self.user_groups.contains(g))
        {
            return false;
        }
        if !self.verbs.is_empty() && !self.verbs.contains(&info.verb) {
            return false;
        }
        if info.is_resource_request {
            if !self.non_resource_urls.is_empty() {
                return false;
            }
            if !self.namespaces.is_empty() && !self.namespaces.contains(&info.namespace) {
                return false;
            }
            self.resources.is_empty() || self.resources.iter().any(|gr| gr.matches(info))
        } else {
            if !self.resources.is_empty() || !self.namespaces.is_empty() {
                return false;
            }
            self.non_resource_urls.is_empty()
                || self.non_resource_urls.iter().any(|u| {
                    u == "*"
                        || *u == info.path
                        || u.strip_suffix('*')
                            .is_some_and(|p| info.path.starts_with(p))
                })
        }
    }
}

impl GroupResources {
    /// Upstream's `ruleMatchesResource`: no resources means the whole group; otherwise
    /// `res`, `res/sub`, `*`, `*/sub` or `res/*` (which also matches `res` itself), each
    /// limited to `resourceNames` when given.
    fn matches(&self, info: &RequestInfo) -> bool {
        if self.group != info.api_group {
            return false;
        }
        if self.resources.is_empty() {
            return true;
        }
        if !self.resource_names.is_empty() && !self.resource_names.contains(&info.name) {
            return false;
        }
        let sub = info.subresource.as_str();
        let combined = if sub.is_empty() {
            info.resource.clone()
        } else {
            format!("{}/{sub}", info.resource)
        };
        self.resources.iter().any(|r| {
            *r == combined
                || r == "*"
                || (!sub.is_empty() && r.strip_prefix("*/") == Some(sub))
                || r.strip_suffix("/*") == Some(info.resource.as_str())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::query::Query;
    use http::Method;

    fn info(method: Method, path: &str) -> RequestInfo {
        RequestInfo::new(&method, path, &Query::default())
    }

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..UserInfo::default()
        }
    }

    const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    users: ["system:kube-proxy"]
  - level: None
    nonResourceURLs: ["/healthz*", "/readyz", "/livez"]
  - level: Metadata
    resources:
      - group: metrics.k8s.io
        resources: ["pods", "nodes"]
    namespaces: ["", "kube-system"]
  - level: RequestResponse
    userGroups: ["system:masters"]
    resources:
      - group: data.kubedojo.io
        resources: ["datarecords/*"]
        resourceNames: ["orders"]
  - level: Metadata
    verbs: ["watch"]
    omitStages: [ResponseStarted]
"#;

    #[test]
    fn first_matching_rule_decides_as_upstream() {
        let p = Policy::parse(POLICY).unwrap();
        let alice = user("alice", &["system:authenticated"]);
        let admin = user("admin", &["system:masters"]);
        let cases = [
            (&alice, info(Method::GET, "/healthz/ping"), Level::None),
            (&alice, info(Method::GET, "/readyz"), Level::None),
            (&alice, info(Method::GET, "/metrics"), Level::None),
            (
                &user("system:kube-proxy", &[]),
                info(Method::GET, "/apis/metrics.k8s.io/v1beta1/nodes"),
                Level::None,
            ),
            (
                &alice,
                info(Method::GET, "/apis/metrics.k8s.io/v1beta1/nodes"),
                Level::Metadata,
            ),
            (
                &alice,
                info(
                    Method::GET,
                    "/apis/metrics.k8s.io/v1beta1/namespaces/kube-system/pods",
                ),
                Level::Metadata,
            ),
            (
                &alice,
                info(
                    Method::GET,
                    "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods",
                ),
                Level::None,
            ),
            (
                &admin,
                info(
                    Method::GET,
                    "/apis/data.kubedojo.io/v1alpha1/namespaces/default/datarecords/orders/status",
                ),
                Level::RequestResponse,
            ),
            (
                &admin,
                info(
                    Method::GET,
                    "/apis/data.kubedojo.io/v1alpha1/namespaces/default/datarecords/orders",
                ),
                Level::RequestResponse,
            ),
            (
                &admin,
                info(
                    Method::GET,
                    "/apis/data.kubedojo.io/v1alpha1/namespaces/default/datarecords/other/status",
                ),
                Level::None,
            ),
            (
                &alice,
                info(
                    Method::GET,
                    "/apis/data.kubedojo.io/v1alpha1/watch/namespaces/default/datarecords",
                ),
                Level::Metadata,
            ),
        ];
        for (u, i, want) in cases {
            assert_eq!(p.evaluate(u, &i).0, want, "{} {}", u.name, i.path);
        }
        let watch = info(
            Method::GET,
            "/apis/data.kubedojo.io/v1alpha1/watch/namespaces/default/datarecords",
        );
        assert_eq!(
            p.evaluate(&alice, &watch).1,
            vec![Stage::RequestReceived, Stage::ResponseStarted]
        );
    }

    #[test]
    fn bad_policies_are_readable_errors() {
        let e = Policy::parse("apiVersion: audit.k8s.io/v1beta1\nkind: Policy\n").unwrap_err();
        assert!(e.contains("expected apiVersion audit.k8s.io/v1"), "{e}");
        let e = Policy::parse("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Loud\n")
            .unwrap_err();
        assert!(e.contains("Loud"), "{e}");
        let e = Policy::parse(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  nonResourceURLs: [/x]\n  namespaces: [a]\n",
        )
        .unwrap_err();
        assert!(
            e.contains("both regular resources and non-resource URLs"),
            "{e}"
        );
    }
}
