#!/usr/bin/env python3
"""JSON helpers for tests/e2e/run.sh (standard library only).

Subcommands (FILE is the v1 List of Node and Pod objects that
`kubedojo-data-api kubelet-sim --objects-out FILE` writes):

  standin FILE NODES PODS FIRST_ADDR PORT
      Write a stand-in List shaped like kubelet-sim's, for builds without
      kubelet-sim: Nodes point at loopback addresses where NOTHING listens, so
      the metrics checks are expected to fail with it.
  namespaces FILE        the Pods' namespaces, one per line
  nodes-list FILE        the Node objects as a v1 List (JSON) on stdout
  pods-list FILE         the Pod objects, status removed, as a v1 List on stdout
  pod-status FILE        lines "NAMESPACE NAME PATCH_JSON": the /status merge patch
                         that makes each Pod Running (phase, conditions, podIP...)
  containers FILE        "NAMESPACE POD CONTAINER...": the Pod with the most containers
  pick-selector FILE     "NAMESPACE APP": a namespace/app label pair for the -l check
                         (prefers one that selects some but not all Pods of the namespace)
  check-top-nodes FILE TOP_OUTPUT   compare `kubectl top node --no-headers`
  check-top-pods FILE TOP_OUTPUT [NAMESPACE APP]
                         compare `kubectl top pod -A --no-headers` (or, with NAMESPACE
                         and APP, `kubectl top pod -n NAMESPACE -l app=APP --no-headers`)
  check-json-equal EXPECTED_JSON ACTUAL_JSON   compare two JSON documents

check-* print what differs and exit 1 on a mismatch. CPU is compared with the
`kubedojo.io/sim-cpu-nanocores` annotations: within 5%, or within 1m for tiny
values (kubectl top prints millicores). Memory is compared when the objects carry
`kubedojo.io/sim-memory-bytes` (within 5% or 1Mi).
"""

import json
import sys

CPU_ANN = "kubedojo.io/sim-cpu-nanocores"
MEM_ANN = "kubedojo.io/sim-memory-bytes"
STANDIN_NAMESPACES = ["default", "team-a", "team-b", "kube-system"]


def load(path):
    with open(path) as f:
        doc = json.load(f)
    items = doc.get("items", []) if doc.get("kind", "").endswith("List") else [doc]
    nodes = [o for o in items if o.get("kind") == "Node"]
    pods = [o for o in items if o.get("kind") == "Pod"]
    return nodes, pods


def ann(obj, key):
    v = obj.get("metadata", {}).get("annotations", {}).get(key)
    return None if v is None else int(v)


def as_list(items):
    return {"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items}


def standin(path, n_nodes, n_pods, first_addr, port):
    a, b, c, d = (int(x) for x in first_addr.split("."))
    items = []
    pods = []
    for i in range(int(n_nodes)):
        addr = f"{a}.{b}.{c}.{d + i}"
        name = f"sim-node-{i}"
        node_cpu = 0
        for j in range(int(n_pods)):
            ns = STANDIN_NAMESPACES[(i * int(n_pods) + j) % len(STANDIN_NAMESPACES)]
            app = ["web", "api", "worker"][j % 3]
            cpu = (i * 10 + j + 1) * 5_000_000
            node_cpu += cpu
            pods.append({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": f"{app}-{i}-{j}", "namespace": ns,
                    "labels": {"app": app, "pod-template-hash": "standin"},
                    "annotations": {CPU_ANN: str(cpu)},
                },
                "spec": {"nodeName": name,
                         "containers": [{"name": app, "image": "standin.invalid/none:0"}]},
                "status": {"phase": "Running"},
            })
        items.append({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name},
                         "annotations": {CPU_ANN: str(node_cpu + 50_000_000)}},
            "status": {
                "addresses": [{"type": "InternalIP", "address": addr},
                              {"type": "Hostname", "address": name}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": int(port)}},
                "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "message": "stand-in (nothing listens here)"}],
            },
        })
    with open(path, "w") as f:
        json.dump(as_list(items + pods), f, indent=1)


def pod_status_patch(pod):
    st = dict(pod.get("status") or {})
    st["phase"] = "Running"
    if not st.get("conditions"):
        st["conditions"] = [{"type": t, "status": "True"}
                            for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]
    return {"status": st}


def parse_cpu(s):
    """kubectl top CPU column: '12m' or '1' (cores) -> millicores."""
    if s.endswith("m"):
        return float(s[:-1])
    if s.endswith("n"):
        return float(s[:-1]) / 1e6
    return float(s) * 1000


def parse_mem(s):
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}
    for u, m in units.items():
        if s.endswith(u):
            return float(s[:-2]) * m
    return float(s)


