//! The deterministic fleet model: nodes, pods and containers with fixed usage rates.
//!
//! Everything is derived from [`FleetSpec::seed`], the start time and the indices with a
//! stateless hash (splitmix64), so the same spec always gives the same names, labels,
//! addresses and rates, on any machine and any Rust version. Tests read the expected
//! usage straight from [`SimContainer::cpu_nanocores`] and [`SimContainer::memory_bytes`].
//!
//! Pods belong to "deployments": one per (namespace, app) pair. Every pod of a deployment
//! shares its `app` and `pod-template-hash` labels and its name prefix
//! (`<app>-<hash>-<5 chars>`, like a ReplicaSet's pods), and the pods of each deployment
//! are spread round-robin over the nodes, so `app=web` selects a known subset in every
//! namespace.

use std::{net::Ipv4Addr, sync::Arc};

use super::{KubeletFormat, SimError, UsageModel, Wave};

/// Milliseconds in one minute, hour and day.
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Nanocores in one millicore.
const MILLICORE: u64 = 1_000_000;
/// Rates are whole microcores, so cumulative nanoseconds are exact at ms timestamps.
const MICROCORE: u64 = 1_000;
/// Alphabet of Kubernetes generated names (`k8s.io/apimachinery/pkg/util/rand`).
const NAME_ALPHABET: &[u8; 27] = b"bcdfghjklmnpqrstvwxz2456789";
/// 27^5: the number of distinct 5-character pod name suffixes.
const SUFFIX_SPACE: u64 = 27 * 27 * 27 * 27 * 27;
/// Names of the second and later containers of a pod (the first is named after the app).
const SIDECARS: [&str; 5] = [
    "istio-proxy",
    "log-shipper",
    "config-reloader",
    "metrics-exporter",
    "oauth-proxy",
];

/// What to simulate. Every field has a sensible [`Default`]; override with struct update
/// syntax: `FleetSpec { nodes: 500, ..FleetSpec::default() }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetSpec {
    /// Number of nodes (each gets its own address).
    pub nodes: usize,
    /// Pods on every node.
    pub pods_per_node: usize,
    /// Containers in every pod (at least 1).
    pub containers_per_pod: usize,
    /// Namespaces the deployments are spread over (at least 1).
    pub namespaces: Vec<String>,
    /// App names: one deployment per (namespace, app), labelled `app=<name>` (at least 1,
    /// no duplicates).
    pub apps: Vec<String>,
    /// Address of the first node; the next nodes get consecutive addresses, skipping
    /// `.0` and `.255` in the last octet and staying inside the first address's `/8`.
    pub first_address: Ipv4Addr,
    /// Kubelet port of every node (`0` lets each listener pick an ephemeral port; the
    /// bound addresses are then in [`super::SimHandle::addr`]).
    pub port: u16,
    /// Seed of every derived value.
    pub seed: u64,
    /// Share of containers, in percent (0..=100), whose CPU rate is exactly 0.
    pub idle_percent: u8,
    /// Which kubelet generation's text format the nodes speak.
    pub format: KubeletFormat,
    /// Deployment sizes `(min, max)` pods: when set, deployments of a size drawn per
    /// deployment from `min..=max` are added until every pod slot has one (app names
    /// `<app>`, then `<app>-1`, `<app>-2`… per namespace), like the HPA targets of a real
    /// cluster; when `None`, one deployment per (namespace, app) shares the pods equally.
    pub deployment_pods: Option<(usize, usize)>,
    /// How usage moves over time: [`UsageModel::Constant`] (the default here, for exact
    /// figures) or [`UsageModel::Wave`] (what `demo` runs by default).
    pub usage: UsageModel,
}

impl Default for FleetSpec {
    fn default() -> Self {
        Self {
            nodes: 3,
            pods_per_node: 30,
            containers_per_pod: 2,
            namespaces: ["default", "team-a", "team-b"].map(String::from).to_vec(),
            apps: [
                "web", "api", "worker", "cache", "auth", "search", "billing", "frontend",
            ]
            .map(String::from)
            .to_vec(),
            first_address: Ipv4Addr::new(127, 1, 0, 1),
            port: 10250,
            seed: 1,
            idle_percent: 5,
            format: KubeletFormat::Modern,
            deployment_pods: None,
            usage: UsageModel::Constant,
        }
    }
}

impl FleetSpec {
    /// Checks the spec; [`Fleet::new`] calls this first.
    pub fn validate(&self) -> Result<(), SimError> {
        let invalid = |msg: &str| Err(SimError::InvalidSpec(msg.to_owned()));
        if self.containers_per_pod == 0 {
            return invalid("containers_per_pod must be at least 1");
        }
        if self.namespaces.is_empty() || self.namespaces.iter().any(String::is_empty) {
            return invalid("namespaces must be a non-empty list of non-empty names");
        }
        if self.apps.is_empty() || self.apps.iter().any(String::is_empty) {
            return invalid("apps must be a non-empty list of non-empty names");
        }
        if has_duplicates(&self.namespaces) || has_duplicates(&self.apps) {
            return invalid("namespaces and apps must not repeat");
        }
        if self.idle_percent > 100 {
            return invalid("idle_percent must be at most 100");
        }
        if let Some((min, max)) = self.deployment_pods
            && (min == 0 || min > max)
        {
            return invalid("deployment_pods must be (min, max) with 1 <= min <= max");
        }
        Ok(())
    }
}

/// Kubernetes labels as `(key, value)` pairs sorted by key; strings are shared between
/// the objects that carry the same label.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Labels(Vec<(Arc<str>, Arc<str>)>);

impl Labels {
    /// Builds labels from pairs; a repeated key keeps its last value.
    pub fn new(pairs: impl IntoIterator<Item = (Arc<str>, Arc<str>)>) -> Self {
        let mut pairs: Vec<_> = pairs.into_iter().collect();
        pairs.reverse();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|a, b| a.0 == b.0);
        Self(pairs)
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        let i = self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok()?;
        Some(&self.0[i].1)
    }

    /// The pairs, sorted by key.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether every `key=value` requirement holds (an equality label selector).
    pub fn matches(&self, selector: &[(&str, &str)]) -> bool {
        selector.iter().all(|(k, v)| self.get(k) == Some(v))
    }
}

