#!/usr/bin/env python3
"""Field-by-field comparison of our metrics.k8s.io protobuf answers with metrics-server's
(bench/scale/golden.sh), both decoded by kd-pbdecode with the real Go types.

    golden.py OUT --resolution S [--mutate WHAT] NAME...

For each NAME, OUT/ours-NAME.json and OUT/ms-NAME.json (kd-pbdecode output) must agree on:
kind and apiVersion; the items (namespace/name), in the same order; per object every
metadata field except creationTimestamp (metrics-server stamps the time of the request) and
resourceVersion (ours carries one for watches); the window (within 1 s: both are the
kubelet-reported interval between two scrapes of the same simulated clock, so only a scrape
that lands in another cycle moves it); the containers (names; metrics-server's order is random); the CPU usage within
CPU_TOLERANCE (the simulator's counters are rounded to nanoseconds of CPU at each scrape
instant) and the memory usage exactly (constant working sets). Timestamps may differ.

--mutate alters our decoded full pod list (NAME pods) before the comparison, to show that the check fails:
label, namespace, container, cpu, memory, window, drop-item.
Exit status 1 on any difference; prints one line per document and the first differences.
"""

import argparse
import json
import re
import sys
from fractions import Fraction

# Relative tolerance on CPU rates: constant usage gives the same rate at any scrape instant;
# what is left is the rounding of the cumulative counters and of the nanocore result.
CPU_TOLERANCE = Fraction(1, 100_000)
CPU_ABS_TOLERANCE = 10  # nanocores
WINDOW_TOLERANCE_NS = 1_000_000_000
MAX_REPORTED = 20

SUFFIX = {
    "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": Fraction(1),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
    "P": Fraction(10**15), "E": Fraction(10**18),
    "Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30), "Ti": Fraction(2**40),
    "Pi": Fraction(2**50), "Ei": Fraction(2**60),
}
QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?)$")


def quantity(s):
    """A Kubernetes quantity string as an exact Fraction."""
    m = QUANTITY.match(s)
    if not m:
        raise ValueError(f"not a quantity: {s!r}")
    number, suffix = Fraction(m.group(1)), m.group(2)
    if suffix[:1] in ("e", "E"):
        return number * Fraction(10) ** int(suffix[1:])
    return number * SUFFIX[suffix]


def items(doc):
    obj = doc["object"]
    return obj["items"] if "items" in obj else [obj]


def key(item):
    m = item["metadata"]
    return f'{m["namespace"]}/{m["name"]}' if m.get("namespace") else m["name"]


def mutate(doc, what):
    it = items(doc)
    first = it[0]
    if what == "label":
        first["metadata"].setdefault("labels", {})["golden"] = "mutated"
    elif what == "namespace":
        first["metadata"]["namespace"] = "mutated"
    elif what == "container":
        first["containers"][0]["name"] += "-mutated"
    elif what == "cpu":
        u = (first.get("containers") or [first])[0]["usage"]
        u["cpu"] = f'{int(quantity(u["cpu"]) * 10**9) + 1_000_000}n'
    elif what == "memory":
        u = (first.get("containers") or [first])[0]["usage"]
        u["memory"] = str(int(quantity(u["memory"])) + 1)
    elif what == "window":
        first["window"] = "1m0s"
        for k in doc["windowsNs"]:
            doc["windowsNs"][k] += 60_000_000_000
            break
    elif what == "drop-item":
        if "items" in doc["object"]:
            doc["object"]["items"] = it[1:]
    else:
        sys.exit(f"unknown --mutate {what}")


def compare_usage(where, ours, ms, diffs):
    if sorted(ours) != sorted(ms):
        diffs.append(f"{where}: usage resources {sorted(ours)} vs metrics-server {sorted(ms)}")
        return
    for res in ours:
        a, b = quantity(ours[res]), quantity(ms[res])
        if res == "cpu":
            na, nb = a * 10**9, b * 10**9
            if abs(na - nb) > max(CPU_ABS_TOLERANCE, CPU_TOLERANCE * max(abs(na), abs(nb))):
                diffs.append(f"{where}: cpu {ours[res]} vs metrics-server {ms[res]}")
        elif a != b:
            diffs.append(f"{where}: {res} {ours[res]} vs metrics-server {ms[res]}")