def close(got_m, want_m, pct=0.05, slack=1.0):
    return abs(got_m - want_m) <= max(want_m * pct, slack)


def compare(expected, got, label):
    """expected: {key: (cpu_m, mem_bytes|None)}, got: {key: (cpu_str, mem_str)}."""
    errors = []
    for k in sorted(set(expected) - set(got)):
        errors.append(f"{label} {k}: missing from kubectl top")
    for k in sorted(set(got) - set(expected)):
        errors.append(f"{label} {k}: in kubectl top but not simulated")
    for k in sorted(set(expected) & set(got)):
        want_cpu, want_mem = expected[k]
        cpu_s, mem_s = got[k]
        try:
            cpu = parse_cpu(cpu_s)
        except ValueError:
            errors.append(f"{label} {k}: unparsable CPU {cpu_s!r}")
            continue
        if want_cpu is not None and not close(cpu, want_cpu):
            errors.append(f"{label} {k}: CPU {cpu_s} (={cpu:g}m), simulator says {want_cpu:g}m")
        if want_mem is not None:
            try:
                mem = parse_mem(mem_s)
            except ValueError:
                errors.append(f"{label} {k}: unparsable memory {mem_s!r}")
                continue
            if not close(mem, want_mem, slack=1024**2):
                errors.append(f"{label} {k}: memory {mem_s}, simulator says {want_mem/1024**2:.1f}Mi")
    if errors:
        print("\n".join(errors))
        return 1
    print(f"{len(expected)} {label}s match the simulator")
    return 0


def expected_of(obj):
    cpu = ann(obj, CPU_ANN)
    mem = ann(obj, MEM_ANN)
    return (None if cpu is None else cpu / 1e6, None if mem is None else float(mem))


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "standin":
        standin(*args)
        return 0
    if cmd == "check-json-equal":
        want, got = json.loads(args[0]), json.loads(args[1])
        if want != got:
            print(f"expected {json.dumps(want, sort_keys=True)}\n     got {json.dumps(got, sort_keys=True)}")
            return 1
        return 0
    nodes, pods = load(args[0])
    if cmd == "namespaces":
        for ns in sorted({p["metadata"].get("namespace", "default") for p in pods}):
            print(ns)
    elif cmd == "nodes-list":
        print(json.dumps(as_list(nodes)))
    elif cmd == "pods-list":
        out = []
        for p in pods:
            p = dict(p)
            p.pop("status", None)
            out.append(p)
        print(json.dumps(as_list(out)))
    elif cmd == "pod-status":
        for p in pods:
            m = p["metadata"]
            print(m.get("namespace", "default"), m["name"],
                  json.dumps(pod_status_patch(p), separators=(",", ":")))
    elif cmd == "pick-selector":
        by = {}
        for p in pods:
            ns = p["metadata"].get("namespace", "default")
            app = p["metadata"].get("labels", {}).get("app")
            if app:
                by.setdefault(ns, {}).setdefault(app, 0)
                by[ns][app] += 1
        best = None
        for ns in sorted(by):
            total = sum(by[ns].values())
            for app in sorted(by[ns]):
                score = (by[ns][app] < total, by[ns][app])
                if best is None or score > best[0]:
                    best = (score, ns, app)
        if best is None:
            print("no pod has an app label", file=sys.stderr)
            return 1
        print(best[1], best[2])
    elif cmd == "containers":
        # "NAMESPACE NAME CONTAINER..." of the first Pod with the most containers
        p = max(pods, key=lambda p: len(p["spec"]["containers"]))
        m = p["metadata"]
        print(m.get("namespace", "default"), m["name"], *[c["name"] for c in p["spec"]["containers"]])
    elif cmd == "check-top-nodes":
        with open(args[1]) as f:
            lines = [l.split() for l in f if l.strip()]
        got = {l[0]: (l[1], l[3] if len(l) > 3 else "0") for l in lines}
        expected = {n["metadata"]["name"]: expected_of(n) for n in nodes}
        return compare(expected, got, "node")
    elif cmd == "check-top-pods":
        with open(args[1]) as f:
            lines = [l.split() for l in f if l.strip()]
        if len(args) >= 4:
            ns, app = args[2], args[3]
            got = {f"{ns}/{l[0]}": (l[1], l[2]) for l in lines}
            sel = [p for p in pods if p["metadata"].get("namespace", "default") == ns
                   and p["metadata"].get("labels", {}).get("app") == app]
        else:
            got = {f"{l[0]}/{l[1]}": (l[2], l[3]) for l in lines}
            sel = pods
        expected = {f'{p["metadata"].get("namespace", "default")}/{p["metadata"]["name"]}':
                    expected_of(p) for p in sel}
        return compare(expected, got, "pod")
    else:
        print(f"unknown subcommand {cmd}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