/// A simulated fleet: immutable once built, shared as `Arc<Fleet>` by the servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fleet {
    /// The spec it was built from.
    pub spec: FleetSpec,
    /// The `started_at_ms` it was built with: every container started before it.
    pub started_at_ms: i64,
    /// The nodes, in index order (`sim-node-0001` first).
    pub nodes: Vec<SimNode>,
}

/// One simulated node and its kubelet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimNode {
    /// Position in [`Fleet::nodes`].
    pub index: usize,
    /// Node name, `sim-node-0001`, `sim-node-0002`, …
    pub name: String,
    /// The kubelet's listen address (the node's InternalIP).
    pub address: Ipv4Addr,
    /// The kubelet's port.
    pub port: u16,
    /// Node labels: `kubernetes.io/hostname`, `kubernetes.io/os=linux`,
    /// `kubernetes.io/arch=amd64`, `node-role.kubernetes.io/worker`,
    /// `node.kubernetes.io/instance-type` and `topology.kubernetes.io/zone`
    /// (`sim-zone-a|b|c`, round-robin by index).
    pub labels: Labels,
    /// CPU capacity in millicores (whole cores).
    pub capacity_cpu_millicores: u64,
    /// Memory capacity in bytes.
    pub capacity_memory_bytes: u64,
    /// Maximum pods (`status.capacity.pods`).
    pub max_pods: u32,
    /// Node CPU usage rate in nanocores: the sum of its containers plus
    /// [`SimNode::system_cpu_nanocores`] (see [`SimNode::update_totals`]).
    pub cpu_nanocores: u64,
    /// Node working set in bytes: the sum of its containers plus
    /// [`SimNode::system_memory_bytes`].
    pub memory_bytes: u64,
    /// CPU used outside pods (system daemons, kernel), in nanocores.
    pub system_cpu_nanocores: u64,
    /// Memory used outside pods, in bytes.
    pub system_memory_bytes: u64,
    /// Boot time in ms since the epoch; the system CPU counter starts here.
    pub booted_at_ms: i64,
    /// Per-node seed (timestamp jitter, object UIDs).
    pub seed: u64,
    /// The text format this kubelet speaks.
    pub format: KubeletFormat,
    /// Pods on this node, sorted by (namespace, name) as the kubelet emits them.
    pub pods: Vec<SimPod>,
}

/// One simulated pod of a deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimPod {
    /// Namespace.
    pub namespace: Arc<str>,
    /// Name: `<app>-<pod-template-hash>-<5 chars>`, unique within the namespace.
    pub name: String,
    /// The deployment's app name (also the `app` label and the first container's name).
    pub app: Arc<str>,
    /// The deployment's `pod-template-hash` (10 characters).
    pub template_hash: Arc<str>,
    /// Labels: `app` and `pod-template-hash`.
    pub labels: Labels,
    /// Creation time in ms since the epoch.
    pub created_at_ms: i64,
    /// Containers, the app's own first, then sidecars.
    pub containers: Vec<SimContainer>,
}

/// One simulated container: a CPU rate and working set, constant or following a [`Wave`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimContainer {
    /// Container name, unique within the pod.
    pub name: Arc<str>,
    /// Image reference (never pulled; for the Pod object only).
    pub image: Arc<str>,
    /// Base CPU usage rate in nanocores: whole microcores between 1m and 500m, or exactly
    /// 0 for an idle container. Without a [`SimContainer::wave`] it is the rate, and the
    /// cumulative counter is `counter_base_ns + cpu_nanocores × (t − counter_since_ms) / 1000`
    /// nanoseconds at `t` ms; an idle container's stays at [`IDLE_COUNTER_NS`] (a real
    /// container has used some CPU to start, and a 0 counter is the kubelet's "no stats
    /// yet" placeholder). See [`SimContainer::cpu_nanocores_at`].
    pub cpu_nanocores: u64,
    /// Base working set in bytes (a multiple of 4 KiB); see [`SimContainer::memory_bytes_at`].
    pub memory_bytes: u64,
    /// The usage variation around the base values (`None`: constant).
    pub wave: Option<Wave>,
    /// The CPU counter at [`SimContainer::counter_since_ms`] (0 at the start; the value
    /// reached when the rate was last changed with [`SimContainer::set_usage`]).
    pub counter_base_ns: u64,
    /// Since when the counter grows at the current rate (the start time, or the last
    /// [`SimContainer::set_usage`]).
    pub counter_since_ms: i64,
    /// CPU request in millicores (for the Pod object).
    pub cpu_request_millicores: u64,
    /// Memory request in bytes (for the Pod object).
    pub memory_request_bytes: u64,
    /// Start time of the current instance in ms since the epoch.
    pub started_at_ms: i64,
    /// Restarts before the current instance.
    pub restart_count: u32,
}

