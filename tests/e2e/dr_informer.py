#!/usr/bin/env python3
"""A list+watch client of DataRecords, as client-go's reflector runs one, over kubectl.

Usage: dr_informer.py KUBECTL KUBECONFIG PATH STATE_FILE

Lists PATH, then watches it from the list's resourceVersion (with bookmarks). When the
stream ends (our server restarted, the aggregator cut it) it watches again from the last
resourceVersion it saw; only a 410 Expired makes it list again. After every event it
writes STATE_FILE (JSON): items (namespace/name -> spec.data), rv, events, rewatches,
relists, and errors (events out of order or that do not fit the state: an ADDED for a
record it has, a MODIFIED or DELETED for one it lacks). Runs until killed.
"""

import json
import os
import subprocess
import sys
import time

kubectl, kubeconfig, path, state_file = sys.argv[1:5]
state = {"items": {}, "rv": "", "events": 0, "rewatches": 0, "relists": 0, "errors": []}


def save():
    tmp = state_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, state_file)


def kubectl_raw(url, **kw):
    return [kubectl, "--kubeconfig", kubeconfig, "get", "--raw", url]


def key(obj):
    return obj["metadata"]["namespace"] + "/" + obj["metadata"]["name"]


def relist():
    while True:
        r = subprocess.run(kubectl_raw(path), capture_output=True, text=True)
        if r.returncode == 0:
            break
        print("list failed:", r.stderr.strip(), flush=True)
        time.sleep(0.5)
    lst = json.loads(r.stdout)
    state["items"] = {key(i): i["spec"].get("data", {}) for i in lst["items"]}
    state["rv"] = lst["metadata"]["resourceVersion"]
    state["relists"] += 1
    save()


def watch():
    """One watch; returns False when the version is expired (relist)."""
    url = f"{path}?watch=1&allowWatchBookmarks=true&resourceVersion={state['rv']}&timeoutSeconds=300"
    p = subprocess.Popen(kubectl_raw(url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stdout:
            if not line.strip():
                continue
            e = json.loads(line)
            obj = e["object"]
            if e["type"] == "ERROR":
                print("watch error:", obj, flush=True)
                return obj.get("code") != 410
            rv = obj["metadata"]["resourceVersion"]
            if int(rv) < int(state["rv"]) or (int(rv) == int(state["rv"]) and e["type"] != "BOOKMARK"):
                state["errors"].append(f"{e['type']} at {rv} after {state['rv']}")
            state["rv"] = rv
            if e["type"] != "BOOKMARK":
                k = key(obj)
                have = k in state["items"]
                if (e["type"] == "ADDED") == have:
                    state["errors"].append(f"{e['type']} {k} at {rv}: present={have}")
                if e["type"] == "DELETED":
                    state["items"].pop(k, None)
                else:
                    state["items"][k] = obj["spec"].get("data", {})
                state["events"] += 1
            save()
    finally:
        p.kill()
        err = p.stderr.read().strip()
        p.wait()
        if err:
            print("watch ended:", err, flush=True)
    return True


relist()
while True:
    if not watch():
        relist()
        continue
    state["rewatches"] += 1
    save()
    time.sleep(0.2)
