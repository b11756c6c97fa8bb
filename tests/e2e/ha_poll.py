#!/usr/bin/env python3
"""HPA-style polling for tests/e2e/ha.sh (issue 14).

poll OUT SECONDS INTERVAL URL CA CERT KEY [URL ...]
    GET every URL (a PodMetricsList: through kube-apiserver, or one replica directly) every
    INTERVAL seconds for SECONDS, on one kept-alive connection per URL (as the HPA's
    client does), with the admin client certificate. Writes one JSON line per answer:
    {"url", "t" (unix s), "status", "pods" [ns/name ...], "error"}.

analyse OUT RESOLUTION EXPECTED_PODS [--dead-window T0 T1 --dead-address A]
    Fails (exit 1, reasons printed) when an answer failed, or when a pod was missing from
    a URL's answers for longer than RESOLUTION seconds (from the first answer without it
    to the next answer with it). A 503 of kube-apiserver for the killed replica's address
    (A) between T0 (the SIGKILL) and T1 (its EndpointSlice entry gone) is the platform's
    routing to a dead endpoint, counted and printed separately and allowed.
"""

import http.client
import json
import ssl
import sys
import threading
import time
import urllib.parse


def poll_one(url, until, interval, ctx, out, lock):
    u = urllib.parse.urlsplit(url)
    conn = None
    while time.time() < until:
        t = time.time()
        rec = {"url": url, "t": t, "status": 0, "pods": [], "error": ""}
        try:
            if conn is None:
                conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=10)
            conn.request("GET", u.path + ("?" + u.query if u.query else ""),
                         headers={"Accept": "application/json"})
            r = conn.getresponse()
            body = r.read()
            rec["status"] = r.status
            if r.status == 200:
                items = json.loads(body).get("items", [])
                rec["pods"] = sorted(f'{p["metadata"]["namespace"]}/{p["metadata"]["name"]}' for p in items)
            else:
                rec["error"] = body[:300].decode("utf-8", "replace")
            if r.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
        except Exception as e:  # noqa: BLE001 - every failure is recorded
            rec["error"] = f"{type(e).__name__}: {e}"
            if conn is not None:
                conn.close()
            conn = None
        with lock:
            out.write(json.dumps(rec) + "\n")
            out.flush()
        time.sleep(max(0.0, interval - (time.time() - t)))


def poll(argv):
    out_path, seconds, interval, ca, cert, key = argv[0], float(argv[1]), float(argv[2]), argv[4], argv[5], argv[6]
    urls = [argv[3]] + argv[7:]
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    ctx.check_hostname = False  # replicas are dialled by IP; the chain is still verified
    until = time.time() + seconds
    lock = threading.Lock()
    with open(out_path, "a") as out:
        threads = [threading.Thread(target=poll_one, args=(u, until, interval, ctx, out, lock)) for u in urls]
        for th in threads:
            th.start()
        for th in threads:
            th.join()


def analyse(argv):
    out_path, resolution, expected = argv[0], float(argv[1]), int(argv[2])
    dead = None
    if "--dead-window" in argv:
        i = argv.index("--dead-window")
        dead = (float(argv[i + 1]), float(argv[i + 2]), argv[argv.index("--dead-address") + 1])
    recs = [json.loads(line) for line in open(out_path)]
    problems, platform = [], []
    by_url = {}
    for r in recs:
        by_url.setdefault(r["url"], []).append(r)
    for url, rs in by_url.items():
        rs.sort(key=lambda r: r["t"])
        ok = [r for r in rs if r["status"] == 200]
        for r in rs:
            if r["status"] == 200:
                continue
            if dead and dead[0] <= r["t"] <= dead[1] + 1.0 and dead[2] in r["error"]:
                platform.append(r)
            else:
                problems.append(f'{url}: request at {r["t"]:.2f} failed: {r["status"]} {r["error"][:200]}')
        if not ok:
            problems.append(f"{url}: no successful answer")
            continue
        universe = set().union(*(set(r["pods"]) for r in ok))
        if len(universe) != expected:
            problems.append(f"{url}: {len(universe)} distinct pods seen, expected {expected}")
        worst = (0.0, None)
        for pod in universe:
            missing_since = None
            for r in ok:
                present = pod in r["pods"]
                if not present and missing_since is None:
                    missing_since = r["t"]
                elif present and missing_since is not None:
                    gap = r["t"] - missing_since
                    if gap > worst[0]:
                        worst = (gap, pod)
                    missing_since = None
            if missing_since is not None:
                gap = ok[-1]["t"] - missing_since
                problems.append(f"{url}: {pod} missing from {missing_since:.2f} to the end ({gap:.1f}s)")
        full = sum(1 for r in ok if len(r["pods"]) == expected)
        print(f"{url}: {len(rs)} answers, {len(ok)} ok, {full} with all {expected} pods, "
              f"longest gap of one pod {worst[0]:.2f}s ({worst[1]})")
        if worst[0] > resolution:
            problems.append(f"{url}: {worst[1]} missing for {worst[0]:.2f}s > one resolution ({resolution}s)")
    if dead:
        print(f"requests kube-apiserver routed to the killed replica before its EndpointSlice entry "
              f"was gone ({dead[1] - dead[0]:.2f}s window): {len(platform)}")
    for p in problems:
        print("PROBLEM:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    if sys.argv[1] == "poll":
        poll(sys.argv[2:])
    elif sys.argv[1] == "analyse":
        sys.exit(analyse(sys.argv[2:]))
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
