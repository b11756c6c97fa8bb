#!/usr/bin/env python3
"""Writes OUT/results.json and OUT/results.md of a bench/scale/watchers.sh run: per step (number
of concurrent watches) the server's steady RSS (median VmRSS within the step), its VmHWM (reset
at the step's start when clear_refs allowed it), its CPU seconds per scrape tick, kd-load's own
CPU per tick and peak RSS, events and bytes per tick, the slowest tick's delivery and errors.

Usage: watchers_report.py OUT --nodes N --pods M --resolution 15s --ticks K --http h2
       --connections C [--namespace NS] [--label-selector SEL] [--extra FLAGS] --hz 100
"""
import argparse
import csv
import json
import os
import statistics


def step_row(out, s, rss, hz):
    w = int(s["watchers"])
    t0, t1 = float(s["start"]), float(s["end"])
    ticks = int(s["ticks1"]) - int(s["ticks0"])
    samples = [kb for t, kb in rss if t0 <= t <= t1]
    row = {
        "watchers": w,
        "seconds": round(t1 - t0, 1),
        "server_ticks": ticks,
        "server_cpu_seconds_per_tick": (float(s["cpu1"]) - float(s["cpu0"])) / hz / ticks
        if ticks else None,
        "server_rss_steady_mib": statistics.median(samples) / 1024 if samples else None,
        "server_rss_max_sampled_mib": max(samples) / 1024 if samples else None,
        "server_vmhwm_mib": int(s["hwm_kb"]) / 1024 if s["hwm_kb"] else None,
        "vmhwm_reset_at_step_start": s["hwm_reset"] == "true",
    }
    path = f"{out}/step-{w}.json"
    if w and os.path.exists(path) and os.path.getsize(path):
        k = json.load(open(path))
        ticks = k["per_tick"]
        med = lambda key: statistics.median([t[key] for t in ticks if t[key] is not None]) \
            if any(t[key] is not None for t in ticks) else None
        row.update({
            "errors": k["errors"],
            "errors_by_reason": k["errors_by_reason"],
            "error_examples": k["error_examples"][:3],
            "pods": k["pods"],
            "ticks_checked": k["ticks_checked"],
            "events_per_watcher_per_tick_median": med("events_per_watcher_median"),
            "bytes_per_tick_all_watchers_median": med("bytes"),
            "delivery_seconds_max": max((t["delivery_seconds"] or 0) for t in ticks) if ticks else None,
            "kd_load_cpu_seconds_per_tick": k["kd_load_cpu_seconds_per_tick"],
            "kd_load_cpu_cores": k["kd_load_cpu_cores"],
            "kd_load_rss_peak_mib": k["kd_load_rss_peak_mib"],
            "resumed_between_scrapes": k["resumed_between_scrapes"],
            "all_finished": k["all_finished"],
            "http": k["http"],
            "connections": k["connections"],
        })
    elif w:
        row.update({"errors": None, "note": f"no kd-load report (see step-{w}.log)"})
    return row


def fmt(v, nd=2):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    for a in ("nodes", "pods", "ticks", "connections"):
        p.add_argument(f"--{a}", type=int, required=True)
    for a in ("resolution", "http"):
        p.add_argument(f"--{a}", required=True)
    p.add_argument("--namespace", default="")
    p.add_argument("--label-selector", default="")
    p.add_argument("--extra", default="")
    p.add_argument("--hz", type=float, default=100.0)
    a = p.parse_args()
    rss = []
    for line in open(f"{a.out}/rss.tsv"):
        f = line.split()
        if len(f) == 2:
            rss.append((float(f[0]), int(f[1])))
    steps = list(csv.DictReader(open(f"{a.out}/steps.tsv"), delimiter="\t"))
    rows = [step_row(a.out, s, rss, a.hz) for s in steps]
    machine = json.load(open(f"{a.out}/machine.json"))
    command = open(f"{a.out}/command.txt").read().strip()
    res = {"command": command, "machine": machine, "nodes": a.nodes, "pods_per_node": a.pods,
           "resolution": a.resolution, "ticks_per_step": a.ticks, "http": a.http,
           "connections": a.connections, "namespace": a.namespace or None,
           "label_selector": a.label_selector or None, "server_extra_flags": a.extra or None,
           "steps": rows}
    json.dump(res, open(f"{a.out}/results.json", "w"), indent=1)
    md = [f"# Watchers at {a.nodes} × {a.pods}, {a.resolution}",
          "",
          f"`{command}`",
          "",
          f"Machine: {machine.get('cpu_model')} × {machine.get('cpus')}, {machine.get('mem_gib')} GiB, "
          f"load average at start {' '.join(machine.get('loadavg_at_start', []))}; kd-load on the same "
          f"machine. Watches over {a.http}"
          + (f" ({a.connections} connection(s))" if a.http == "h2" else " (one connection each)")
          + (f", namespace {a.namespace}" if a.namespace else "")
          + (f", labelSelector {a.label_selector}" if a.label_selector else "")
          + (f"; server flags {a.extra}" if a.extra else "") + ".",
          "",
          "| watchers | server ticks | server CPU-s/tick | server RSS steady, MiB | server VmHWM, MiB "
          "| events/watcher/tick | MB/tick (all) | slowest delivery, s | kd-load CPU-s/tick "
          "| kd-load cores | kd-load RSS peak, MiB | errors |",
          "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        b = r.get("bytes_per_tick_all_watchers_median")
        md.append("| " + " | ".join([
            str(r["watchers"]), str(r["server_ticks"]), fmt(r["server_cpu_seconds_per_tick"], 3),
            fmt(r["server_rss_steady_mib"], 1), fmt(r["server_vmhwm_mib"], 1),
            fmt(r.get("events_per_watcher_per_tick_median"), 0),
            fmt(b / 1e6 if b is not None else None, 1), fmt(r.get("delivery_seconds_max"), 2),
            fmt(r.get("kd_load_cpu_seconds_per_tick"), 3), fmt(r.get("kd_load_cpu_cores"), 2),
            fmt(r.get("kd_load_rss_peak_mib"), 1),
            fmt(r.get("errors")) + ("" if not r.get("errors") else f" {r.get('errors_by_reason')}"),
        ]) + " |")
    md += ["",
           "Server CPU per tick is Δ(utime+stime) over the step ÷ the scrape ticks in it (it includes "
           "kd-load's one list per step). RSS steady is the median of 0.5 s VmRSS samples within the "
           "step. The watch history starts with the first watch and then stays, so steps after the "
           "first with watchers include it. A step's errors are wrong or missed ticks per watcher, "
           "ERROR events, refused or cut-off watches (src/bin/kd-load/watchers.rs). When kd-load's "
           "cores approach the machine's CPUs, or the slowest delivery approaches the resolution, the "
           "client (or the shared machine), not the server alone, is the limit."]
    open(f"{a.out}/results.md", "w").write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