impl Fleet {
    /// Builds the fleet for `spec`; every container started before `started_at_ms`.
    pub fn new(spec: &FleetSpec, started_at_ms: i64) -> Result<Self, SimError> {
        spec.validate()?;
        let addresses = node_addresses(spec.first_address, spec.nodes)?;
        let catalogue = Catalogue::new(spec);
        let nodes = addresses
            .into_iter()
            .enumerate()
            .map(|(i, address)| catalogue.node(i, address, started_at_ms))
            .collect();
        Ok(Self {
            spec: spec.clone(),
            started_at_ms,
            nodes,
        })
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&SimNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Every pod with its node.
    pub fn pods(&self) -> impl Iterator<Item = (&SimNode, &SimPod)> {
        self.nodes
            .iter()
            .flat_map(|n| n.pods.iter().map(move |p| (n, p)))
    }

    /// Total number of pods.
    pub fn pod_count(&self) -> usize {
        self.nodes.iter().map(|n| n.pods.len()).sum()
    }

    /// Total number of containers.
    pub fn container_count(&self) -> usize {
        self.pods().map(|(_, p)| p.containers.len()).sum()
    }

    /// The node index and position of pod `namespace/name`.
    pub fn find_pod(&self, namespace: &str, name: &str) -> Option<(usize, usize)> {
        self.nodes.iter().enumerate().find_map(|(n, node)| {
            node.pods
                .iter()
                .position(|p| &*p.namespace == namespace && p.name == name)
                .map(|i| (n, i))
        })
    }

    /// Puts `pod` on node `node` (kept in (namespace, name) order), replacing a pod of the
    /// same namespace and name wherever it was. Containers the old pod had on the same node
    /// keep their counters: their usage changes at `at_ms` ([`SimContainer::set_usage`]).
    pub fn put_pod(&mut self, node: usize, mut pod: SimPod, at_ms: i64) -> Result<(), SimError> {
        if node >= self.nodes.len() {
            return Err(SimError::NoSuchNode(node));
        }
        if let Some((n, i)) = self.find_pod(&pod.namespace, &pod.name) {
            let old = self.nodes[n].pods.remove(i);
            self.nodes[n].update_totals();
            if n == node {
                pod.created_at_ms = old.created_at_ms;
                for c in &mut pod.containers {
                    if let Some(prev) = old.containers.iter().find(|o| o.name == c.name) {
                        let (cpu, memory) = (c.cpu_nanocores, c.memory_bytes);
                        *c = prev.clone();
                        c.set_usage(at_ms, cpu, memory);
                    }
                }
            }
        }
        let pods = &mut self.nodes[node].pods;
        let at = pods.partition_point(|p| (&p.namespace, &p.name) < (&pod.namespace, &pod.name));
        pods.insert(at, pod);
        self.nodes[node].update_totals();
        Ok(())
    }

    /// Removes pod `namespace/name`; whether it was there.
    pub fn remove_pod(&mut self, namespace: &str, name: &str) -> bool {
        let Some((n, i)) = self.find_pod(namespace, name) else {
            return false;
        };
        self.nodes[n].pods.remove(i);
        self.nodes[n].update_totals();
        true
    }
}

impl SimNode {
    /// Node CPU rate at `t_ms`: its containers' plus the system's, in nanocores.
    pub fn cpu_nanocores_at(&self, t_ms: i64) -> u64 {
        let pods = saturating_sum(self.pods.iter().map(|p| p.cpu_nanocores_at(t_ms)));
        pods.saturating_add(self.system_cpu_nanocores)
    }

    /// Node working set at `t_ms`: its containers' plus the system's, in bytes.
    pub fn memory_bytes_at(&self, t_ms: i64) -> u64 {
        let pods = saturating_sum(self.pods.iter().map(|p| p.memory_bytes_at(t_ms)));
        pods.saturating_add(self.system_memory_bytes)
    }

    /// Mean node CPU rate from `from_ms` to `to_ms` (what a scraper computes from the
    /// node counter sampled at those times), in nanocores.
    pub fn mean_cpu_nanocores(&self, from_ms: i64, to_ms: i64) -> u64 {
        let pods = saturating_sum(
            self.pods
                .iter()
                .map(|p| p.mean_cpu_nanocores(from_ms, to_ms)),
        );
        pods.saturating_add(self.system_cpu_nanocores)
    }

    /// Recomputes [`SimNode::cpu_nanocores`] and [`SimNode::memory_bytes`] from the
    /// containers and the system overhead (call after editing containers by hand).
    pub fn update_totals(&mut self) {
        let pods = self.pods.iter();
        let cpu = saturating_sum(pods.clone().map(SimPod::cpu_nanocores));
        self.cpu_nanocores = cpu.saturating_add(self.system_cpu_nanocores);
        let memory = saturating_sum(pods.map(SimPod::memory_bytes));
        self.memory_bytes = memory.saturating_add(self.system_memory_bytes);
    }
}

impl SimPod {
    /// A pod started at `at_ms` whose containers `(name, cpu nanocores, memory bytes)` use
    /// constant amounts (requests equal to the usage), as the control endpoint adds them.
    pub fn with_usage(
        namespace: &str,
        name: &str,
        labels: Labels,
        containers: &[(String, u64, u64)],
        at_ms: i64,
    ) -> Self {
        let app: Arc<str> = labels.get("app").unwrap_or(name).into();
        SimPod {
            namespace: namespace.into(),
            name: name.to_owned(),
            template_hash: labels.get("pod-template-hash").unwrap_or("").into(),
            app,
            labels,
            created_at_ms: at_ms,
            containers: containers
                .iter()
                .map(|(c, cpu, memory)| SimContainer {
                    name: c.as_str().into(),
                    image: format!("registry.example/kubedojo-sim/{c}:1.0").into(),
                    cpu_nanocores: *cpu,
                    memory_bytes: *memory,
                    wave: None,
                    counter_base_ns: IDLE_COUNTER_NS,
                    counter_since_ms: at_ms,
                    cpu_request_millicores: cpu / MILLICORE,
                    memory_request_bytes: *memory,
                    started_at_ms: at_ms,
                    restart_count: 0,
                })
                .collect(),
        }
    }

    /// Pod CPU rate: the sum of its containers, in nanocores.
    pub fn cpu_nanocores(&self) -> u64 {
        saturating_sum(self.containers.iter().map(|c| c.cpu_nanocores))
    }

    /// Pod working set: the sum of its containers, in bytes.
    pub fn memory_bytes(&self) -> u64 {
        saturating_sum(self.containers.iter().map(|c| c.memory_bytes))
    }

    /// Pod CPU rate at `t_ms`, in nanocores.
    pub fn cpu_nanocores_at(&self, t_ms: i64) -> u64 {
        saturating_sum(self.containers.iter().map(|c| c.cpu_nanocores_at(t_ms)))
    }

