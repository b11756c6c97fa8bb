//! Request attributes derived from the URL and method, following
//! k8s.io/apiserver's `RequestInfoFactory` (API prefixes `apis`, groupless `api`).
//! The router and the authorizer both use it, from the one [`Query`] the request
//! was parsed into, so both see the same selectors and verb.

use http::Method;

use super::field_selector::FieldSelector;
use super::query::Query;

/// What a request asks for, in Kubernetes terms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// True for requests on resources (`/apis/<g>/<v>/<resource>...`).
    pub is_resource_request: bool,
    /// The URL path.
    pub path: String,
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection
    /// (or the lower-cased HTTP method for non-resource requests).
    pub verb: String,
    /// `api` or `apis`.
    pub api_prefix: String,
    /// API group (`""` for the core group).
    pub api_group: String,
    /// API version.
    pub api_version: String,
    /// Namespace, if any.
    pub namespace: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource, if any.
    pub subresource: String,
    /// Object name, if any.
    pub name: String,
    /// The path segments after the group/version.
    pub parts: Vec<String>,
    /// Raw `labelSelector` of a list, watch or deletecollection (for authorization).
    pub label_selector: String,
    /// Raw `fieldSelector` of a list, watch or deletecollection (for authorization).
    pub field_selector: String,
}

pub use super::query::is_watch_value;

/// The name a field selector pins with `metadata.name=<n>` (or `==`), when it is a
/// valid path segment: the parsed selector's exact match, as upstream's
/// `RequiresExactMatch("metadata.name")` (an unparsable selector pins nothing; the
/// handler then answers 400 with the same parse).
fn pinned_name(selector: &str) -> Option<String> {
    let parsed = FieldSelector::parse(selector).ok()?;
    let value = parsed.required_name()?;
    let valid = !value.is_empty()
        && value != "."
        && value != ".."
        && !value.contains('/')
        && !value.contains('%');
    valid.then(|| value.to_string())
}

