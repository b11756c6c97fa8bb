#!/usr/bin/env python3
"""Scheduler and kubelet for one namespace of the HPA e2e (tests/e2e/hpa.sh).

    hpa_kubelet.py KUBECTL KUBECONFIG NAMESPACE CONTROL_URL LOAD_FILE NODE[,NODE...]

Every half second, for the Pods of NAMESPACE (standard library only, kubectl for the API):
  - a Pending Pod without a node is bound to the next NODE (pods/binding), round-robin;
  - a bound Pod that is not Running gets a /status patch: Running, Ready, started now;
  - a Running Pod is served by kubelet-sim (PUT CONTROL_URL/pods/NS/NAME) with the usage
    LOAD_FILE gives its `app` label: {"APP": {"cpu": "400m", "memory": "300Mi"}, ...}
    (re-read every round, so the test changes the load by rewriting the file);
  - a Pod being deleted is removed from kubelet-sim and deleted for good (grace 0), as a
    kubelet confirms a deletion; a Pod that is gone is removed from kubelet-sim.
Logs one line per action on stdout. Runs until killed.
"""

import datetime
import itertools
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request


def main():
    kubectl, kubeconfig, ns, control, load_file, nodes = sys.argv[1:7]
    nodes = nodes.split(",")
    next_node = itertools.cycle(nodes)
    served = {}  # pod name -> usage last sent to kubelet-sim

    def k(*args, stdin=None):
        return subprocess.run(
            [kubectl, "--kubeconfig", kubeconfig, "--request-timeout=10s", "-n", ns, *args],
            input=stdin, capture_output=True, text=True, check=False)

    def sim(method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(control + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def log(*parts):
        print(time.strftime("%H:%M:%S"), *parts, flush=True)

    while True:
        time.sleep(0.5)
        try:
            with open(load_file) as f:
                load = json.load(f)
        except (OSError, ValueError) as e:
            log("load file:", e)
            continue
        got = k("get", "pods", "-o", "json")
        if got.returncode != 0:
            log("kubectl get pods:", got.stderr.strip())
            continue
        pods = json.loads(got.stdout)["items"]
        names = set()
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        for i, pod in enumerate(pods):
            meta, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
            name = meta["name"]
            names.add(name)
            if meta.get("deletionTimestamp"):
                if served.pop(name, None) is not None:
                    log("sim remove", name, sim("DELETE", f"/pods/{ns}/{name}"))
                r = k("delete", "pod", name, "--grace-period=0", "--force", "--wait=false")
                log("deleted", name, r.returncode)
                continue
            node = spec.get("nodeName")
            if not node:
                node = next(next_node)
                binding = {"apiVersion": "v1", "kind": "Binding",
                           "metadata": {"name": name},
                           "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
                r = k("create", "--raw", f"/api/v1/namespaces/{ns}/pods/{name}/binding",
                      "-f", "-", stdin=json.dumps(binding))
                log("bind", name, node, r.returncode, r.stderr.strip())
                continue
            if status.get("phase") != "Running":
                ready = [{"type": t, "status": "True", "lastTransitionTime": now}
                         for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]
                containers = [{"name": c["name"], "image": c["image"], "imageID": "",
                               "containerID": f"sim://{name}/{c['name']}", "ready": True,
                               "started": True, "restartCount": 0,
                               "state": {"running": {"startedAt": now}}}
                              for c in spec["containers"]]
                patch = {"status": {"phase": "Running", "conditions": ready, "startTime": now,
                                    "hostIP": "127.0.0.1", "podIP": f"10.244.0.{i % 250 + 2}",
                                    "containerStatuses": containers}}
                r = k("patch", "pod", name, "--subresource=status", "--type=merge",
                      "-p", json.dumps(patch))
                log("running", name, r.returncode, r.stderr.strip())
                continue
            app = meta.get("labels", {}).get("app", "")
            usage = load.get(app)
            if usage is None or served.get(name) == usage:
                continue
            body = {"node": node, "labels": meta.get("labels", {}),
                    "containers": [{"name": c["name"], "cpu": usage["cpu"],
                                    "memory": usage["memory"]} for c in spec["containers"]]}
            code = sim("PUT", f"/pods/{ns}/{name}", body)
            log("sim usage", name, node, usage, code)
            if code == 200:
                served[name] = usage
        for name in [n for n in served if n not in names]:
            served.pop(name)
            log("sim remove (gone)", name, sim("DELETE", f"/pods/{ns}/{name}"))


if __name__ == "__main__":
    main()