    /// Pod working set at `t_ms`, in bytes.
    pub fn memory_bytes_at(&self, t_ms: i64) -> u64 {
        saturating_sum(self.containers.iter().map(|c| c.memory_bytes_at(t_ms)))
    }

    /// Mean pod CPU rate from `from_ms` to `to_ms`, in nanocores.
    pub fn mean_cpu_nanocores(&self, from_ms: i64, to_ms: i64) -> u64 {
        saturating_sum(
            self.containers
                .iter()
                .map(|c| c.mean_cpu_nanocores(from_ms, to_ms)),
        )
    }
}

impl SimContainer {
    /// Cumulative CPU time in nanoseconds at `at_ms` (0 before the container started).
    pub fn cumulative_cpu_ns(&self, at_ms: i64) -> u64 {
        if self.cpu_nanocores == 0 && self.counter_base_ns == 0 {
            return IDLE_COUNTER_NS;
        }
        if at_ms < self.started_at_ms {
            return 0;
        }
        let since = self.counter_since_ms;
        let linear = cumulative_ns(self.cpu_nanocores, since, at_ms);
        let extra = self.wave.map_or(0.0, |w| {
            w.cpu_extra_ns(self.cpu_nanocores, since, at_ms).round()
        });
        self.counter_base_ns
            .saturating_add(linear)
            .saturating_add_signed(extra as i64)
    }

    /// CPU rate at `t_ms`, in nanocores (the base rate unless there is a wave).
    pub fn cpu_nanocores_at(&self, t_ms: i64) -> u64 {
        match self.wave {
            Some(w) => w.cpu_nanocores_at(self.cpu_nanocores, t_ms),
            None => self.cpu_nanocores,
        }
    }

    /// Working set at `t_ms`, in bytes (the base unless there is a wave).
    pub fn memory_bytes_at(&self, t_ms: i64) -> u64 {
        match self.wave {
            Some(w) => w.memory_bytes_at(self.memory_bytes, t_ms),
            None => self.memory_bytes,
        }
    }

    /// Mean CPU rate from `from_ms` to `to_ms`: the counter's increase over the time, in
    /// nanocores (the rate at `to_ms` for an empty interval).
    pub fn mean_cpu_nanocores(&self, from_ms: i64, to_ms: i64) -> u64 {
        if to_ms <= from_ms {
            return self.cpu_nanocores_at(to_ms);
        }
        let used = self
            .cumulative_cpu_ns(to_ms)
            .saturating_sub(self.cumulative_cpu_ns(from_ms));
        let ms = u128::try_from(to_ms.saturating_sub(from_ms)).unwrap_or(1);
        u64::try_from(u128::from(used) * 1000 / ms).unwrap_or(u64::MAX)
    }

    /// From `at_ms` on, a constant rate and working set: the counter continues from its
    /// value at `at_ms` (so rates stay honest), the wave stops.
    pub fn set_usage(&mut self, at_ms: i64, cpu_nanocores: u64, memory_bytes: u64) {
        let at = at_ms.max(self.started_at_ms);
        self.counter_base_ns = self.cumulative_cpu_ns(at).max(IDLE_COUNTER_NS);
        self.counter_since_ms = at;
        self.cpu_nanocores = cpu_nanocores;
        self.memory_bytes = memory_bytes;
        self.wave = None;
    }
}

/// The constant cumulative CPU of an idle simulated container: 1 µs.
pub const IDLE_COUNTER_NS: u64 = 1_000;

/// Nanoseconds of CPU used at `rate` nanocores from `since_ms` to `at_ms` (saturating).
pub(crate) fn cumulative_ns(rate: u64, since_ms: i64, at_ms: i64) -> u64 {
    let elapsed = u128::try_from(at_ms.saturating_sub(since_ms)).unwrap_or(0);
    u64::try_from(u128::from(rate) * elapsed / 1000).unwrap_or(u64::MAX)
}

/// Consecutive node addresses from `first`, skipping `.0` and `.255` last octets.
fn node_addresses(first: Ipv4Addr, count: usize) -> Result<Vec<Ipv4Addr>, SimError> {
    let network = u32::from(first) >> 24;
    let mut out = Vec::with_capacity(count);
    let mut next = u32::from(first);
    while out.len() < count {
        if next >> 24 != network {
            return Err(SimError::InvalidSpec(format!(
                "{count} nodes from {first} do not fit in {network}.0.0.0/8"
            )));
        }
        if !matches!(next & 0xff, 0 | 255) {
            out.push(Ipv4Addr::from(next));
        }
        next = next.wrapping_add(1);
    }
    Ok(out)
}

fn has_duplicates(names: &[String]) -> bool {
    let mut sorted: Vec<&String> = names.iter().collect();
    sorted.sort();
    sorted.windows(2).any(|w| w[0] == w[1])
}

/// Purposes of derived values: each gets its own hash stream.
#[derive(Clone, Copy)]
enum Salt {
    Node = 1,
    Deployment,
    Pod,
    Container,
    DeploymentSize,
}

/// splitmix64's finaliser: a fast, well-mixed, stateless 64-bit hash step.
pub(crate) const fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hashes a sequence of words.
pub(crate) fn mix(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x243F_6A88_85A3_08D3, |h, &p| splitmix(h ^ p))
}

/// A uniform value in `lo..hi` from the hash `h` (`lo` if the range is empty).
pub(crate) fn pick(h: u64, lo: u64, hi: u64) -> u64 {
    lo + h % hi.saturating_sub(lo).max(1)
}

/// Sum that saturates instead of overflowing (values can be edited by hand).
pub(crate) fn saturating_sum(values: impl Iterator<Item = u64>) -> u64 {
    values.fold(0, u64::saturating_add)
}

/// One deployment: a (namespace, app) pair with its template hash.
#[derive(Debug)]
struct Deployment {
    namespace: Arc<str>,
    app: Arc<str>,
    hash: Arc<str>,
    labels: Labels,
    /// Affine bijection on the suffix space (`a` coprime to 27): replica → suffix.
    suffix_mul: u64,
    suffix_add: u64,
    containers: Vec<(Arc<str>, Arc<str>)>,
}