def compare_doc(name, ours, ms, stats):
    diffs = []
    for f in ("kind", "apiVersion"):
        if ours[f] != ms[f]:
            diffs.append(f"{f} {ours[f]!r} vs metrics-server {ms[f]!r}")
    oi, mi = items(ours), items(ms)
    ok, mk = [key(i) for i in oi], [key(i) for i in mi]
    if set(ok) != set(mk):
        only_o, only_m = sorted(set(ok) - set(mk)), sorted(set(mk) - set(ok))
        diffs.append(f"items: {len(ok)} vs metrics-server {len(mk)}; only ours {only_o[:5]}, "
                     f"only metrics-server {only_m[:5]}")
    elif ok != mk:
        diffs.append("items in a different order")
    by_key = {key(i): i for i in mi}
    for o in oi:
        k = key(o)
        m = by_key.get(k)
        if m is None:
            continue
        stats["objects"] += 1
        om = {f: v for f, v in o["metadata"].items() if f not in ("creationTimestamp", "resourceVersion")}
        mm = {f: v for f, v in m["metadata"].items() if f not in ("creationTimestamp", "resourceVersion")}
        if om != mm:
            diffs.append(f"{k}: metadata {om} vs metrics-server {mm}")
        wo, wm = ours["windowsNs"].get(k), ms["windowsNs"].get(k)
        if wo is None or wm is None or abs(wo - wm) > WINDOW_TOLERANCE_NS:
            diffs.append(f"{k}: window {wo} ns vs metrics-server {wm} ns")
        else:
            stats["window_max_diff_ns"] = max(stats["window_max_diff_ns"], abs(wo - wm))
        if "containers" in o or "containers" in m:
            oc, mc = o.get("containers") or [], m.get("containers") or []
            # metrics-server's container order is its Go map's iteration order (random per
            # request: pkg/storage/pod.go ranges over a map), so names compare as sets;
            # ours are sorted by name.
            on, mn = [c["name"] for c in oc], [c["name"] for c in mc]
            if sorted(on) != sorted(mn) or len(set(on)) != len(on):
                diffs.append(f"{k}: containers {on} vs metrics-server {mn}")
                continue
            by_name = {d["name"]: d for d in mc}
            for c in oc:
                d = by_name[c["name"]]
                stats["usages"] += 1
                compare_usage(f"{k}/{c['name']}", c["usage"], d["usage"], diffs)
        else:
            stats["usages"] += 1
            compare_usage(k, o["usage"], m["usage"], diffs)
    return diffs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("names", nargs="+")
    ap.add_argument("--resolution", type=float, required=True)
    ap.add_argument("--mutate")
    a = ap.parse_args()
    failed = 0
    for name in a.names:
        ours = json.load(open(f"{a.out}/ours-{name}.json"))
        ms = json.load(open(f"{a.out}/ms-{name}.json"))
        if a.mutate and name == "pods":
            mutate(ours, a.mutate)
        stats = {"objects": 0, "usages": 0, "window_max_diff_ns": 0}
        diffs = compare_doc(name, ours, ms, stats)
        status = "FAIL" if diffs else "ok"
        print(f"{status} {name}: {ours['kind']}, {stats['objects']} objects, {stats['usages']} "
              f"usages compared; windows differ by at most {stats['window_max_diff_ns'] / 1e6:.0f} ms; "
              f"{len(diffs)} differences")
        for d in diffs[:MAX_REPORTED]:
            print(f"    {d}")
        if len(diffs) > MAX_REPORTED:
            print(f"    ... {len(diffs) - MAX_REPORTED} more")
        failed += bool(diffs)
    print(f"{len(a.names) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