impl RequestInfo {
    /// Derives the request attributes from the method, path and decoded query.
    pub fn new(method: &Method, path: &str, query: &Query) -> Self {
        let mut info = RequestInfo {
            path: path.to_string(),
            verb: method.as_str().to_ascii_lowercase(),
            ..RequestInfo::default()
        };
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (prefix, rest) = match segments.split_first() {
            Some((p, rest)) if *p == "apis" || *p == "api" => (*p, rest),
            _ => return info,
        };
        info.api_prefix = prefix.to_string();
        let mut current: Vec<&str> = rest.to_vec();
        if prefix == "apis" {
            if current.len() < 3 {
                return info;
            }
            info.api_group = current.remove(0).to_string();
        } else if current.len() < 2 {
            return info;
        }
        info.api_version = current.remove(0).to_string();
        info.is_resource_request = true;

        let is_watch_path = current.first() == Some(&"watch");
        if is_watch_path {
            current.remove(0);
        }
        info.verb = match *method {
            Method::POST => "create",
            Method::GET | Method::HEAD => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
        .to_string();
        if is_watch_path {
            info.verb = "watch".into();
        }

        if current.first() == Some(&"namespaces") && current.len() > 1 {
            info.namespace = current[1].to_string();
            if current.len() > 2 {
                current.drain(..2);
            } else {
                // `/namespaces/<ns>` itself names the namespace object.
                current.remove(1);
                info.resource = "namespaces".into();
                info.name = info.namespace.clone();
                info.parts = vec!["namespaces".into(), info.name.clone()];
                info.namespace.clear();
                return info.finish_verb(method, query, is_watch_path);
            }
        }
        info.parts = current.iter().map(|s| s.to_string()).collect();
        if let Some(r) = current.first() {
            info.resource = r.to_string();
        }
        if let Some(n) = current.get(1) {
            info.name = n.to_string();
        }
        if let Some(s) = current.get(2) {
            info.subresource = s.to_string();
        }
        info.finish_verb(method, query, is_watch_path)
    }

    fn finish_verb(mut self, method: &Method, query: &Query, watch_path: bool) -> Self {
        if self.parts.len() == 1 && !watch_path {
            if self.verb == "get" {
                self.verb = "list".into();
            } else if self.verb == "delete" {
                self.verb = "deletecollection".into();
            }
        }
        if (self.verb == "list"
            || (self.verb == "get" && *method == Method::GET && self.parts.len() == 1))
            && query.is_watch()
        {
            self.verb = "watch".into();
        }
        if watch_path && self.parts.len() > 1 {
            self.verb = "watch".into();
        }
        let collection = matches!(self.verb.as_str(), "list" | "watch" | "deletecollection");
        if collection && !watch_path {
            // The first value, exactly as `ListOptions::from_query` reads it.
            let raw = |key: &str| query.get(key).unwrap_or_default().to_string();
            self.label_selector = raw("labelSelector");
            self.field_selector = raw("fieldSelector");
        }
        // A list or watch pinned to one object by `metadata.name` names it (upstream
        // does this so authorization can be per object).
        if (self.verb == "list" || self.verb == "watch")
            && self.name.is_empty()
            && let Some(name) = pinned_name(&self.field_selector)
        {
            self.name = name;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(method: Method, path: &str, query: &[(&str, &str)]) -> RequestInfo {
        RequestInfo::new(&method, path, &Query::from_pairs(query.iter().copied()))
    }

    #[test]
    fn resource_paths() {
        let i = info(
            Method::GET,
            "/apis/data.kubedojo.io/v1alpha1/namespaces/default/datarecords/x",
            &[],
        );
        assert!(i.is_resource_request);
        assert_eq!(
            (
                i.verb.as_str(),
                i.api_group.as_str(),
                i.api_version.as_str()
            ),
            ("get", "data.kubedojo.io", "v1alpha1")
        );
        assert_eq!(
            (i.namespace.as_str(), i.resource.as_str(), i.name.as_str()),
            ("default", "datarecords", "x")
        );

        let i = info(Method::GET, "/apis/metrics.k8s.io/v1beta1/pods", &[]);
        assert_eq!(
            (i.verb.as_str(), i.namespace.as_str(), i.resource.as_str()),
            ("list", "", "pods")
        );

        let i = info(Method::GET, "/apis/metrics.k8s.io/v1beta1/nodes/n1", &[]);
        assert_eq!((i.verb.as_str(), i.name.as_str()), ("get", "n1"));

        let i = info(
            Method::GET,
            "/apis/data.kubedojo.io/v1alpha1/datarecords",
            &[("watch", "true")],
        );
        assert_eq!(i.verb, "watch");
        let i = info(
            Method::GET,
            "/apis/data.kubedojo.io/v1alpha1/datarecords",
            &[("watch", "false")],
        );
        assert_eq!(i.verb, "list");
        let i = info(
            Method::GET,
            "/apis/data.kubedojo.io/v1alpha1/watch/namespaces/default/datarecords",
            &[],
        );
        assert_eq!(
            (i.verb.as_str(), i.namespace.as_str()),
            ("watch", "default")
        );

        let i = info(
            Method::DELETE,
            "/apis/data.kubedojo.io/v1alpha1/namespaces/default/datarecords",
            &[],
        );
        assert_eq!(i.verb, "deletecollection");
        let i = info(
            Method::POST,
            "/apis/data.kubedojo.io/v1alpha1/namespaces/default/datarecords",
            &[],
        );
        assert_eq!(i.verb, "create");
        let i = info(
            Method::GET,
            "/apis/data.kubedojo.io/v1alpha1/namespaces/default/datarecords/x/status",
            &[],
        );
        assert_eq!((i.name.as_str(), i.subresource.as_str()), ("x", "status"));
        let i = info(Method::GET, "/api/v1/nodes", &[]);
        assert_eq!(
            (
                i.api_group.as_str(),
                i.api_version.as_str(),
                i.verb.as_str()
            ),
            ("", "v1", "list")
        );
    }

    #[test]
    fn selectors_are_recorded_for_collections() {
        let i = info(
            Method::GET,
            "/apis/metrics.k8s.io/v1beta1/namespaces/ns1/pods",
            &[
                ("labelSelector", "app=x"),
                ("fieldSelector", "metadata.name=p1"),
            ],
        );
        assert_eq!(
            (i.verb.as_str(), i.label_selector.as_str()),
            ("list", "app=x")
        );
        assert_eq!(
            (i.field_selector.as_str(), i.name.as_str()),
            ("metadata.name=p1", "p1")
        );
        let i = info(
            Method::GET,
            "/apis/metrics.k8s.io/v1beta1/nodes/n1",
            &[("labelSelector", "app=x")],
        );
        assert_eq!(i.label_selector, "");
        let i = info(
            Method::GET,
            "/apis/data.kubedojo.io/v1alpha1/watch/namespaces/ns1/datarecords",
            &[("labelSelector", "app=x")],
        );
        assert_eq!((i.verb.as_str(), i.label_selector.as_str()), ("watch", ""));
    }

    #[test]
    fn repeated_parameters_take_the_first_value() {
        let p = "/apis/data.kubedojo.io/v1alpha1/namespaces/ns1/datarecords";
        let i = RequestInfo::new(
            &Method::GET,
            p,
            &Query::parse(Some(
                "fieldSelector=metadata.name%3Dallowed&fieldSelector=&labelSelector=a%3D1&labelSelector=",
            )),
        );
        assert_eq!(
            (
                i.verb.as_str(),
                i.name.as_str(),
                i.field_selector.as_str(),
                i.label_selector.as_str()
            ),
            ("list", "allowed", "metadata.name=allowed", "a=1")
        );
        let i = RequestInfo::new(
            &Method::GET,
            p,
            &Query::parse(Some("fieldSelector=&fieldSelector=metadata.name%3Dallowed")),
        );
        assert_eq!((i.name.as_str(), i.field_selector.as_str()), ("", ""));
        let i = RequestInfo::new(&Method::GET, p, &Query::parse(Some("watch=0&watch=1")));
        assert_eq!(i.verb, "list");
        let i = RequestInfo::new(&Method::GET, p, &Query::parse(Some("watch=1&watch=0")));
        assert_eq!(i.verb, "watch");
    }

    #[test]
    fn pinned_names_come_from_the_parsed_selector() {
        let p = "/apis/data.kubedojo.io/v1alpha1/namespaces/ns1/datarecords";
        for (sel, want) in [
            ("metadata.name=a", "a"),
            ("metadata.name==a", "a"),
            (" metadata.name = a ", " a "),
            ("metadata.namespace=ns1,metadata.name=a", "a"),
            ("metadata.name!=a", ""),
            ("metadata.name=a/b", ""),
            ("metadata.name=..", ""),
            ("metadata.name=a%2Fb", ""),
            ("metadata.name=a,bogus", ""),
        ] {
            let i = info(Method::GET, p, &[("fieldSelector", sel)]);
            assert_eq!(i.name, want, "{sel}");
        }
    }

    #[test]
    fn non_resource_paths() {
        for p in [
            "/apis",
            "/apis/metrics.k8s.io",
            "/apis/metrics.k8s.io/v1beta1",
            "/healthz",
            "/openapi/v2",
            "/api",
        ] {
            let i = info(Method::GET, p, &[]);
            assert!(!i.is_resource_request, "{p}");
            assert_eq!(i.verb, "get");
        }
    }
}