/// Interned strings and deployments shared by every pod.
struct Catalogue<'a> {
    spec: &'a FleetSpec,
    deployments: Vec<Deployment>,
    /// With [`FleetSpec::deployment_pods`]: (deployment, replica) of every pod slot,
    /// interleaved so that each deployment's pods spread over the nodes.
    slots: Option<Vec<(u32, u32)>>,
    node_keys: NodeLabelKeys,
}

struct NodeLabelKeys {
    hostname: Arc<str>,
    os: Arc<str>,
    arch: Arc<str>,
    role: Arc<str>,
    instance_type: Arc<str>,
    zone: Arc<str>,
    linux: Arc<str>,
    amd64: Arc<str>,
    empty: Arc<str>,
    zones: [Arc<str>; 3],
}

impl<'a> Catalogue<'a> {
    fn new(spec: &'a FleetSpec) -> Self {
        let app_key: Arc<str> = "app".into();
        let hash_key: Arc<str> = "pod-template-hash".into();
        let namespaces: Vec<Arc<str>> = spec.namespaces.iter().map(|n| n.as_str().into()).collect();
        let sizes = spec.deployment_pods.map(|(min, max)| {
            let total = spec.nodes * spec.pods_per_node;
            let mut sizes = Vec::new();
            let mut sum = 0;
            while sum < total {
                let h = mix(&[spec.seed, Salt::DeploymentSize as u64, sizes.len() as u64]);
                let size = pick(h, min as u64, max as u64 + 1) as usize;
                sizes.push(size);
                sum += size;
            }
            sizes
        });
        let count = sizes
            .as_ref()
            .map_or(spec.namespaces.len() * spec.apps.len(), Vec::len);
        let deployments = (0..count)
            .map(|d| {
                let namespace = namespaces[d % namespaces.len()].clone();
                let k = d / namespaces.len();
                let base = spec.apps[k % spec.apps.len()].as_str();
                let app: Arc<str> = if sizes.is_some() && k >= spec.apps.len() {
                    format!("{base}-{}", k / spec.apps.len()).into()
                } else {
                    base.into()
                };
                let h = mix(&[spec.seed, Salt::Deployment as u64, d as u64]);
                let hash: Arc<str> = generated_name(h, 10).into();
                let labels = Labels::new([
                    (app_key.clone(), app.clone()),
                    (hash_key.clone(), hash.clone()),
                ]);
                Deployment {
                    containers: container_names(&app, spec.containers_per_pod),
                    namespace,
                    hash,
                    labels,
                    suffix_mul: 3 * (splitmix(h) % (SUFFIX_SPACE / 3)) + 1,
                    suffix_add: splitmix(h ^ 1) % SUFFIX_SPACE,
                    app,
                }
            })
            .collect();
        let slots = sizes.map(|sizes| {
            let total = spec.nodes * spec.pods_per_node;
            let largest = sizes.iter().copied().max().unwrap_or(0);
            let mut slots = Vec::with_capacity(total);
            'rounds: for replica in 0..largest {
                for (d, &size) in sizes.iter().enumerate() {
                    if slots.len() == total {
                        break 'rounds;
                    }
                    if replica < size {
                        slots.push((d as u32, replica as u32));
                    }
                }
            }
            slots
        });
        Self {
            spec,
            deployments,
            slots,
            node_keys: NodeLabelKeys::new(),
        }
    }

    fn node(&self, index: usize, address: Ipv4Addr, started_at_ms: i64) -> SimNode {
        let spec = self.spec;
        let seed = mix(&[spec.seed, Salt::Node as u64, index as u64]);
        let mut pods: Vec<SimPod> = (0..spec.pods_per_node)
            .map(|slot| self.pod(index * spec.pods_per_node + slot, started_at_ms))
            .collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut node = SimNode {
            index,
            name: format!("sim-node-{:04}", index + 1),
            address,
            port: spec.port,
            labels: Labels::default(),
            capacity_cpu_millicores: 0,
            capacity_memory_bytes: 0,
            max_pods: u32::try_from(spec.pods_per_node.max(110)).unwrap_or(u32::MAX),
            cpu_nanocores: 0,
            memory_bytes: 0,
            system_cpu_nanocores: pick(splitmix(seed ^ 1), 50_000, 300_000) * MICROCORE,
            system_memory_bytes: pick(splitmix(seed ^ 2), 300, 1024) * MIB,
            booted_at_ms: started_at_ms
                .saturating_sub(2 * DAY_MS + HOUR_MS)
                .saturating_sub_unsigned(pick(splitmix(seed ^ 3), 0, DAY_MS as u64)),
            seed,
            format: spec.format,
            pods,
        };
        node.update_totals();
        size_node(&mut node);
        node.labels = self.node_keys.labels(&node);
        node
    }

    fn pod(&self, global: usize, started_at_ms: i64) -> SimPod {
        let (deployment, replica) = match &self.slots {
            Some(slots) => (slots[global].0 as usize, u64::from(slots[global].1)),
            None => (
                global % self.deployments.len(),
                (global / self.deployments.len()) as u64,
            ),
        };
        let deployment = &self.deployments[deployment];
        let seed = mix(&[self.spec.seed, Salt::Pod as u64, global as u64]);
        let suffix = (deployment.suffix_mul * (replica % SUFFIX_SPACE) + deployment.suffix_add)
            % SUFFIX_SPACE;
        let age = pick(seed, 10 * MINUTE_MS as u64, 2 * DAY_MS as u64);
        let created_at_ms = started_at_ms.saturating_sub_unsigned(age);
        let containers = deployment
            .containers
            .iter()
            .enumerate()
            .map(|(k, (name, image))| {
                let h = mix(&[seed, Salt::Container as u64, k as u64]);
                container(h, name, image, self.spec, created_at_ms, started_at_ms)
            })
            .collect();
        SimPod {
            namespace: deployment.namespace.clone(),
            name: format!(
                "{}-{}-{}",
                deployment.app,
                deployment.hash,
                suffix_name(suffix)
            ),
            app: deployment.app.clone(),
            template_hash: deployment.hash.clone(),
            labels: deployment.labels.clone(),
            created_at_ms,
            containers,
        }
    }
}

