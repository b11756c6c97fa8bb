//! The simulated fleet as Kubernetes v1 objects (JSON), for `demo` mode's core
//! endpoints (`/api/v1/nodes`, `/api/v1/pods`) and for creating the same world in a
//! real kube-apiserver in cluster tests.
//!
//! Objects are deterministic (UIDs derive from the node seed and names) and carry what
//! metrics-server-style consumers read: node addresses and kubelet port, labels,
//! capacity, Ready conditions, pod placement, phase `Running` and container requests.
//! Pods have no `ownerReferences` (a real garbage collector would delete pods whose
//! ReplicaSet does not exist) and no pod IP.

use serde_json::{Map, Value, json};

use super::{Fleet, Labels, SimContainer, SimNode, SimPod, fleet::mix};

const MIB: u64 = 1 << 20;
/// Memory held back from allocatable (kubelet's default hard eviction threshold).
pub const EVICTION_RESERVE: u64 = 100 * MIB;
/// Kubelet version reported per [`super::KubeletFormat`].
const MODERN_KUBELET: &str = "v1.33.1";
const LEGACY_KUBELET: &str = "v1.28.15";

/// A v1 `Node` for `node`: labels, InternalIP and Hostname addresses, the kubelet port,
/// capacity and allocatable, Ready conditions and nodeInfo.
pub fn node_object(node: &SimNode) -> Value {
    let booted = rfc3339(node.booted_at_ms);
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "uid": uid(node.seed, &[&node.name]),
            "labels": labels_json(&node.labels),
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
            "creationTimestamp": booted,
        },
        "spec": { "providerID": format!("kubedojo-sim://{}", node.name) },
        "status": {
            "addresses": [
                { "type": "InternalIP", "address": node.address.to_string() },
                { "type": "Hostname", "address": node.name },
            ],
            "capacity": resources(node, 0),
            "allocatable": resources(node, EVICTION_RESERVE),
            "conditions": node_conditions(&booted),
            "daemonEndpoints": { "kubeletEndpoint": { "Port": node.port } },
            "nodeInfo": node_info(node),
        },
    })
}

/// A v1 `Pod` for `pod` bound to `node`: labels, containers with images and requests,
/// phase `Running`, Ready conditions and running container statuses.
pub fn pod_object(node: &SimNode, pod: &SimPod) -> Value {
    let created = rfc3339(pod.created_at_ms);
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod.name,
            "namespace": &*pod.namespace,
            "uid": uid(node.seed, &[&pod.namespace, &pod.name]),
            "labels": labels_json(&pod.labels),
            "creationTimestamp": created,
        },
        "spec": {
            "nodeName": node.name,
            "containers": pod.containers.iter().map(container_spec).collect::<Vec<_>>(),
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "automountServiceAccountToken": false,
            "schedulerName": "default-scheduler",
        },
        "status": {
            "phase": "Running",
            "conditions": pod_conditions(pod),
            "hostIP": node.address.to_string(),
            "hostIPs": [{ "ip": node.address.to_string() }],
            "startTime": created,
            "qosClass": "Burstable",
            "containerStatuses": pod.containers.iter().map(|c| container_status(node, pod, c)).collect::<Vec<_>>(),
        },
    })
}

/// A v1 `Namespace` called `name`.
pub fn namespace_object(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": name, "labels": { "kubernetes.io/metadata.name": name } },
    })
}

/// The whole fleet as a v1 `List`: the namespaces its pods use (in spec order, including
/// `default` if used), then every node, then every pod. Suitable for `kubectl apply -f`.
pub fn fleet_objects_json(fleet: &Fleet) -> Value {
    let used = |ns: &&String| fleet.pods().any(|(_, p)| &*p.namespace == ns.as_str());
    let namespaces = fleet
        .spec
        .namespaces
        .iter()
        .filter(used)
        .map(|ns| namespace_object(ns));
    let nodes = fleet.nodes.iter().map(node_object);
    let pods = fleet.pods().map(|(node, pod)| pod_object(node, pod));
    json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": { "resourceVersion": "" },
        "items": namespaces.chain(nodes).chain(pods).collect::<Vec<_>>(),
    })
}

fn labels_json(labels: &Labels) -> Value {
    let map: Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_owned(), Value::from(v)))
        .collect();
    Value::Object(map)
}

