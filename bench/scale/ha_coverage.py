#!/usr/bin/env python3
"""After a replica is killed: how long until the survivors serve every node from a reading taken
after the kill (bench/scale/ha.sh, issue 14).

Usage: ha_coverage.py KILL_AT SECONDS NODES CERT KEY URL...

Polls each URL's /apis/metrics.k8s.io/v1beta1/nodes every 0.5 s for SECONDS (or until every
survivor is covered). A node counts as covered once a reading with a timestamp strictly after
KILL_AT has been served (timestamps have whole seconds, so this errs late by < 1 s). Prints JSON:
per survivor the seconds from the kill to full coverage (null if not reached), the fewest nodes
seen in one answer, the largest reading age seen (poll time - timestamp) and failed polls.
"""
import datetime
import json
import ssl
import sys
import time
import urllib.request


def parse_ts(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def main():
    kill_at, seconds, nodes = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    cert, key, urls = sys.argv[4], sys.argv[5], sys.argv[6:]
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(cert, key)
    state = {u: {"covered": set(), "at": None, "min_nodes": None, "max_age": 0.0, "failures": 0,
                 "polls": 0} for u in urls}
    end = kill_at + seconds
    while time.time() < end and any(s["at"] is None for s in state.values()):
        for u, s in state.items():
            if s["at"] is not None:
                continue
            t = time.time()
            try:
                with urllib.request.urlopen(u + "/apis/metrics.k8s.io/v1beta1/nodes", context=ctx,
                                            timeout=5) as r:
                    items = json.load(r)["items"]
            except Exception:  # noqa: BLE001 - counted
                s["failures"] += 1
                continue
            s["polls"] += 1
            s["min_nodes"] = len(items) if s["min_nodes"] is None else min(s["min_nodes"], len(items))
            for it in items:
                ts = parse_ts(it["timestamp"])
                s["max_age"] = max(s["max_age"], t - ts)
                if ts > kill_at:
                    s["covered"].add(it["metadata"]["name"])
            if len(s["covered"]) >= nodes:
                s["at"] = round(time.time() - kill_at, 2)
        time.sleep(0.5)
    print(json.dumps({
        "kill_at": kill_at,
        "survivors": [{"url": u, "full_coverage_seconds": s["at"], "covered_nodes": len(s["covered"]),
                       "min_nodes_in_an_answer": s["min_nodes"], "max_reading_age_seconds": round(s["max_age"], 2),
                       "polls": s["polls"], "failed_polls": s["failures"]} for u, s in state.items()],
    }, indent=1))


if __name__ == "__main__":
    main()
