#!/usr/bin/env python3
"""Helpers of bench/soak.sh (standard library, except `plot`: matplotlib).

  prepare OBJECTS FLAKY_PORT CHURN OUTDIR
      Edits kubelet-sim's --objects-out List in place: the last node's kubelet port
      (status.daemonEndpoints.kubeletEndpoint.Port) becomes FLAKY_PORT, where the flaky
      proxy listens. Picks CHURN pods (not on that node) to delete and recreate. Writes to
      OUTDIR: flaky.env (FLAKY_NODE, FLAKY_ADDR, FLAKY_REAL_PORT, FLAKY_PODS), churn/<i>.json
      (each churn pod, status removed) and churn/<i>.status (its /status merge patch),
      churn.txt ("NAMESPACE NAME" per line), targets-hpa.json (kd-load targets: only the
      deployments with no churn pod and no pod on the flaky node, so every HPA answer is
      checked exactly) and targets-lists.json (every node and pod; kd-load --slack covers
      the flaky node's and the churn pods).
  flaky LISTEN_ADDR LISTEN_PORT TARGET_ADDR TARGET_PORT UP_S DOWN_S LOG
      A TCP forwarder in front of one kubelet that is up UP_S seconds, then down DOWN_S
      seconds (listener closed: connection refused; open connections cut), forever.
  summarize SAMPLES_CSV HPA_JSON LISTS_JSON WATCH_LOG[,WATCH_LOG] WARMUP_S OUT_JSON
      The figures: errors per stream, RSS after warm-up and at the end, drift, CPU.
  plot SAMPLES_CSV SUMMARY_JSON PNG
"""

import asyncio
import json
import statistics
import sys
import time


def prepare(objects, flaky_port, churn, outdir):
    churn = int(churn)
    import os

    with open(objects) as f:
        lst = json.load(f)
    nodes = [o for o in lst["items"] if o["kind"] == "Node"]
    pods = [o for o in lst["items"] if o["kind"] == "Pod"]
    flaky = nodes[-1]
    ep = flaky["status"]["daemonEndpoints"]["kubeletEndpoint"]
    real_port = ep["Port"]
    ep["Port"] = int(flaky_port)
    addr = next(a["address"] for a in flaky["status"]["addresses"] if a["type"] == "InternalIP")
    fname = flaky["metadata"]["name"]
    flaky_pods = [p for p in pods if p["spec"].get("nodeName") == fname]
    others = [p for p in pods if p["spec"].get("nodeName") != fname]
    # churn pods spread over the fleet (every k-th)
    step = max(1, len(others) // max(1, churn))
    churned = others[::step][:churn]
    os.makedirs(f"{outdir}/churn", exist_ok=True)
    with open(f"{outdir}/churn.txt", "w") as out:
        for i, p in enumerate(churned):
            p2 = json.loads(json.dumps(p))
            status = p2.pop("status", {}) or {}
            status["phase"] = "Running"
            status.setdefault("conditions", [{"type": "Ready", "status": "True"}])
            with open(f"{outdir}/churn/{i}.json", "w") as f:
                json.dump(p2, f)
            with open(f"{outdir}/churn/{i}.status", "w") as f:
                json.dump({"status": status}, f)
            out.write(f"{p['metadata']['namespace']} {p['metadata']['name']}\n")
    with open(objects, "w") as f:
        json.dump(lst, f)
    volatile = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in churned + flaky_pods}
    by_app, touched = {}, set()
    for p in pods:
        key = (p["metadata"]["namespace"], p["metadata"].get("labels", {}).get("app"))
        if key[1] is None:
            continue
        by_app[key] = by_app.get(key, 0) + 1
        if (p["metadata"]["namespace"], p["metadata"]["name"]) in volatile:
            touched.add(key)
    deployments = sorted([ns, app, n] for (ns, app), n in by_app.items() if (ns, app) not in touched)
    with open(f"{outdir}/targets-hpa.json", "w") as f:
        json.dump({"nodes": len(nodes), "pods": len(pods) - len(volatile), "deployments": deployments}, f)
    with open(f"{outdir}/targets-lists.json", "w") as f:
        json.dump({"nodes": len(nodes), "pods": len(pods), "deployments": []}, f)
    with open(f"{outdir}/flaky.env", "w") as f:
        f.write(f"FLAKY_NODE={fname}\nFLAKY_ADDR={addr}\nFLAKY_REAL_PORT={real_port}\n")
        f.write(f"FLAKY_PODS={len(flaky_pods)}\nHPA_DEPLOYMENTS={len(deployments)}\n")
        f.write(f"ALL_DEPLOYMENTS={len(by_app)}\n")