impl NodeLabelKeys {
    fn new() -> Self {
        Self {
            hostname: "kubernetes.io/hostname".into(),
            os: "kubernetes.io/os".into(),
            arch: "kubernetes.io/arch".into(),
            role: "node-role.kubernetes.io/worker".into(),
            instance_type: "node.kubernetes.io/instance-type".into(),
            zone: "topology.kubernetes.io/zone".into(),
            linux: "linux".into(),
            amd64: "amd64".into(),
            empty: "".into(),
            zones: [
                "sim-zone-a".into(),
                "sim-zone-b".into(),
                "sim-zone-c".into(),
            ],
        }
    }

    fn labels(&self, node: &SimNode) -> Labels {
        let cores = node.capacity_cpu_millicores / 1000;
        Labels::new([
            (self.hostname.clone(), node.name.as_str().into()),
            (self.os.clone(), self.linux.clone()),
            (self.arch.clone(), self.amd64.clone()),
            (self.role.clone(), self.empty.clone()),
            (self.instance_type.clone(), format!("sim.{cores}c").into()),
            (self.zone.clone(), self.zones[node.index % 3].clone()),
        ])
    }
}

/// Container names and images of a deployment: the app itself, then sidecars.
fn container_names(app: &Arc<str>, count: usize) -> Vec<(Arc<str>, Arc<str>)> {
    (0..count)
        .map(|k| {
            let name: Arc<str> = match k {
                0 => app.clone(),
                k if k <= SIDECARS.len() => SIDECARS[k - 1].into(),
                k => format!("sidecar-{k}").into(),
            };
            let image = format!("registry.example/kubedojo-sim/{name}:1.0").into();
            (name, image)
        })
        .collect()
}

/// One container from its hash: rate, working set, requests and start time.
fn container(
    h: u64,
    name: &Arc<str>,
    image: &Arc<str>,
    spec: &FleetSpec,
    created: i64,
    fleet_start: i64,
) -> SimContainer {
    let cpu_nanocores = cpu_rate(h, spec.idle_percent);
    let memory_bytes = working_set(splitmix(h ^ 1));
    let restarted = splitmix(h ^ 2).is_multiple_of(10);
    let first_start = created.saturating_add_unsigned(pick(splitmix(h ^ 3), 1_000, 30_000));
    let started_at_ms = if restarted {
        // Restarted some time between its first start and a minute before the fleet's.
        let span = fleet_start
            .saturating_sub(MINUTE_MS)
            .saturating_sub(first_start);
        first_start.saturating_add_unsigned(pick(splitmix(h ^ 4), 0, span.max(0).unsigned_abs()))
    } else {
        first_start
    };
    SimContainer {
        name: name.clone(),
        image: image.clone(),
        cpu_nanocores,
        memory_bytes,
        wave: match spec.usage {
            UsageModel::Constant => None,
            UsageModel::Wave => Some(Wave::from_hash(splitmix(h ^ 6))),
        },
        counter_base_ns: 0,
        counter_since_ms: started_at_ms,
        cpu_request_millicores: (cpu_nanocores * 3 / 2 / MILLICORE)
            .next_multiple_of(10)
            .max(10),
        memory_request_bytes: (memory_bytes + memory_bytes / 4).next_multiple_of(MIB),
        started_at_ms,
        restart_count: if restarted {
            1 + (splitmix(h ^ 5) % 5) as u32
        } else {
            0
        },
    }
}

/// CPU rate in nanocores: `idle` percent exactly 0, else 1m–500m in whole microcores
/// (half under 20m, a third 20m–100m, the rest up to 500m).
fn cpu_rate(h: u64, idle: u8) -> u64 {
    if h % 100 < u64::from(idle) {
        return 0;
    }
    let r = splitmix(h);
    let micro = match (r >> 40) % 100 {
        0..=49 => pick(r, 1_000, 20_000),
        50..=84 => pick(r, 20_000, 100_000),
        _ => pick(r, 100_000, 500_001),
    };
    micro * MICROCORE
}

/// Working set in bytes, page-aligned: 4–64 MiB mostly, some up to 1 GiB.
fn working_set(h: u64) -> u64 {
    let pages = match (h >> 40) % 10 {
        0..=5 => pick(h, 1024, 16 * 1024),
        6..=8 => pick(h, 16 * 1024, 64 * 1024),
        _ => pick(h, 64 * 1024, 256 * 1024),
    };
    pages * 4096
}

/// Capacity: a power of two of cores and GiB, at least twice usage and requests.
fn size_node(node: &mut SimNode) {
    let containers = || node.pods.iter().flat_map(|p| &p.containers);
    let cpu_requests = saturating_sum(containers().map(|c| c.cpu_request_millicores));
    let mem_requests = saturating_sum(containers().map(|c| c.memory_request_bytes));
    let cpu_m = (node.cpu_nanocores / MILLICORE).max(cpu_requests) * 2;
    let mem = node.memory_bytes.max(mem_requests) * 2;
    node.capacity_cpu_millicores = cpu_m.div_ceil(1000).next_power_of_two().max(4) * 1000;
    node.capacity_memory_bytes = mem.div_ceil(GIB).next_power_of_two().max(8) * GIB;
}

/// `len` characters of the Kubernetes name alphabet from `h`.
fn generated_name(mut h: u64, len: usize) -> String {
    (0..len)
        .map(|_| {
            let c = NAME_ALPHABET[(h % 27) as usize];
            h = splitmix(h);
            char::from(c)
        })
        .collect()
}

