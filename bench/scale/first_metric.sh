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
# Environment: KD_BIN, KD_LOAD, METRICS_SERVER_BIN (default: built/cached).
# Hold the shared cluster lock: flock /tmp/kubedojo-cluster.lock bash bench/scale/first_metric.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
E2E=$ROOT/tests/e2e
NODES=50 PODS=30 CONTAINERS=2 RESOLUTION=15s NEW_PODS=1200 RATE=20 OUT= KEEP=false
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
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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

if [[ -z ${KD_BIN:-} || -z ${KD_LOAD:-} ]]; then
  (cd "$ROOT" && cargo build --release --locked --bin kubedojo-data-api --bin kd-load >&2)
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
KD_BIN=${KD_BIN:-$TARGET_DIR/release/kubedojo-data-api}
KD_LOAD=${KD_LOAD:-$TARGET_DIR/release/kd-load}
MS_BIN=${METRICS_SERVER_BIN:-$("$E2E/tools.sh" path metrics-server | tail -n1)}
for b in "$KD_BIN" "$KD_LOAD" "$MS_BIN"; do [[ -x $b ]] || die "not an executable: $b"; done

# shellcheck source=tests/e2e/cluster.sh
source "$E2E/cluster.sh"
CL=$OUT/cluster
PIDS=()
cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  kd_cluster_down "$CL" >/dev/null 2>&1 || true
  [[ $KEEP == true ]] || rm -rf "$CL" "$OUT"/certs-*
  exit $rc
}
trap cleanup EXIT
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

KUBEDOJO_AGGREGATOR_ROUTING=false kd_cluster_up "$CL" >"$OUT/cluster-up.log" 2>&1 ||
  die "control plane: $(tail -5 "$OUT/cluster-up.log")"
# shellcheck disable=SC1091
source "$CL/cluster.env"
ADMIN_KC=$CL/admin.kubeconfig
CERT=(--cert "$CL/pki/admin.crt" --key "$CL/pki/admin.key")

CONTROL_PORT=$(_kd_free_port)
"$KD_BIN" kubelet-sim --nodes "$NODES" --pods-per-node "$PODS" --containers-per-pod "$CONTAINERS" \
  --namespaces 3 --first-address 127.8.0.1 --port 10250 --idle-percent 0 --deployment-pods 3-8 \
  --control-address "127.0.0.1:$CONTROL_PORT" \
  --objects-out "$OUT/objects.json" --ca-out "$OUT/sim-ca.crt" \
  </dev/null >"$OUT/kubelet-sim.log" 2>&1 &
PIDS+=($!)
for ((i = 0; i < 120; i++)); do
  grep -q "kubelet-sim control on" "$OUT/kubelet-sim.log" 2>/dev/null && break
  kill -0 "${PIDS[0]}" 2>/dev/null || die "kubelet-sim exited: $(tail -5 "$OUT/kubelet-sim.log")"
  sleep 0.5
done
"$KD_LOAD" "${CERT[@]}" create --apiserver "$KD_APISERVER_URL" --objects "$OUT/objects.json" \
  --concurrency 16 >"$OUT/create.log" 2>&1 || die "creating objects: $(tail -3 "$OUT/create.log")"
"$KD_LOAD" targets --objects "$OUT/objects.json" >"$OUT/targets.json"
read -r EXPECT_NODES EXPECT_PODS < <(python3 -c '
import json, sys
t = json.load(open(sys.argv[1]))
print(t["nodes"], t["pods"])' "$OUT/targets.json")

declare -A PORT
PORT[ours]=$(_kd_free_port "$CONTROL_PORT")
PORT[ms]=$(_kd_free_port "${PORT[ours]}")
for s in ours ms; do
  mkdir -p "$OUT/certs-$s"
  args=(--secure-port="${PORT[$s]}" --bind-address=127.0.0.1 --cert-dir="$OUT/certs-$s"
    --kubeconfig="$ADMIN_KC" --authentication-kubeconfig="$ADMIN_KC" --authorization-kubeconfig="$ADMIN_KC"
    --kubelet-certificate-authority="$OUT/sim-ca.crt" --kubelet-use-node-status-port
    --kubelet-preferred-address-types=InternalIP --metric-resolution="$RESOLUTION"
    --kubelet-request-timeout="$((RES_S / 2))s" --v=1)
  if [[ $s == ours ]]; then
    NO_COLOR=1 "$KD_BIN" "${args[@]}" </dev/null >"$OUT/$s.log" 2>&1 &
  else
    "$MS_BIN" "${args[@]}" </dev/null >"$OUT/$s.log" 2>&1 &
  fi
  PIDS+=($!)
done
for s in ours ms; do
  "$KD_LOAD" "${CERT[@]}" wait --url "https://127.0.0.1:${PORT[$s]}" --nodes "$EXPECT_NODES" \
    --pods "$EXPECT_PODS" --timeout 120 >"$OUT/$s.wait.log" 2>&1 ||
    die "$s never served the whole fleet: $(tail -3 "$OUT/$s.wait.log") (log: $OUT/$s.log)"
done
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
