//! `kubedojo-data-api kubelet-sim`: serves a simulated fleet until SIGTERM and
//! writes its Node/Pod objects and CA for the real-cluster harness.

use std::sync::Arc;

use anyhow::Context;
use serde_json::{Value, json};

use super::{Behaviour, Fleet, FleetSpec, ServeOptions, SimClock, serve};
use crate::config::KubeletSimArgs;

/// The annotation carrying a node's or pod's expected CPU usage, in nanocores.
pub const EXPECTED_CPU_ANNOTATION: &str = "kubedojo.io/sim-cpu-nanocores";
/// The annotation carrying a node's or pod's expected memory, in bytes.
pub const EXPECTED_MEMORY_ANNOTATION: &str = "kubedojo.io/sim-memory-bytes";

fn annotate(obj: &mut Value, cpu: u64, memory: u64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
        annotations[EXPECTED_CPU_ANNOTATION] = json!(cpu.to_string());
        annotations[EXPECTED_MEMORY_ANNOTATION] = json!(memory.to_string());
    }
}

/// Runs the simulator until Ctrl-C / SIGTERM.
pub async fn run(args: KubeletSimArgs) -> anyhow::Result<()> {
    let spec = FleetSpec {
        nodes: args.nodes,
        pods_per_node: args.pods_per_node,
        containers_per_pod: args.containers_per_pod,
        first_address: args.first_address,
        port: args.port,
        idle_percent: args.idle_percent,
        deployment_pods: args.deployment_pods,
        namespaces: namespace_names(args.namespaces),
        usage: args.usage,
        ..FleetSpec::default()
    };
    let fleet =
        Arc::new(Fleet::new(&spec, SimClock::system().now_ms()).context("simulated fleet")?);
    let handle = serve(
        fleet.clone(),
        ServeOptions {
            bearer_token: args.token.clone(),
            ..ServeOptions::default()
        },
    )
    .await
    .context("starting the simulated kubelets")?;
    for &i in &args.slow_nodes {
        handle
            .set_behaviour(i, Behaviour::Slow(args.slow_delay))
            .await
            .with_context(|| format!("--slow-nodes {i}"))?;
    }
    for &i in &args.failing_nodes {
        handle
            .set_behaviour(i, Behaviour::Status(500))
            .await
            .with_context(|| format!("--failing-nodes {i}"))?;
    }
    if let Some(path) = &args.ca_out {
        std::fs::write(path, handle.ca_pem())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.objects_out {
        let mut items: Vec<Value> = Vec::new();
        let mut namespaces: Vec<&str> = fleet.pods().map(|(_, p)| &*p.namespace).collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        items.extend(namespaces.iter().map(|n| super::namespace_object(n)));
        for (i, mut node) in handle.node_objects().into_iter().enumerate() {
            if let Some(n) = fleet.nodes.get(i) {
                annotate(&mut node, n.cpu_nanocores, n.memory_bytes);
            }
            items.push(node);
        }
        for (node, pod) in fleet.pods() {
            let mut obj = super::pod_object(node, pod);
            let cpu = pod.containers.iter().map(|c| c.cpu_nanocores).sum();
            let memory = pod.containers.iter().map(|c| c.memory_bytes).sum();
            annotate(&mut obj, cpu, memory);
            items.push(obj);
        }
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
        std::fs::write(path, serde_json::to_vec_pretty(&list)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let cancel = tokio_util::sync::CancellationToken::new();
    if let Some(addr) = args.control_address {
        let bound = super::control::serve_control(handle.control(), addr, cancel.clone())
            .await
            .context("--control-address")?;
        println!("kubelet-sim control on http://{bound}");
    }
    println!("kubelet-sim serving {} nodes", fleet.nodes.len());
    let nodes = fleet.nodes.len();
    let counting = async {
        let Some(path) = &args.requests_out else {
            return std::future::pending().await;
        };
        let tmp = path.with_extension("tmp");
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
        loop {
            tick.tick().await;
            let total: u64 = (0..nodes).map(|i| handle.requests(i)).sum();
            let written = std::fs::write(&tmp, format!("{total}\n"))
                .and_then(|()| std::fs::rename(&tmp, path));
            if let Err(e) = written {
                tracing::warn!(error = %e, path = %path.display(), "cannot write --requests-out");
            }
        }
    };
    tokio::select! {
        () = crate::runtime::shutdown_signal() => {}
        () = counting => {}
    }
    cancel.cancel();
    handle.shutdown().await;
    Ok(())
}

/// `count` namespace names: the default three, then `team-3`, `team-4`…
fn namespace_names(count: u16) -> Vec<String> {
    let base = FleetSpec::default().namespaces;
    (0..usize::from(count))
        .map(|i| base.get(i).cloned().unwrap_or_else(|| format!("team-{i}")))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn namespace_names_extend_the_defaults() {
        assert_eq!(super::namespace_names(1), ["default"]);
        assert_eq!(
            super::namespace_names(5),
            ["default", "team-a", "team-b", "team-3", "team-4"]
        );
    }
}
