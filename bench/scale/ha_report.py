#!/usr/bin/env python3
"""OUT/results.md (and results.json) from the scenario files of bench/scale/ha.sh.

Usage: ha_report.py OUT
"""
import glob
import json
import os
import sys


def fmt(v, d=2):
    return "–" if v is None else f"{v:,.{d}f}"


def cpu(rep):
    """CPU seconds per cycle: the schedstat figure (ns) when measured, else the 10 ms ticks."""
    v = rep.get("cpu_seconds_per_cycle_ns")
    return v if v is not None else rep["cpu_seconds_per_cycle"]


def hpa(load):
    h = load.get("hpa") or {}
    ok = h.get("ok") or {}
    p99 = ok.get("p99_ms")
    n = ok.get("n", 0)
    txt = f"{fmt(p99, 1)}" if p99 is not None else f"max {fmt(ok.get('max_ms'), 1)}"
    return f"{txt} (n={n:,}, err {h.get('errors', 0)})"


def main():
    out = sys.argv[1]
    runs = []
    for f in sorted(glob.glob(os.path.join(out, "*.json"))):
        if os.path.basename(f) in ("machine.json", "targets.json", "objects.json", "results.json"):
            continue
        try:
            j = json.load(open(f))
        except ValueError:
            continue
        if "per_replica" in j:
            runs.append(j)
    order = {"ours": 0, "metrics-server": 1}
    runs.sort(key=lambda j: (order.get(j["server"], 2), j["replicas"], j["scrape_replication"]))
    single = next((j for j in runs if j["server"] == "ours" and j["replicas"] == 1), None)
    base_cpu = cpu(single["per_replica"][0]) if single else None
    lines = []
    lines.append("| scenario | kubelet requests / cycle (target) | CPU s / cycle per replica (÷ single) "
                 "| steady / peak RSS MiB per replica | peer bytes / tick per replica | HPA p99 ms per replica "
                 "| ready s | after SIGKILL of replica 0: full coverage s, max reading age s | requests / cycle after the Lease expired |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for j in runs:
        n, r, nodes = j["replicas"], j["scrape_replication"], j["nodes"]
        if j["server"] == "ours":
            name = f"ours, {n} replica{'s' if n > 1 else ''}, R={r}"
            target = min(r, n) * nodes
        else:
            name = f"metrics-server v0.9.0 × {n}"
            target = n * nodes
        reps = j["per_replica"]
        cpus = " / ".join(fmt(cpu(p), 3) for p in reps)
        if base_cpu and j is not single:
            cpus += " (" + " / ".join(fmt(cpu(p) / base_cpu) for p in reps) + ")"
        rss = " / ".join(f"{fmt(p['rss_steady_mib'], 0)}–{fmt(p['rss_peak_mib'], 0)}" for p in reps)
        peer = " / ".join(f"{p['peer_bytes_per_tick'] / 1e6:,.2f} MB" for p in reps) if j["server"] == "ours" and n > 1 else "–"
        p99 = "<br>".join(hpa(p["load"]) for p in reps)
        ready = " / ".join(fmt(p["ready_seconds"], 0) for p in reps)
        cov = j.get("coverage_after_kill")
        if cov:
            c = "<br>".join(f"{fmt(s['full_coverage_seconds'], 1)} s, age ≤ {fmt(s['max_reading_age_seconds'], 1)} s, "
                            f"≥ {s['min_nodes_in_an_answer']} nodes" for s in cov["survivors"])
        else:
            c = "–"
        after = j.get("kubelet_requests_per_cycle_after_kill")
        after_s = "–" if after is None else f"{after:,.0f} (target {min(r, n - 1) * nodes:,})"
        lines.append(f"| {name} | {j['kubelet_requests_per_cycle']:,.0f} ({target:,}) | {cpus} | {rss} | {peer} | {p99} "
                     f"| {ready} | {c} | {after_s} |")
    md = "\n".join(lines) + "\n"
    open(os.path.join(out, "results.md"), "w").write(md)
    json.dump(runs, open(os.path.join(out, "results.json"), "w"), indent=1)
    print(md)


if __name__ == "__main__":
    main()