fn resources(node: &SimNode, memory_reserve: u64) -> Value {
    json!({
        "cpu": cpu_quantity(node.capacity_cpu_millicores),
        "memory": memory_quantity(node.capacity_memory_bytes.saturating_sub(memory_reserve)),
        "pods": node.max_pods.to_string(),
        "ephemeral-storage": "102626232Ki",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
    })
}

fn node_conditions(since: &str) -> Value {
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": kind, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": since, "lastTransitionTime": since,
        })
    };
    json!([
        condition(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available"
        ),
        condition(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure"
        ),
        condition(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available"
        ),
        condition(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status"
        ),
    ])
}

fn node_info(node: &SimNode) -> Value {
    let kubelet = match node.format {
        super::KubeletFormat::Modern => MODERN_KUBELET,
        super::KubeletFormat::Legacy => LEGACY_KUBELET,
    };
    json!({
        "architecture": "amd64",
        "bootID": uid(node.seed, &["boot"]),
        "containerRuntimeVersion": "containerd://2.1.1",
        "kernelVersion": "6.12.0-kubedojo-sim",
        "kubeProxyVersion": "",
        "kubeletVersion": kubelet,
        "machineID": uid(node.seed, &["machine"]).replace('-', ""),
        "operatingSystem": "linux",
        "osImage": "Debian GNU/Linux 12 (bookworm)",
        "systemUUID": uid(node.seed, &["system"]),
    })
}

fn container_spec(c: &SimContainer) -> Value {
    json!({
        "name": &*c.name,
        "image": &*c.image,
        "imagePullPolicy": "IfNotPresent",
        "resources": { "requests": {
            "cpu": cpu_quantity(c.cpu_request_millicores),
            "memory": memory_quantity(c.memory_request_bytes),
        } },
    })
}

fn container_status(node: &SimNode, pod: &SimPod, c: &SimContainer) -> Value {
    let id = uid(node.seed, &[&pod.namespace, &pod.name, &c.name]).replace('-', "");
    json!({
        "name": &*c.name,
        "image": &*c.image,
        "imageID": format!("{}@sha256:{id}{id}", c.image.split(':').next().unwrap_or_default()),
        "containerID": format!("containerd://{id}{id}"),
        "ready": true,
        "started": true,
        "restartCount": c.restart_count,
        "state": { "running": { "startedAt": rfc3339(c.started_at_ms) } },
    })
}

fn pod_conditions(pod: &SimPod) -> Value {
    let ready = pod
        .containers
        .iter()
        .map(|c| c.started_at_ms)
        .max()
        .unwrap_or(pod.created_at_ms);
    let condition = |kind: &str, at: i64| json!({ "type": kind, "status": "True", "lastTransitionTime": rfc3339(at) });
    json!([
        condition("PodReadyToStartContainers", pod.created_at_ms + 1_000),
        condition("Initialized", pod.created_at_ms),
        condition("Ready", ready),
        condition("ContainersReady", ready),
        condition("PodScheduled", pod.created_at_ms),
    ])
}

/// `"16"` for whole cores, `"1500m"` otherwise.
fn cpu_quantity(millicores: u64) -> String {
    if millicores.is_multiple_of(1000) {
        (millicores / 1000).to_string()
    } else {
        format!("{millicores}m")
    }
}

/// `"64Mi"` when whole MiB, else `"<n>Ki"` like a kubelet, else plain bytes.
fn memory_quantity(bytes: u64) -> String {
    match bytes {
        b if b % MIB == 0 => format!("{}Mi", b / MIB),
        b if b % 1024 == 0 => format!("{}Ki", b / 1024),
        b => b.to_string(),
    }
}

/// A deterministic RFC 4122-shaped (version 4) UID from the node seed and some names.
fn uid(seed: u64, parts: &[&str]) -> String {
    let hash = |salt: u64| {
        parts.iter().fold(mix(&[seed, salt]), |h, p| {
            p.bytes()
                .fold(mix(&[h, 0x100]), |h, b| mix(&[h, u64::from(b)]))
        })
    };
    let (hi, lo) = (hash(1), hash(2));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xfff,
        0x8000 | (lo >> 48) & 0x3fff,
        lo & 0xffff_ffff_ffff
    )
}

