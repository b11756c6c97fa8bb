#!/usr/bin/env python3
"""Every CI gate of report.py can fail (issue #15 §6).

Takes a committed run.sh output directory (default bench/results/ci-100x30-8e94bb1, a passing
CI run), checks that report.py --check passes on it as recorded, then for each gate doctors one
input in a scratch copy (ours 2x slower, a baseline that errored, a missing round, ...) and
checks that report.py now fails with that gate, and only that gate, failing.

Usage: python3 bench/scale/test_gates.py [RUN_DIR]   (exit 0 when every gate can fail)
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "../results/ci-100x30-8e94bb1")
PARAMS = json.load(open(os.path.join(RUN, "results.json")))["params"]
FLAGS = ["nodes", "pods", "containers", "rounds", "namespaces", "deployments", "expect_nodes",
         "expect_pods", "top_pods_rate", "top_nodes_rate", "load_seconds", "warmup", "hpa_period",
         "resolution", "scenario", "deployment_pods", "hpa_mode", "hpa_via", "hpa_accept",
         "top_accept", "baselines"]


def report(d):
    args = [sys.executable, os.path.join(HERE, "report.py"), d, "--check", "--kd-load", ""]
    for k in FLAGS:
        args += [f"--{k.replace('_', '-')}", str(PARAMS[k])]
    p = subprocess.run(args, capture_output=True, text=True)
    failed = [l[5:] for l in p.stdout.splitlines() if l.startswith("FAIL ")]
    return p.returncode, failed


def edit(d, name, f):
    path = os.path.join(d, name)
    data = json.load(open(path))
    f(data)
    json.dump(data, open(path, "w"))


def ms(d, key):
    return json.load(open(os.path.join(d, "metrics-server-r1.json")))[key]


def both_rounds(d, server, f):
    for p in sorted(glob.glob(os.path.join(d, f"{server}-r[0-9].json"))):
        edit(d, os.path.basename(p), f)


CASES = [
    ("Resident memory, peak", lambda d: both_rounds(d, "ours", lambda r: r.update(
        rss_peak_mib=0.6 * ms(d, "rss_peak_mib")))),
    ("Resident memory, steady", lambda d: both_rounds(d, "ours", lambda r: r.update(
        rss_steady_mib=0.6 * ms(d, "rss_steady_mib")))),
    ("CPU seconds per scrape cycle", lambda d: both_rounds(d, "ours", lambda r: r.update(
        cpu_seconds_per_cycle=0.5 * ms(d, "cpu_seconds_per_cycle")))),
    ("HPA list, straight to the server: p50", lambda d: both_rounds(d, "ours", lambda r: r["load"]["hpa"]["ok"].update(
        p50_ms=2 * ms(d, "load")["hpa"]["ok"]["p50_ms"]))),
    ("full pod list (`kubectl top pod -A`): p50", lambda d: both_rounds(d, "ours", lambda r: r["load"]["top-pods"]["ok"].update(
        p50_ms=ms(d, "load")["top-pods"]["ok"]["p50_ms"]))),
    ("ours: measured in every round", lambda d: os.remove(os.path.join(d, "ours-r2.json"))),
    ("metrics-server: zero errors", lambda d: edit(d, "metrics-server-r1.json", lambda r: r["load"]["hpa"].update(
        errors=1))),
    ("ours: zero errors", lambda d: edit(d, "ours-r2.json", lambda r: r["load"]["top-nodes"].update(
        warmup_errors=1))),
    ("metrics-server: every scheduled request answered", lambda d: edit(d, "metrics-server-r2.json", lambda r: r["load"]["top-pods"]["ok"].update(
        n=1))),
    ("ours: every scheduled request answered", lambda d: edit(d, "ours-r1.json", lambda r: r["load"]["hpa-aggregated"]["ok"].update(
        n=0))),
]

problems = []
with tempfile.TemporaryDirectory(prefix="kd-gates-") as tmp:
    def scratch():
        d = os.path.join(tmp, "run")
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(RUN, d)
        return d

    rc, failed = report(scratch())
    print(f"as recorded: exit {rc}, failing: {failed or 'none'}")
    if rc != 0 or failed:
        problems.append("the recorded run does not pass")
    for gate, doctor in CASES:
        d = scratch()
        doctor(d)
        rc, failed = report(d)
        ok = rc != 0 and len(failed) == 1 and failed[0].startswith(gate)
        print(f"{'ok  ' if ok else 'BAD '} {gate}: exit {rc}, failing: {failed}")
        if not ok:
            problems.append(gate)
print(f"{len(CASES) - len([p for p in problems if p != 'the recorded run does not pass'])} of {len(CASES)} gates shown failing"
      + (f"; problems: {problems}" if problems else ""))
sys.exit(1 if problems else 0)
