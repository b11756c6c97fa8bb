#!/usr/bin/env python3
"""Summarises a bench/scale/run.sh output directory into results.md and results.json.

Per server, the median over rounds of each figure; ratio = ours / metrics-server (< 1 means we
are ahead). With --check, exits 1 unless the CI gates hold, printing `N passed, M failed` last.
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys

ap = argparse.ArgumentParser()
ap.add_argument("out")
for k in ("nodes", "pods", "containers", "rounds", "wall"):
    ap.add_argument(f"--{k}", type=int, default=0)
for k in ("hpa-rate", "top-pods-rate", "top-nodes-rate", "load-seconds"):
    ap.add_argument(f"--{k}", type=float, default=0)
ap.add_argument("--resolution", default="")
ap.add_argument("--kd-load", default="")
ap.add_argument("--check", action="store_true")
a = ap.parse_args()

runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(a.out, "*-r[0-9]*.json")))
        if not p.endswith(".load.json")]
by = {}
for r in runs:
    by.setdefault(r["server"], []).append(r)


def med(server, f):
    vals = [f(r) for r in by.get(server, [])]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def load_field(kind, field):
    return lambda r: r["load"].get(kind, {}).get(field)


rows = [
    ("Resident memory, peak (VmHWM), MiB", lambda r: r["rss_peak_mib"], "{:.1f}"),
    ("Resident memory, steady (median VmRSS, idle), MiB", lambda r: r["rss_steady_mib"], "{:.1f}"),
    ("CPU seconds per scrape cycle (idle)", lambda r: r["cpu_seconds_per_cycle"], "{:.3f}"),
    ("Scrape cycle (tick) duration, mean, s", lambda r: r["tick_seconds_mean"], "{:.3f}"),
    ("CPU under load, cores", lambda r: r["load_cpu_cores"], "{:.3f}"),
    ("Seconds from start to serving every pod", lambda r: r["ready_seconds"], "{:.0f}"),
]
for kind, label in (("hpa", "HPA list (namespace + labelSelector)"),
                    ("top-pods", "full pod list (`kubectl top pod -A`)"),
                    ("top-nodes", "node list (`kubectl top node`)")):
    rows += [
        (f"{label}: p50 ms", load_field(kind, "p50_ms"), "{:.2f}"),
        (f"{label}: p99 ms", load_field(kind, "p99_ms"), "{:.2f}"),
        (f"{label}: max ms", load_field(kind, "max_ms"), "{:.2f}"),
        (f"{label}: errors", load_field(kind, "errors"), "{:.0f}"),
        (f"{label}: response bytes (mean)", load_field(kind, "mean_bytes"), "{:.0f}"),
    ]

table = []
for label, f, fmt in rows:
    o, m = med("ours", f), med("metrics-server", f)
    ratio = (o / m) if (o is not None and m) else None
    table.append({"figure": label, "ours": o, "metrics_server": m, "ratio": ratio,
                  "ours_runs": [f(r) for r in by.get("ours", [])],
                  "metrics_server_runs": [f(r) for r in by.get("metrics-server", [])], "fmt": fmt})

payload = {}
try:
    payload = json.load(open(os.path.join(a.out, "payload.json")))
except Exception:
    pass
largest = max((r["load"].get(k, {}).get("max_bytes", 0) for r in runs for k in ("top-pods", "hpa", "top-nodes")), default=0)
socket = {}
kd_load = a.kd_load or os.environ.get("KD_LOAD", "")
if largest and kd_load:
    try:
        socket = json.loads(subprocess.run([kd_load, "socket", "--bytes", str(largest)],
                                           capture_output=True, text=True, check=True).stdout)
    except Exception as e:
        socket = {"error": str(e)}

checks = []
if a.check:
    def gate(name, ok):
        checks.append((name, bool(ok)))
    for label in ("Resident memory, peak (VmHWM), MiB",
                  "Resident memory, steady (median VmRSS, idle), MiB",
                  "CPU seconds per scrape cycle (idle)"):
        t = next(t for t in table if t["figure"] == label)
        gate(f"{label}: ours/metrics-server < 1 (got {t['ratio']})", t["ratio"] is not None and t["ratio"] < 1)
    ours_err = sum((r["load"].get(k, {}).get("errors", 0) or 0) for r in by.get("ours", []) for k in ("hpa", "top-pods", "top-nodes"))
    gate(f"our server: zero request errors (got {ours_err})", ours_err == 0)
    ours_req = sum((r["load"].get(k, {}).get("requests", 0) or 0) for r in by.get("ours", []) for k in ("hpa", "top-pods", "top-nodes"))
    gate(f"our server: load was sent ({ours_req} requests)", ours_req > 0)

res = {"params": vars(a), "table": [{k: v for k, v in t.items() if k != "fmt"} for t in table],
       "payload": payload, "largest_response": {"bytes": largest, "socket": socket}, "runs": runs,
       "checks": [{"name": n, "ok": ok} for n, ok in checks]}
json.dump(res, open(os.path.join(a.out, "results.json"), "w"), indent=1)


def f(v, fmt):
    return "—" if v is None else fmt.format(v)


md = [f"## {a.nodes} nodes × {a.pods} pods × {a.containers} containers "
      f"({a.nodes * a.pods} pods), resolution {a.resolution}",
      "",
      f"Load (open loop, per server): {a.hpa_rate:g} HPA lists/s over every (namespace, app), "
      f"{a.top_pods_rate:g} full pod lists/s, {a.top_nodes_rate:g} node lists/s for "
      f"{a.load_seconds:g} s, JSON, HTTP/2, admin client certificate. Median of {a.rounds} "
      f"round(s) (round 1: ours first; round 2: metrics-server first). Wall time {a.wall} s.",
      "",
      "| Figure | ours | metrics-server v0.8.0 | ours / metrics-server |",
      "|---|---:|---:|---:|"]
for t in table:
    md.append(f"| {t['figure']} | {f(t['ours'], t['fmt'])} | {f(t['metrics_server'], t['fmt'])} | "
              f"{f(t['ratio'], '{:.3f}')} |")
md.append("")
if payload:
    md.append(f"Physical limits: kubelet payload per cycle {payload['bytes_per_cycle'] / 1e6:.2f} MB "
              f"({payload['nodes']} nodes, largest {payload['max_node_bytes']} B, "
              f"{payload['lines_per_cycle']} lines); a plain byte scan (memchr line count) of it takes "
              f"{payload['byte_scan_seconds'] * 1e3:.2f} ms ({payload['byte_scan_gb_per_s']:.1f} GB/s); "
              f"fetching it with 64 concurrent TLS requests took {payload['fetch_seconds_64_concurrent']:.2f} s.")
if socket.get("write_seconds"):
    md.append(f"Largest response: {largest / 1e6:.2f} MB; writing it to a loopback TCP socket takes "
              f"{socket['write_seconds'] * 1e3:.2f} ms ({socket['gb_per_s']:.2f} GB/s).")
md.append("")
open(os.path.join(a.out, "results.md"), "w").write("\n".join(md) + "\n")
print("\n".join(md))

if a.check:
    for n, ok in checks:
        print(("PASS " if ok else "FAIL ") + n)
    p = sum(ok for _, ok in checks)
    print(f"{p} passed, {len(checks) - p} failed")
    sys.exit(0 if p == len(checks) else 1)
