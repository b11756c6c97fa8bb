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
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
E2E=$ROOT/tests/e2e
NODES=400 PODS=30 CONTAINERS=2 CYCLES=3 RESOLUTION=15s OUT= EXTRA=() SIM_FIRST=127.6.0.1
BINS=()
while (($#)); do
  case "$1" in
    --nodes) NODES=$2; shift ;;
    --pods) PODS=$2; shift ;;
    --cycles) CYCLES=$2; shift ;;
    --resolution) RESOLUTION=$2; shift ;;
    --out) OUT=$2; shift ;;
    --first-address) SIM_FIRST=$2; shift ;;
    --extra) EXTRA+=("$2"); shift ;;
    -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) BINS+=("$1") ;;
  esac
  shift
done
((${#BINS[@]})) || { echo "usage: $0 [options] BIN..." >&2; exit 2; }
RES_S=${RESOLUTION%s}
NAMESPACES=$((NODES / 20 > 3 ? NODES / 20 : 3))
OUT=${OUT:-$ROOT/target/scale/rss-${NODES}x${PODS}-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log() { printf '[rss %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
KD_LOAD=${KD_LOAD:-$TARGET_DIR/release/kd-load}
SIM_BIN=${SIM_BIN:-${BINS[0]}}

# shellcheck source=tests/e2e/cluster.sh
source "$E2E/cluster.sh"
CL=$OUT/cluster
SIM_PID= SERVER_PID=
cleanup() {
  local rc=$?
  [[ -n $SERVER_PID ]] && { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }
  [[ -n $SIM_PID ]] && { kill "$SIM_PID" 2>/dev/null || true; wait "$SIM_PID" 2>/dev/null || true; }
  kd_cluster_down "$CL" >/dev/null 2>&1 || true
  exit $rc
}
trap cleanup EXIT

KUBEDOJO_AGGREGATOR_ROUTING=false kd_cluster_up "$CL" >&2
# shellcheck disable=SC1091
source "$CL/cluster.env"
ADMIN_KC=$CL/admin.kubeconfig
CERT=(--cert "$CL/pki/admin.crt" --key "$CL/pki/admin.key")
"$SIM_BIN" kubelet-sim --nodes "$NODES" --pods-per-node "$PODS" --containers-per-pod "$CONTAINERS" \
  --namespaces "$NAMESPACES" --first-address "$SIM_FIRST" --port 10250 --idle-percent 0 \
  --deployment-pods 5-50 --objects-out "$OUT/objects.json" --ca-out "$OUT/sim-ca.crt" \
  </dev/null >"$OUT/kubelet-sim.log" 2>&1 &
SIM_PID=$!
for ((i = 0; i < 600; i++)); do
  grep -q "kubelet-sim serving $NODES nodes" "$OUT/kubelet-sim.log" 2>/dev/null && break
  kill -0 "$SIM_PID" 2>/dev/null || die "kubelet-sim exited: $(tail -5 "$OUT/kubelet-sim.log")"
  sleep 0.5
done
"$KD_LOAD" "${CERT[@]}" create --apiserver "$KD_APISERVER_URL" --objects "$OUT/objects.json" --concurrency 32 >&2
"$KD_LOAD" targets --objects "$OUT/objects.json" >"$OUT/targets.json"
read -r EXPECT_NODES EXPECT_PODS < <(python3 -c '
import json, sys
t = json.load(open(sys.argv[1])); print(t["nodes"], t["pods"])' "$OUT/targets.json")

# Ticks are counted from the server's own "scrape cycle done" debug line (one per tick), not by
# polling /metrics: each poll is a TLS handshake plus a self-metrics encoding (~3M Ir at 100
# nodes) that would be counted as the cycle's work (it was ~10% of it).
LOG_FILTER="info,kubedojo_data_api::scrape::scraper=debug,hyper=warn,rustls=warn,h2=warn,tower=warn,kube=info"
ticks() { grep -c "scrape cycle done" "$OUT/server-$n.log" || true; }


n=0
for bin in "${BINS[@]}"; do
  n=$((n + 1))
  PORT=$(_kd_free_port)
  URL=https://127.0.0.1:$PORT
  mkdir -p "$OUT/certs-$n"
  NO_COLOR=1 KUBEDOJO_LOG=$LOG_FILTER "$bin" --secure-port="$PORT" --bind-address=127.0.0.1 \
    --kubeconfig="$ADMIN_KC" --authentication-kubeconfig="$ADMIN_KC" --authorization-kubeconfig="$ADMIN_KC" \
    --kubelet-certificate-authority="$OUT/sim-ca.crt" --kubelet-use-node-status-port \
    --kubelet-preferred-address-types=InternalIP --metric-resolution="$RESOLUTION" \
    --kubelet-request-timeout="$((RES_S / 2))s" --v=1 --cert-dir="$OUT/certs-$n" "${EXTRA[@]}" \
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