/// `2025-06-23T19:09:30Z` (seconds precision, as Kubernetes timestamps are).
fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms.div_euclid(1000) * 1000)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Namespace, Node, Pod};

    use super::*;
    use crate::sim::FleetSpec;

    const T0: i64 = 1_750_705_770_123;

    fn fleet() -> Fleet {
        Fleet::new(
            &FleetSpec {
                nodes: 2,
                pods_per_node: 4,
                ..FleetSpec::default()
            },
            T0,
        )
        .unwrap()
    }

    #[test]
    fn node_object_is_a_valid_v1_node_with_kubelet_endpoint() {
        let f = fleet();
        let sim = &f.nodes[1];
        let node: Node = serde_json::from_value(node_object(sim)).expect("valid v1 Node");
        assert_eq!(node.metadata.name.as_deref(), Some("sim-node-0002"));
        let labels = node.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "sim-node-0002");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        let status = node.status.unwrap();
        let addresses: Vec<(String, String)> = status
            .addresses
            .unwrap()
            .into_iter()
            .map(|a| (a.type_, a.address))
            .collect();
        assert_eq!(
            addresses,
            [
                ("InternalIP".into(), "127.1.0.2".into()),
                ("Hostname".into(), "sim-node-0002".into())
            ]
        );
        assert_eq!(
            status
                .daemon_endpoints
                .unwrap()
                .kubelet_endpoint
                .unwrap()
                .port,
            10250
        );
        let capacity = status.capacity.unwrap();
        assert_eq!(
            capacity["cpu"].0,
            (sim.capacity_cpu_millicores / 1000).to_string()
        );
        assert_eq!(
            capacity["memory"].0,
            format!("{}Mi", sim.capacity_memory_bytes / MIB)
        );
        assert_eq!(capacity["pods"].0, "110");
        let ready = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(status.node_info.unwrap().kubelet_version, MODERN_KUBELET);
    }

    #[test]
    fn pod_object_is_a_valid_running_v1_pod() {
        let f = fleet();
        let (node, sim) = (&f.nodes[0], &f.nodes[0].pods[2]);
        let pod: Pod = serde_json::from_value(pod_object(node, sim)).expect("valid v1 Pod");
        assert_eq!(pod.metadata.name.as_deref(), Some(sim.name.as_str()));
        assert_eq!(pod.metadata.namespace.as_deref(), Some(&*sim.namespace));
        assert_eq!(pod.metadata.labels.unwrap()["app"], &*sim.app);
        let created = pod.metadata.creation_timestamp.unwrap().0.as_millisecond();
        assert_eq!(created, sim.created_at_ms.div_euclid(1000) * 1000);
        let spec = pod.spec.unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("sim-node-0001"));
        let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            sim.containers.iter().map(|c| &*c.name).collect::<Vec<_>>()
        );
        let requests = spec.containers[0]
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap();
        assert_eq!(
            requests["cpu"].0,
            format!("{}m", sim.containers[0].cpu_request_millicores)
        );
        let status = pod.status.unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let ready = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(
            status.container_statuses.unwrap().len(),
            sim.containers.len()
        );
    }

    #[test]
    fn fleet_list_holds_namespaces_nodes_and_pods() {
        let f = fleet();
        let list = fleet_objects_json(&f);
        let items = list["items"].as_array().unwrap();
        let kinds: Vec<&str> = items.iter().map(|i| i["kind"].as_str().unwrap()).collect();
        let count = |k| kinds.iter().filter(|&&x| x == k).count();
        assert_eq!((count("Namespace"), count("Node"), count("Pod")), (3, 2, 8));
        assert!(
            kinds.is_sorted_by_key(|k| ["Namespace", "Node", "Pod"].iter().position(|x| x == k))
        );
        let ns: Namespace = serde_json::from_value(items[0].clone()).unwrap();
        assert_eq!(ns.metadata.name.as_deref(), Some("default"));
        let uids: std::collections::HashSet<&str> = items
            .iter()
            .filter_map(|i| i["metadata"]["uid"].as_str())
            .collect();
        assert_eq!(uids.len(), 10, "UIDs are unique");
        assert_eq!(fleet_objects_json(&fleet()), list, "deterministic");
    }

    #[test]
    fn helpers_format_quantities_times_and_uids() {
        assert_eq!(cpu_quantity(16_000), "16");
        assert_eq!(cpu_quantity(250), "250m");
        assert_eq!(memory_quantity(64 * MIB), "64Mi");
        assert_eq!(memory_quantity(12_288), "12Ki");
        assert_eq!(memory_quantity(1_000), "1000");
        assert_eq!(rfc3339(1_633_253_812_125), "2021-10-03T09:36:52Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        let id = uid(7, &["a", "b"]);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(id, uid(7, &["ab"]));
        assert_eq!(id, uid(7, &["a", "b"]));
    }
}
