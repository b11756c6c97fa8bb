//! Where to scrape a node: address by preferred type, port, path (as metrics-server).

use super::NodeInfo;

/// The node annotation that overrides the scrape path.
pub const METRICS_PATH_ANNOTATION: &str = "metrics.k8s.io/resource-metrics-path";
/// The default kubelet resource metrics path.
pub const DEFAULT_PATH: &str = "/metrics/resource";

/// How to reach kubelets.
#[derive(Clone, Debug)]
pub struct KubeletAddressing {
    /// Address types in priority order (`InternalIP,ExternalIP,Hostname`).
    pub preferred_types: Vec<String>,
    /// Default kubelet port.
    pub port: u16,
    /// Use `status.daemonEndpoints.kubeletEndpoint.port` when it is set.
    pub use_node_status_port: bool,
    /// `https` (or `http` only when explicitly made insecure).
    pub scheme: &'static str,
}

impl Default for KubeletAddressing {
    fn default() -> Self {
        KubeletAddressing {
            preferred_types: vec!["InternalIP".into(), "ExternalIP".into(), "Hostname".into()],
            port: 10250,
            use_node_status_port: false,
            scheme: "https",
        }
    }
}

impl KubeletAddressing {
    /// The URL to scrape, or an error naming the types that did not match.
    pub fn url(&self, node: &NodeInfo) -> Result<String, String> {
        let address = self
            .preferred_types
            .iter()
            .find_map(|t| {
                node.addresses
                    .iter()
                    .find(|(kind, _)| kind == t)
                    .map(|(_, a)| a)
            })
            .ok_or_else(|| format!("no address matched types {:?}", self.preferred_types))?;
        let port = if self.use_node_status_port && node.kubelet_port != 0 {
            node.kubelet_port
        } else {
            self.port
        };
        let path = node.metrics_path.as_deref().unwrap_or(DEFAULT_PATH);
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let host = if address.contains(':') && !address.starts_with('[') {
            format!("[{address}]")
        } else {
            address.clone()
        };
        Ok(format!("{}://{host}:{port}{path}", self.scheme))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn node(addresses: &[(&str, &str)], port: u16, path: Option<&str>) -> NodeInfo {
        NodeInfo {
            name: "n".into(),
            labels: Arc::default(),
            addresses: addresses
                .iter()
                .map(|(t, a)| (t.to_string(), a.to_string()))
                .collect(),
            kubelet_port: port,
            metrics_path: path.map(str::to_string),
            ready: true,
            allocatable: None,
        }
    }

    #[test]
    fn picks_address_port_and_path() {
        let a = KubeletAddressing::default();
        let n = node(
            &[("Hostname", "n1"), ("InternalIP", "10.0.0.1")],
            10255,
            None,
        );
        assert_eq!(
            a.url(&n).unwrap(),
            "https://10.0.0.1:10250/metrics/resource"
        );
        let a = KubeletAddressing {
            use_node_status_port: true,
            ..a
        };
        assert_eq!(
            a.url(&n).unwrap(),
            "https://10.0.0.1:10255/metrics/resource"
        );
        let n = node(&[("Hostname", "n1")], 0, Some("/custom/path"));
        assert_eq!(a.url(&n).unwrap(), "https://n1:10250/custom/path");
        let n = node(&[("InternalIP", "fd00::1")], 0, None);
        assert_eq!(
            a.url(&n).unwrap(),
            "https://[fd00::1]:10250/metrics/resource"
        );
        let n = node(&[("InternalDNS", "x")], 0, None);
        assert!(a.url(&n).unwrap_err().contains("no address matched"));
    }
}
