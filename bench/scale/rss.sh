#!/usr/bin/env bash
# Steady resident memory of our server, binary against binary (issue #15 §4): the same fleet
# (kube-apiserver, kubelet-sim, TLS to kubelets, run.sh's flags), one binary at a time, no API
# load. For each BIN: start it, wait until it serves every pod, let 2 more ticks pass, then
# sample VmRSS every 0.5 s for C whole ticks; prints the median in MiB and per node in KiB.
# The difference between two binaries divided by the node count is what a change saves per
# node. Memory, not time: it needs no `flock /tmp/kubedojo-cluster.lock`.
#
# Usage:
#   bench/scale/rss.sh [--nodes 400] [--pods 30] [--cycles 3] [--resolution 15s] BIN...
#
# Options as bench/scale/callgrind.sh (--first-address, default 127.6.0.1; --extra FLAG).
set -euo pipefail
NODES=400 RESOLUTION=15s FLEET_TOOL=rss FLEET_HELP_LINES=2,16p
# shellcheck source=bench/scale/fleet.sh
source "$(dirname "${BASH_SOURCE[0]}")/fleet.sh" "$@"

n=0
for bin in "${BINS[@]}"; do
  n=$((n + 1))
  PORT=$(_kd_free_port)
  URL=https://127.0.0.1:$PORT
  SERVER_ARGS "$n" "$PORT"
  NO_COLOR=1 KUBEDOJO_LOG=$LOG_FILTER "$bin" "${SERVER_FLAGS[@]}" \
    </dev/null >"$OUT/server-$n.log" 2>&1 &
  SERVER_PID=$!
  "$KD_LOAD" "${CERT[@]}" wait --url "$URL" --nodes "$EXPECT_NODES" --pods "$EXPECT_PODS" --timeout 900 \
    --pid "$SERVER_PID" >"$OUT/wait-$n.log" 2>&1 || die "$bin never served the fleet ($OUT/server-$n.log)"
  c=$(ticks)
  while (($(ticks) < c + 2)); do sleep 0.2; done
  c0=$(ticks)
  : >"$OUT/rss-$n.txt"
  while (($(ticks) < c0 + CYCLES)); do
    awk '$1 == "VmRSS:" {print $2}' "/proc/$SERVER_PID/status" >>"$OUT/rss-$n.txt"
    sleep 0.5
  done
  fails=$(grep -c "failed to scrape" "$OUT/server-$n.log" || true)
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
  python3 - "$OUT/rss-$n.txt" "$NODES" "$bin" "$fails" <<'PY'
import statistics, sys
kb = [int(l) for l in open(sys.argv[1]) if l.strip()]
med = statistics.median(kb)
print(f"{sys.argv[3]}: steady RSS {med / 1024:.1f} MiB [{min(kb) / 1024:.1f}-{max(kb) / 1024:.1f}], "
      f"{med / int(sys.argv[2]):.1f} KiB per node ({len(kb)} samples; {sys.argv[4]} failed scrapes)")
PY
done
