#!/usr/bin/env python3
"""Start-up phases of our server, read from the logs run.sh keeps (issue 15 §7).

For each `ours-rN.log` in a run's output directory (or `ours-rN.startup.log`, the same log
without its per-request lines, as committed under bench/results/): seconds from the `serving` line (the
listener is bound a few ms after exec) to `node list synced`, `pod list synced` and
`first scrape cycle done`, next to the run's `ready_seconds` (exec until the node and the
full pod list hold every expected item, from `ours-rN.json`). Prints a Markdown table.

    python3 bench/scale/startup_phases.py bench/results/5000x30
"""
import datetime
import glob
import json
import os
import re
import statistics
import sys

STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z")
PHASES = [
    ("node list", "node list synced"),
    ("pod list", "pod list synced"),
    ("first cycle done", "first scrape cycle done"),
]


def when(line):
    m = STAMP.match(line)
    if not m:
        return None
    return datetime.datetime.fromisoformat(m.group(1)[:26])


def phases(path):
    """Seconds after the `serving` line for each phase (first occurrence), or None."""
    start, found = None, {}
    with open(path, errors="replace") as f:
        for line in f:
            t = when(line)
            if t is None:
                continue
            if start is None and " serving addr=" in line:
                start = t
            for name, text in PHASES:
                if name not in found and text in line and start is not None:
                    found[name] = (t - start).total_seconds()
    return found


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: startup_phases.py DIR (a run.sh output directory with ours-r*.log)")
    out = sys.argv[1]
    logs = sorted(
        p
        for p in glob.glob(os.path.join(out, "ours-r*.log"))
        if re.fullmatch(r"ours-r\d+(\.startup)?\.log", os.path.basename(p))
    )
    if not logs:
        sys.exit(f"{out}: no ours-r*.log")
    cols = [name for name, _ in PHASES] + ["serving every pod"]
    rows, per = [], {c: [] for c in cols}
    for log in logs:
        tag = os.path.basename(log).split(".")[0]
        found = phases(log)
        summary = os.path.join(out, tag + ".json")
        if os.path.exists(summary):
            found["serving every pod"] = json.load(open(summary)).get("ready_seconds")
        rows.append((tag, found))
        for c in cols:
            if found.get(c) is not None:
                per[c].append(found[c])
    print("| round | " + " | ".join(f"{c}, s" for c in cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for tag, found in rows:
        cells = [f"{found[c]:.1f}" if found.get(c) is not None else "–" for c in cols]
        print(f"| {tag} | " + " | ".join(cells) + " |")
    med = [f"{statistics.median(per[c]):.1f}" if per[c] else "–" for c in cols]
    print("| median | " + " | ".join(med) + " |")


if __name__ == "__main__":
    main()
