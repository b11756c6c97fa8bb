# Shared set-up of bench/scale/rss.sh and bench/scale/callgrind.sh (sourced, not run): parses
# their common options into NODES PODS CYCLES RESOLUTION OUT SIM_FIRST EXTRA and BINS, starts a
# control plane, kubelet-sim and the fleet's objects (as run.sh does), and defines
#   SERVER_ARGS(n, port)  run.sh's server flags for binary number n, in the array SERVER_FLAGS
#   ticks                 scrape ticks the current server logged (server-$n.log)
# The caller sets FLEET_TOOL (its name, for logs and OUT), NODES and RESOLUTION defaults and
# FLEET_HELP_LINES (the line range of its own usage comment), then `source fleet.sh "$@"`.
# Stopping the server (SERVER_PID), the simulator and the control plane is trapped on EXIT.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
E2E=$ROOT/tests/e2e
PODS=30 CONTAINERS=2 CYCLES=3 OUT= EXTRA=() SIM_FIRST=127.6.0.1
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
    -h | --help) sed -n "$FLEET_HELP_LINES" "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) BINS+=("$1") ;;
  esac
  shift
done
((${#BINS[@]})) || { echo "usage: $0 [options] BIN..." >&2; exit 2; }
RES_S=${RESOLUTION%s}
NAMESPACES=$((NODES / 20 > 3 ? NODES / 20 : 3))
OUT=${OUT:-$ROOT/target/scale/$FLEET_TOOL-${NODES}x${PODS}-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log() { printf '[%s %s] %s\n' "$FLEET_TOOL" "$(date -u +%H:%M:%S)" "$*" >&2; }
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

# run.sh's server flags for binary number $1 on port $2 (its cert dir is OUT/certs-$1).
SERVER_ARGS() {
  mkdir -p "$OUT/certs-$1"
  SERVER_FLAGS=(--secure-port="$2" --bind-address=127.0.0.1
    --kubeconfig="$ADMIN_KC" --authentication-kubeconfig="$ADMIN_KC" --authorization-kubeconfig="$ADMIN_KC"
    --kubelet-certificate-authority="$OUT/sim-ca.crt" --kubelet-use-node-status-port
    --kubelet-preferred-address-types=InternalIP --metric-resolution="$RESOLUTION"
    --kubelet-request-timeout="$((RES_S / 2))s" --v=1 --cert-dir="$OUT/certs-$1" "${EXTRA[@]}")
}