def flaky(listen_addr, listen_port, target_addr, target_port, up_s, down_s, log):
    up_s, down_s = float(up_s), float(down_s)
    conns = set()

    async def pipe(r, w):
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            w.close()

    async def handle(cr, cw):
        try:
            ur, uw = await asyncio.open_connection(target_addr, int(target_port))
        except OSError:
            cw.close()
            return
        task = asyncio.gather(pipe(cr, uw), pipe(ur, cw))
        conns.add(task)
        try:
            await task
        except asyncio.CancelledError:
            pass
        finally:
            conns.discard(task)
            cw.close()
            uw.close()

    async def main():
        with open(log, "a", buffering=1) as lf:
            while True:
                server = await asyncio.start_server(handle, listen_addr, int(listen_port), reuse_address=True)
                lf.write(f"{time.time():.1f} up\n")
                await asyncio.sleep(up_s)
                server.close()
                for t in list(conns):
                    t.cancel()
                await server.wait_closed()
                lf.write(f"{time.time():.1f} down\n")
                await asyncio.sleep(down_s)

    asyncio.run(main())


def read_samples(path):
    rows = []
    with open(path) as f:
        next(f)
        for line in f:
            t, rss, cpu = line.split(",")
            rows.append((float(t), int(rss), float(cpu)))
    return rows


def summarize(samples, hpa_json, lists_json, events_log, warmup_s, out):
    warmup_s = float(warmup_s)
    rows = read_samples(samples)
    t0 = rows[0][0]
    ts = [r[0] - t0 for r in rows]
    cpu_pct = [0.0] + [
        100.0 * (rows[i][2] - rows[i - 1][2]) / (rows[i][0] - rows[i - 1][0]) for i in range(1, len(rows))
    ]
    after = [(t, r[1]) for t, r in zip(ts, rows) if t >= warmup_s]
    end_t = ts[-1]
    win = 180.0
    first = [rss for t, rss in after if t < warmup_s + win]
    last = [rss for t, rss in after if t > end_t - win]
    rss_start = statistics.median(first)
    rss_end = statistics.median(last)
    streams = {}
    errors = 0
    for path in (hpa_json, lists_json):
        with open(path) as f:
            s = json.load(f)
        for kind, r in s.items():
            if not isinstance(r, dict):
                continue
            streams[kind] = {
                "requests": r["requests"] + r["warmup_requests"],
                "errors": r["errors"] + r["warmup_errors"],
                "errors_by_reason": r["errors_by_reason"],
                "p50_ms": r["ok"]["p50_ms"],
                "p99_ms": r["ok"]["p99_ms"],
                "max_ms": r["ok"]["max_ms"],
                "error_examples": r["error_examples"][:3],
            }
            errors += r["errors"] + r["warmup_errors"]
    events = {}
    for path in events_log.split(","):
        with open(path) as f:
            for line in f:
                k = " ".join(line.split()[:2])
                events[k] = events.get(k, 0) + 1
    cpu_after = [c for t, c in zip(ts, cpu_pct) if t >= warmup_s]
    summary = {
        "seconds": round(end_t),
        "samples": len(rows),
        "warmup_seconds": warmup_s,
        "errors": errors,
        "streams": streams,
        "rss_mib_after_warmup": round(rss_start / 1024, 1),
        "rss_mib_end": round(rss_end / 1024, 1),
        "rss_mib_max_after_warmup": round(max(r for _, r in after) / 1024, 1),
        "rss_drift_percent": round(100.0 * (rss_end - rss_start) / rss_start, 2),
        "cpu_percent_mean_after_warmup": round(statistics.mean(cpu_after), 2),
        "cpu_percent_p99_after_warmup": round(sorted(cpu_after)[int(0.99 * (len(cpu_after) - 1))], 1),
        "cpu_seconds_total": round(rows[-1][2] - rows[0][2], 1),
        "watch_lines": events,
    }
    with open(out, "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary, indent=2))


def plot(samples, summary_json, png):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_samples(samples)
    with open(summary_json) as f:
        s = json.load(f)
    t0 = rows[0][0]
    mins = [(r[0] - t0) / 60 for r in rows]
    rss = [r[1] / 1024 for r in rows]
    cpu = [0.0] + [100.0 * (rows[i][2] - rows[i - 1][2]) / (rows[i][0] - rows[i - 1][0]) for i in range(1, len(rows))]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    a1.plot(mins, rss, lw=1)
    a1.axvline(s["warmup_seconds"] / 60, color="grey", ls="--", lw=0.8)
    a1.set_ylabel("RSS (MiB)")
    a1.set_ylim(bottom=0)
    a1.set_title(
        f"kubedojo-data-api soak: {s['seconds'] // 60} min, {s['errors']} errors, "
        f"RSS drift after warm-up {s['rss_drift_percent']:+.1f}%"
    )
    a2.plot(mins, cpu, lw=0.8, color="tab:orange")
    a2.set_ylabel("CPU (% of one core)")
    a2.set_xlabel("minutes")
    a2.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(png, dpi=100)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"prepare": prepare, "flaky": flaky, "summarize": summarize, "plot": plot}[cmd](*args)