/// The 5-character pod suffix for `n` in `0..27^5` (a bijection).
fn suffix_name(mut n: u64) -> String {
    let mut out = [0u8; 5];
    for c in out.iter_mut().rev() {
        *c = NAME_ALPHABET[(n % 27) as usize];
        n /= 27;
    }
    out.iter().map(|&c| char::from(c)).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, HashSet};

    use super::*;

    const T0: i64 = 1_750_000_000_000;

    fn fleet(spec: &FleetSpec) -> Fleet {
        Fleet::new(spec, T0).expect("valid spec")
    }

    #[test]
    fn same_spec_gives_the_same_fleet() {
        let spec = FleetSpec {
            nodes: 20,
            ..FleetSpec::default()
        };
        assert_eq!(fleet(&spec), fleet(&spec));
        let other = fleet(&FleetSpec {
            seed: 2,
            ..spec.clone()
        });
        assert_ne!(fleet(&spec).nodes[0].pods, other.nodes[0].pods);
    }

    #[test]
    fn counts_and_names_follow_the_spec() {
        let spec = FleetSpec {
            nodes: 12,
            pods_per_node: 7,
            containers_per_pod: 3,
            ..FleetSpec::default()
        };
        let f = fleet(&spec);
        assert_eq!(f.nodes.len(), 12);
        assert_eq!(f.pod_count(), 84);
        assert_eq!(f.container_count(), 252);
        assert_eq!(f.nodes[0].name, "sim-node-0001");
        assert_eq!(f.nodes[11].name, "sim-node-0012");
        for (_, pod) in f.pods() {
            let [suffix, hash, app] = pod.name.rsplitn(3, '-').collect::<Vec<_>>()[..] else {
                panic!("bad pod name {}", pod.name);
            };
            assert_eq!((app, hash), (&*pod.app, &*pod.template_hash));
            assert_eq!(hash.len(), 10);
            assert_eq!(suffix.len(), 5);
            assert!(
                suffix
                    .bytes()
                    .chain(hash.bytes())
                    .all(|b| NAME_ALPHABET.contains(&b))
            );
            let names: Vec<&str> = pod.containers.iter().map(|c| &*c.name).collect();
            assert_eq!(names, [&*pod.app, "istio-proxy", "log-shipper"]);
        }
    }

    #[test]
    fn pod_names_are_unique_per_namespace_at_scale() {
        let spec = FleetSpec {
            nodes: 400,
            pods_per_node: 110,
            containers_per_pod: 1,
            ..FleetSpec::default()
        };
        let f = fleet(&spec);
        let mut seen = HashSet::new();
        for (_, pod) in f.pods() {
            assert!(
                seen.insert((pod.namespace.clone(), pod.name.clone())),
                "duplicate {}",
                pod.name
            );
        }
        assert_eq!(seen.len(), 44_000);
    }

    #[test]
    fn deployment_pods_gives_many_deployments_of_the_requested_sizes() {
        let spec = FleetSpec {
            nodes: 200,
            deployment_pods: Some((5, 50)),
            ..FleetSpec::default()
        };
        let f = fleet(&spec);
        assert_eq!(f.pod_count(), 200 * 30);
        /// Pods, template hashes and nodes per deployment.
        type Seen<'a> = (usize, BTreeSet<&'a str>, BTreeSet<&'a str>);
        let mut sizes: BTreeMap<(&str, &str), Seen<'_>> = BTreeMap::new();
        let mut names = HashSet::new();
        for (node, pod) in f.pods() {
            assert_eq!(pod.labels.get("app"), Some(&*pod.app));
            assert!(names.insert((pod.namespace.clone(), pod.name.clone())));
            let e = sizes.entry((&pod.namespace, &pod.app)).or_default();
            e.0 += 1;
            e.1.insert(&pod.template_hash);
            e.2.insert(&node.name);
        }
        assert!(
            sizes.len() > 150,
            "hundreds of deployments: {}",
            sizes.len()
        );
        let counts: Vec<usize> = sizes.values().map(|e| e.0).collect();
        // Only the largest deployments may lose replicas to the last slot.
        assert!(counts.iter().all(|&c| (5..=50).contains(&c)), "{counts:?}");
        assert!(counts.iter().any(|&c| c <= 10) && counts.iter().any(|&c| c >= 40));
        for (key, (n, hashes, nodes)) in &sizes {
            assert_eq!(hashes.len(), 1, "{key:?}");
            assert!(
                nodes.len() * 2 >= *n,
                "{key:?} spreads over nodes: {nodes:?}"
            );
        }
        assert_eq!(fleet(&spec), f, "deterministic");
        let bad = FleetSpec {
            deployment_pods: Some((6, 5)),
            ..FleetSpec::default()
        };
        assert!(Fleet::new(&bad, T0).is_err());
    }

    #[test]
    fn deployments_share_labels_and_spread_over_nodes_and_namespaces() {
        let f = fleet(&FleetSpec {
            nodes: 10,
            ..FleetSpec::default()
        });
        /// Template hashes and node names seen per deployment.
        type Seen<'a> = (BTreeSet<&'a str>, BTreeSet<&'a str>);
        let mut by_deployment: BTreeMap<(&str, &str), Seen<'_>> = BTreeMap::new();
        for (node, pod) in f.pods() {
            assert_eq!(pod.labels.get("app"), Some(&*pod.app));
            assert_eq!(
                pod.labels.get("pod-template-hash"),
                Some(&*pod.template_hash)
            );
            let entry = by_deployment.entry((&pod.namespace, &pod.app)).or_default();
            entry.0.insert(&pod.template_hash);
            entry.1.insert(&node.name);
        }
        assert_eq!(
            by_deployment.len(),
            3 * 8,
            "one deployment per (namespace, app)"
        );
        for (key, (hashes, nodes)) in &by_deployment {
            assert_eq!(hashes.len(), 1, "{key:?} has one template hash");
            assert!(nodes.len() >= 5, "{key:?} spreads over nodes: {nodes:?}");
        }
        let web: Vec<_> = f
            .pods()
            .filter(|(_, p)| p.labels.matches(&[("app", "web")]))
            .collect();
        let namespaces: BTreeSet<&str> = web.iter().map(|(_, p)| &*p.namespace).collect();
        assert_eq!(namespaces.len(), 3);
        let expected = (0..300).filter(|g| g % 24 < 3).count();
        assert_eq!(
            web.len(),
            expected,
            "round-robin over 24 deployments, the first 3 are web"
        );
    }

    #[test]
    fn rates_are_whole_microcores_with_some_idle() {
        let f = fleet(&FleetSpec {
            nodes: 50,
            idle_percent: 10,
            ..FleetSpec::default()
        });
        let containers: Vec<&SimContainer> = f.pods().flat_map(|(_, p)| &p.containers).collect();
        let idle = containers.iter().filter(|c| c.cpu_nanocores == 0).count();
        assert!(
            (240..=360).contains(&idle),
            "about 10% of 3000 idle, got {idle}"
        );
        for c in &containers {
            assert_eq!(c.cpu_nanocores % MICROCORE, 0);
            assert!(
                c.cpu_nanocores == 0 || (MILLICORE..=500 * MILLICORE).contains(&c.cpu_nanocores)
            );
            assert_eq!(c.memory_bytes % 4096, 0);
            assert!(c.memory_bytes >= 4 * MIB && c.memory_bytes <= GIB);
            assert!(c.started_at_ms < T0);
        }
        let busy = fleet(&FleetSpec {
            idle_percent: 0,
            ..FleetSpec::default()
        });
        assert!(
            busy.pods()
                .flat_map(|(_, p)| &p.containers)
                .all(|c| c.cpu_nanocores > 0)
        );
    }

    #[test]
    fn node_usage_is_containers_plus_system() {
        let f = fleet(&FleetSpec::default());
        for node in &f.nodes {
            let pods_cpu: u64 = node.pods.iter().map(SimPod::cpu_nanocores).sum();
            let pods_mem: u64 = node.pods.iter().map(SimPod::memory_bytes).sum();
            assert_eq!(node.cpu_nanocores, pods_cpu + node.system_cpu_nanocores);
            assert_eq!(node.memory_bytes, pods_mem + node.system_memory_bytes);
            assert!(node.capacity_cpu_millicores * MILLICORE >= 2 * node.cpu_nanocores);
            assert!(node.capacity_memory_bytes >= 2 * node.memory_bytes);
            assert!(node.booted_at_ms < node.pods.iter().map(|p| p.created_at_ms).min().unwrap());
            assert!(
                node.pods
                    .is_sorted_by(|a, b| (&a.namespace, &a.name) <= (&b.namespace, &b.name))
            );
            assert_eq!(
                node.labels.get("kubernetes.io/hostname"),
                Some(node.name.as_str())
            );
            assert_eq!(node.labels.get("kubernetes.io/os"), Some("linux"));
        }
    }

    #[test]
    fn addresses_are_consecutive_and_skip_network_and_broadcast_octets() {
        let spec = FleetSpec {
            nodes: 4,
            first_address: Ipv4Addr::new(127, 1, 0, 253),
            ..FleetSpec::default()
        };
        let addrs: Vec<String> = fleet(&spec)
            .nodes
            .iter()
            .map(|n| n.address.to_string())
            .collect();
        assert_eq!(
            addrs,
            ["127.1.0.253", "127.1.0.254", "127.1.1.1", "127.1.1.2"]
        );
        let from_zero = FleetSpec {
            nodes: 1,
            first_address: Ipv4Addr::new(127, 9, 9, 0),
            ..spec.clone()
        };
        assert_eq!(
            fleet(&from_zero).nodes[0].address,
            Ipv4Addr::new(127, 9, 9, 1)
        );
        let too_many = FleetSpec {
            nodes: 3,
            first_address: Ipv4Addr::new(127, 255, 255, 253),
            ..spec
        };
        assert!(matches!(
            Fleet::new(&too_many, T0),
            Err(SimError::InvalidSpec(_))
        ));
    }

    #[test]
    fn invalid_specs_are_rejected() {
        let bad = [
            FleetSpec {
                containers_per_pod: 0,
                ..FleetSpec::default()
            },
            FleetSpec {
                namespaces: vec![],
                ..FleetSpec::default()
            },
            FleetSpec {
                apps: vec!["web".into(), "web".into()],
                ..FleetSpec::default()
            },
            FleetSpec {
                idle_percent: 101,
                ..FleetSpec::default()
            },
        ];
        for spec in bad {
            assert!(
                matches!(Fleet::new(&spec, T0), Err(SimError::InvalidSpec(_))),
                "{spec:?}"
            );
        }
        let empty = fleet(&FleetSpec {
            nodes: 0,
            ..FleetSpec::default()
        });
        assert!(empty.nodes.is_empty());
    }

    #[test]
    fn labels_sort_dedup_and_match() {
        let l = Labels::new([
            ("b".into(), "1".into()),
            ("a".into(), "2".into()),
            ("b".into(), "3".into()),
        ]);
        assert_eq!(l.iter().collect::<Vec<_>>(), [("a", "2"), ("b", "3")]);
        assert!(l.matches(&[("a", "2")]));
        assert!(!l.matches(&[("a", "2"), ("c", "x")]));
        assert_eq!(l.get("zz"), None);
    }

    #[test]
    fn cumulative_cpu_is_rate_times_elapsed() {
        let c = &fleet(&FleetSpec {
            idle_percent: 0,
            ..FleetSpec::default()
        })
        .nodes[0]
            .pods[0]
            .containers[0];
        let (a, b) = (c.cumulative_cpu_ns(T0), c.cumulative_cpu_ns(T0 + 15_000));
        assert_eq!(b - a, c.cpu_nanocores * 15);
        assert_eq!(c.cumulative_cpu_ns(c.started_at_ms - 5), 0);
    }
}
