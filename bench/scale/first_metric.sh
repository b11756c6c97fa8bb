#!/usr/bin/env bash
# Time to first metric (issue 12 §4): our server and metrics-server scrape the same kubelet-sim
# fleet behind the same kube-apiserver, at the same time on two ports (as golden.sh), while
# `kd-load first-metric` starts new pods through kubelet-sim's control endpoint (Pod created in
# kube-apiserver, container started in the simulator, Pod marked Running) and polls both
# servers' namespace list until each pod is served with usage. Writes first-metric.json
# (median, p90, p99, max and n per server, in ms from the container's start), machine.json
# (load average before/after) and the exact command to OUT/command.txt.
#
# Usage: bench/scale/first_metric.sh [--nodes 50] [--pods 30] [--resolution 15s]
#        [--new-pods 1200] [--rate 20] [--out DIR] [--keep]
# Environment: KD_BIN, KD_LOAD, METRICS_SERVER_BIN (default: built/cached), KD_SIM_FIRST (first
# kubelet address, default 127.8.0.1, apart from the other harnesses').
# Hold the shared cluster lock: flock /tmp/kubedojo-cluster.lock bash bench/scale/first_metric.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
E2E=$ROOT/tests/e2e
NODES=50 PODS=30 CONTAINERS=2 RESOLUTION=15s NEW_PODS=1200 RATE=20 OUT= KEEP=false
SIM_FIRST=${KD_SIM_FIRST:-127.8.0.1}
ARGV=("$@")
while (($#)); do
  case "$1" in
    --nodes) NODES=$2; shift ;;
    --pods) PODS=$2; shift ;;
    --resolution) RESOLUTION=$2; shift ;;
    --new-pods) NEW_PODS=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --out) OUT=$2; shift ;;
    --keep) KEEP=true ;;
    -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
RES_S=${RESOLUTION%s}
OUT=${OUT:-$ROOT/target/scale/first-metric-${NODES}x${PODS}-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log() { printf '[first-metric %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
echo "bench/scale/first_metric.sh ${ARGV[*]}  (git $(git -C "$ROOT" rev-parse --short HEAD))" >"$OUT/command.txt"

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# shellcheck source=bench/scale/pair.sh
source "$ROOT/bench/scale/pair.sh"
pair_binaries
pair_cluster_up
CONTROL_PORT=$(_kd_free_port)
pair_fleet "$SIM_FIRST" "kubelet-sim control on" --control-address "127.0.0.1:$CONTROL_PORT"
pair_servers "$CONTROL_PORT"
LOAD_BEFORE=$(loadavg)
log "both serve the fleet; starting $NEW_PODS pods at $RATE/s (load $LOAD_BEFORE)"
"$KD_LOAD" "${CERT[@]}" first-metric --apiserver "$KD_APISERVER_URL" \
  --control "http://127.0.0.1:$CONTROL_PORT" --objects "$OUT/objects.json" \
  --server "ours=https://127.0.0.1:${PORT[ours]}" --server "metrics-server=https://127.0.0.1:${PORT[ms]}" \
  --pods "$NEW_PODS" --rate "$RATE" --timeout "$((RES_S * 6))" >"$OUT/first-metric.json" ||
  die "kd-load first-metric failed"
LOAD_AFTER=$(loadavg)
FOLLOW_UPS=$(curl -sSk "${CERT[@]}" "https://127.0.0.1:${PORT[ours]}/metrics" |
  awk '/^kubedojo_kubelet_follow_up_scrapes/ {print $2}')
python3 - "$OUT" "$LOAD_BEFORE" "$LOAD_AFTER" "${FOLLOW_UPS:-}" "$(nproc)" <<'PY'
import json, sys
out, before, after, follow, cpus = sys.argv[1:]
json.dump({"loadavg_before": before, "loadavg_after": after, "cpus": int(cpus),
           "ours_follow_up_scrapes_total": follow}, open(f"{out}/machine.json", "w"), indent=1)
PY
log "follow-up scrapes (ours): ${FOLLOW_UPS:-?}; load $LOAD_BEFORE -> $LOAD_AFTER"
cat "$OUT/first-metric.json"
log "output in $OUT"
