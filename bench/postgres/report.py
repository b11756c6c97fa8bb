#!/usr/bin/env python3
"""Summarises a bench/postgres/run.sh output directory into results.json and results.md,
with the issue #11 §4 targets checked (page p99 <= 50 ms, get p99 <= 10 ms,
commit-to-watcher p99 <= 1 s, flat RSS while paging).

Usage: report.py OUT
"""
import json
import os
import sys

out = sys.argv[1]


def load(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None


r = {k: load(f"{k}.json") for k in ("machine", "table", "get", "labels", "pages", "sql-paging",
                                     "kubectl", "watch", "throughput")}
if os.path.exists(os.path.join(out, "postgres-version.txt")):
    r["postgres"] = open(os.path.join(out, "postgres-version.txt")).read().strip()
if os.path.exists(os.path.join(out, "loadavg-at-measure.txt")):
    r["loadavg_at_measure"] = open(os.path.join(out, "loadavg-at-measure.txt")).read().split()


def ms(s, k="p99_ms"):
    v = (s or {}).get(k)
    return "–" if v is None else f"{v:.2f}"


def row(name, s):
    s = s or {}
    return f"| {name} | {s.get('n', 0)} | {ms(s, 'p50_ms')} | {ms(s, 'p99_ms')} | {ms(s, 'max_ms')} |"


pages = r["pages"] or {}
rss = pages.get("rss_kib", {})
rep = pages.get("repeated", {})
watch = r["watch"] or {}
checks = []


def check(name, ok, detail):
    checks.append({"target": name, "met": bool(ok), "measured": detail})


page_p99 = max((rep.get(k, {}).get("p99_ms") or 0) for k in ("first_page", "middle_page", "pages_near_end")) if rep else None
if page_p99 is not None:
    all_p99 = (pages.get("every_page_of_full_passes") or {}).get("p99_ms")
    check("page p99 <= 50 ms", page_p99 <= 50 and (all_p99 is None or all_p99 <= 50),
          f"repeated pages p99 max {page_p99:.1f} ms; every page of the full pass p99 {all_p99} ms")
g = ((r["get"] or {}).get("get") or {}).get("p99_ms")
if g is not None:
    check("get p99 <= 10 ms", g <= 10, f"{g:.2f} ms")
w = (watch.get("commit_to_watcher") or {}).get("p99_ms")
if w is not None:
    check("commit-to-watcher p99 <= 1 s", w <= 1000 and watch.get("events_missing") == 0,
          f"{w:.1f} ms, {watch.get('events_missing')} events missing")
tenths = rss.get("median_by_tenth_of_the_passes") or []
if tenths:
    growth = (tenths[-1] - tenths[0]) / 1024
    check("flat RSS while paging", abs(growth) <= 16, f"median RSS first tenth {tenths[0]/1024:.1f} MiB, "
          f"last tenth {tenths[-1]/1024:.1f} MiB (growth {growth:+.1f} MiB; max {rss.get('max', 0)/1024:.1f} MiB)")
r["targets"] = checks
json.dump(r, open(os.path.join(out, "results.json"), "w"), indent=1)

m = r["machine"] or {}
t = r["table"] or {}
L = [f"# PostgreSQL table source at {t.get('rows', '?'):,} rows" if isinstance(t.get('rows'), int) else "# PostgreSQL table source",
     "",
     f"Machine: {m.get('cpu_model')} × {m.get('cpus')}, {m.get('mem_gib')} GiB, kernel {m.get('kernel')}, "
     f"{m.get('rustc')}, build {m.get('kd_git')}; {r.get('postgres')}; load average at start {m.get('loadavg_at_start')}, "
     f"at the measurements {r.get('loadavg_at_measure')} (2 cores shared with other jobs).",
     "",
     f"Table: {t.get('rows')} rows in {t.get('namespaces')} namespaces; heap+TOAST {t.get('table_bytes', 0)/2**20:.0f} MiB, "
     f"primary key {t.get('primary_key_bytes', 0)/2**20:.0f} MiB, labels GIN {t.get('labels_gin_bytes', 0)/2**20:.0f} MiB; "
     f"COPY {t.get('copy_seconds')} s, VACUUM ANALYZE {t.get('vacuum_analyze_seconds')} s.",
     "",
     "## Targets", "", "| target | met | measured |", "|---|---|---|"]
L += [f"| {c['target']} | {'yes' if c['met'] else '**no**'} | {c['measured']} |" for c in checks]
L += ["", "## Through our server (HTTPS, one request at a time)", "",
      "| request | n | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|",
      row("get (random record)", (r["get"] or {}).get("get")),
      row(f"label-selected list, all namespaces ({(r['labels'] or {}).get('items_per_list')} items)",
          (r["labels"] or {}).get("label_selected_list")),
      row(f"every page of {pages.get('passes')} full -A pass(es), limit={pages.get('limit')}",
          pages.get("every_page_of_full_passes"))]
names = pages.get("repeated_pages", {})
for k in ("first_page", "middle_page", "pages_near_end"):
    L.append(row(f"{k.replace('_', ' ')} ({names.get(k)}), repeated", rep.get(k)))
L += ["", "Depth profile of the full pass (pages grouped by tenth of the table):", "",
      "| pages | n | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|"]
L += [row(d["pages"], d["latency"]) for d in pages.get("by_depth", [])]
if pages:
    L += ["", f"Full pass: {', '.join(f'{s:.1f} s' for s in pages.get('pass_seconds', []))}. "
          f"Server RSS (VmRSS, every 100 ms, {rss.get('samples')} samples): before {rss.get('before', 0)/1024:.1f} MiB, "
          f"min {rss.get('min', 0)/1024:.1f}, max {rss.get('max', 0)/1024:.1f}, after {(rss.get('after') or 0)/1024:.1f} MiB; "
          f"median per tenth of the pass (MiB): {', '.join(f'{v/1024:.1f}' for v in tenths)}."]
if r["kubectl"]:
    k = r["kubectl"]
    L += ["", f"`kubectl get dr -A --chunk-size=500 --no-headers` ({k.get('kubectl')}): {k.get('rows')} rows in {k.get('seconds')} s."]
sq = r["sql-paging"]
if sq:
    L += ["", f"## Keyset versus OFFSET, straight in SQL (not through our server; {sq.get('method')})", "",
          "| position | rows skipped | keyset p50 / p99 ms | OFFSET p50 / p99 ms | OFFSET n |", "|---|---|---|---|---|"]
    for name, d in sq.get("depths", {}).items():
        L.append(f"| {name} | {d['rows_skipped']} | {ms(d['keyset'], 'p50_ms')} / {ms(d['keyset'])} | "
                 f"{ms(d['offset'], 'p50_ms')} / {ms(d['offset'])} | {d['offset']['n']} |")
if watch:
    L += ["", f"## Watch fan-out: {watch.get('watchers')} watchers (all namespaces), {watch.get('changes')} commits "
          f"{watch.get('gap_ms')} ms apart", "",
          "| delay | n | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|",
          row("commit → each watcher", watch.get("commit_to_watcher")),
          row("commit → last watcher, per change", watch.get("commit_to_last_watcher_per_change")),
          row("commit round trip (psql-like client)", watch.get("commit_round_trip")),
          "", f"{watch.get('events_missing')} of {watch.get('events_expected')} events missing; "
          f"{watch.get('seconds_to_open_all_watches', 0):.1f} s to open all watches. {watch.get('origin')}."]
tp = r["throughput"]
if tp:
    L += ["", "## Changes per second through the one listener (one watcher)", "",
          "| phase | changes | writers | commits/s | delivered/s | last event after last commit ms | complete |",
          "|---|---|---|---|---|---|---|"]
    for name, d in tp.items():
        L.append(f"| {name} | {d['changes']} | {d['writers']} | {d['commits_per_second']:.0f} | "
                 f"{(d['delivered_per_second'] or 0):.0f} | {(d['last_event_after_last_commit_ms'] or 0):.0f} | {d['complete']} |")
open(os.path.join(out, "results.md"), "w").write("\n".join(L) + "\n")
print("\n".join(L))
