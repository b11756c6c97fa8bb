#!/usr/bin/env bash
# Scale harness (issue #7): kubedojo-data-api vs metrics-server on the same simulated fleet,
# the same kube-apiserver and the same load, in the same run.
#
# Usage:
#   bench/scale/run.sh [--nodes 100] [--pods 30] [--containers 2] [--resolution 10s]
#                      [--idle-cycles 3] [--load-seconds 20] [--hpa-rate 20]
#                      [--top-pods-rate 0.5] [--top-nodes-rate 1] [--rounds 2]
#                      [--out DIR] [--check] [--keep]
#
# What it does:
#   1. starts etcd + kube-apiserver (tests/e2e/cluster.sh up) and kubelet-sim with N nodes ×
#      M pods × K containers on loopback (127.3.0.0/16, port 10250; one address per node), no
#      idle containers (metrics-server drops pods with a container at 0 CPU: both then serve
#      every pod);
#   2. registers kubelet-sim's Namespaces, Nodes and Pods (made Running through /status) with
#      `kd-load create`, so both servers discover nodes and pods the same way (watches);
#   3. per round, runs our server then metrics-server (round 2: the other order), each with the
#      same drop-in flags (--kubeconfig/--authentication-kubeconfig/--authorization-kubeconfig
#      = the admin kubeconfig, --kubelet-certificate-authority = kubelet-sim's CA,
#      --kubelet-use-node-status-port, --kubelet-preferred-address-types=InternalIP,
#      --metric-resolution), and for each:
#        - waits until it serves all N nodes and N×M pods;
#        - idle window: IDLE_CYCLES scrape cycles without API load → CPU seconds per cycle
#          (utime+stime of /proc/PID/stat over the window ÷ ticks counted by
#          metrics_server_manager_tick_duration_seconds_count), mean tick duration
#          (_sum/_count over the window), steady RSS (median VmRSS sampled every 0.5 s);
#        - load window: `kd-load run` (open loop, fixed rates, admin client certificate straight
#          to the server's HTTPS port): HPA lists, full pod lists, node lists → p50/p99/max,
#          errors; CPU seconds per second under load;
#        - peak RSS (VmHWM) at the end;
#   4. writes OUT/results.json (raw) and OUT/results.md (table with ratios ours/metrics-server,
#      medians over rounds), plus the physical limits (kubelet payload bytes per cycle and a
#      plain byte scan's rate over them; largest response and its write time to a socket).
#
#   --check: exit non-zero unless ours/metrics-server < 1 for peak memory, steady memory and CPU
#   per cycle, and we had zero errors; prints `N passed, M failed` last (the CI hook).
#
# Environment: KD_BIN, KD_LOAD (binaries; default target/release, built if missing),
# METRICS_SERVER_BIN (default `tests/e2e/tools.sh path metrics-server`).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
E2E=$ROOT/tests/e2e

NODES=100 PODS=30 CONTAINERS=2 RESOLUTION=10s IDLE_CYCLES=3 LOAD_SECONDS=20
HPA_RATE=20 TOP_PODS_RATE=0.5 TOP_NODES_RATE=1 ROUNDS=2 OUT= CHECK=false KEEP=false
SIM_FIRST=127.3.0.1
while (($#)); do
  case "$1" in
    --nodes) NODES=$2; shift ;;
    --pods) PODS=$2; shift ;;
    --containers) CONTAINERS=$2; shift ;;
    --resolution) RESOLUTION=$2; shift ;;
    --idle-cycles) IDLE_CYCLES=$2; shift ;;
    --load-seconds) LOAD_SECONDS=$2; shift ;;
    --hpa-rate) HPA_RATE=$2; shift ;;
    --top-pods-rate) TOP_PODS_RATE=$2; shift ;;
    --top-nodes-rate) TOP_NODES_RATE=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --out) OUT=$2; shift ;;
    --check) CHECK=true ;;
    --keep) KEEP=true ;;
    -h | --help) sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
RES_S=${RESOLUTION%s}
OUT=${OUT:-$ROOT/target/scale/${NODES}x${PODS}-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log() { printf '[scale %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ -z ${KD_BIN:-} || -z ${KD_LOAD:-} ]]; then
  log "building release binaries (kubedojo-data-api, kd-load)"
  (cd "$ROOT" && cargo build --release --locked --bin kubedojo-data-api --bin kd-load >&2)
fi
KD_BIN=${KD_BIN:-$ROOT/target/release/kubedojo-data-api}
KD_LOAD=${KD_LOAD:-$ROOT/target/release/kd-load}
METRICS_SERVER_BIN=${METRICS_SERVER_BIN:-$("$E2E/tools.sh" path metrics-server | tail -n1)}
[[ -x $METRICS_SERVER_BIN ]] || die "no metrics-server binary ($METRICS_SERVER_BIN)"

# shellcheck source=tests/e2e/cluster.sh
source "$E2E/cluster.sh"
CL=$OUT/cluster
SIM_PID= SERVER_PID= SAMPLER_PID=
cleanup() {
  local rc=$?
  [[ -n $SAMPLER_PID ]] && kill "$SAMPLER_PID" 2>/dev/null || true
  [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null || true
  if [[ $KEEP == false ]]; then
    [[ -n $SIM_PID ]] && kill "$SIM_PID" 2>/dev/null || true
    kd_cluster_down "$CL" >/dev/null 2>&1 || true
  else
    log "kept: cluster in $CL, kubelet-sim pid $SIM_PID"
  fi
  exit $rc
}
trap cleanup EXIT

T0=$SECONDS
log "control plane in $CL"
kd_cluster_up "$CL" >&2
# shellcheck disable=SC1091
source "$CL/cluster.env"
ADMIN_KC=$CL/admin.kubeconfig
CERT=(--cert "$CL/pki/admin.crt" --key "$CL/pki/admin.key")

log "kubelet-sim: $NODES nodes × $PODS pods × $CONTAINERS containers from $SIM_FIRST:10250"
"$KD_BIN" kubelet-sim --nodes "$NODES" --pods-per-node "$PODS" --containers-per-pod "$CONTAINERS" \
  --first-address "$SIM_FIRST" --port 10250 --idle-percent 0 --objects-out "$OUT/objects.json" --ca-out "$OUT/sim-ca.crt" \
  </dev/null >"$OUT/kubelet-sim.log" 2>&1 &
SIM_PID=$!
for ((i = 0; i < 600; i++)); do
  grep -q "kubelet-sim serving $NODES nodes" "$OUT/kubelet-sim.log" 2>/dev/null && break
  kill -0 "$SIM_PID" 2>/dev/null || die "kubelet-sim exited: $(tail -5 "$OUT/kubelet-sim.log")"
  sleep 0.5
done
grep -q "kubelet-sim serving $NODES nodes" "$OUT/kubelet-sim.log" || die "kubelet-sim not ready"

log "registering objects in kube-apiserver"
"$KD_LOAD" "${CERT[@]}" create --apiserver "$KD_APISERVER_URL" --objects "$OUT/objects.json" --concurrency 32 >&2

# Physical limits: one cycle of kubelet payloads (fetched once, concurrently) and a byte scan.
python3 - "$OUT/objects.json" >"$OUT/node-addrs.txt" <<'EOF'
import json, sys
for o in json.load(open(sys.argv[1]))["items"]:
    if o["kind"] == "Node":
        ip = [a["address"] for a in o["status"]["addresses"] if a["type"] == "InternalIP"][0]
        print(ip, o["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"])
EOF
"$KD_LOAD" payload --addrs "$OUT/node-addrs.txt" --ca "$OUT/sim-ca.crt" >"$OUT/payload.json" || log "payload measurement failed"

SERVER_PORT=$(_kd_free_port)
URL=https://127.0.0.1:$SERVER_PORT
COMMON=(
  --secure-port="$SERVER_PORT" --bind-address=127.0.0.1
  --kubeconfig="$ADMIN_KC" --authentication-kubeconfig="$ADMIN_KC" --authorization-kubeconfig="$ADMIN_KC"
  --kubelet-certificate-authority="$OUT/sim-ca.crt" --kubelet-use-node-status-port
  --kubelet-preferred-address-types=InternalIP --metric-resolution="$RESOLUTION"
  --kubelet-request-timeout="$((RES_S / 2))s"
)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
# tick_stats: "<count> <sum>" of metrics_server_manager_tick_duration_seconds
tick_stats() {
  curl -sk --max-time 10 "${CERT[@]}" "$URL/metrics" | awk '
    /^metrics_server_manager_tick_duration_seconds_count/ {c=$2}
    /^metrics_server_manager_tick_duration_seconds_sum/ {s=$2}
    END {print (c==""?0:c), (s==""?0:s)}'
}

# measure NAME ROUND: one server's full measurement, writes $OUT/NAME-rROUND.json
measure() {
  local name=$1 round=$2 tag=$1-r$2 certdir=$OUT/certs-$1-r$2
  mkdir -p "$certdir"
  log "[$tag] starting"
  local t_start=$SECONDS
  if [[ $name == ours ]]; then
    NO_COLOR=1 "$KD_BIN" "${COMMON[@]}" --cert-dir="$certdir" </dev/null >"$OUT/$tag.log" 2>&1 &
  else
    "$METRICS_SERVER_BIN" "${COMMON[@]}" --cert-dir="$certdir" --v=1 </dev/null >"$OUT/$tag.log" 2>&1 &
  fi
  SERVER_PID=$!
  "$KD_LOAD" "${CERT[@]}" wait --url "$URL" --nodes "$NODES" --pods $((NODES * PODS)) --timeout 300 \
    --pid "$SERVER_PID" >"$OUT/$tag.wait.log" 2>&1 ||
    die "[$tag] never served the whole fleet: $(tail -3 "$OUT/$tag.wait.log") (log: $OUT/$tag.log)"
  local ready_s=$((SECONDS - t_start))
  # RSS sampler (kB), every 0.5 s, until killed.
  (while kill -0 "$SERVER_PID" 2>/dev/null; do
    echo "$(date +%s.%N) $(status_kb "$SERVER_PID" VmRSS)"
    sleep 0.5
  done) >"$OUT/$tag.rss" &
  SAMPLER_PID=$!
  # Idle window: whole cycles only (start right after a tick).
  local c0 s0 c1 s1 cpu0 cpu1
  read -r c0 s0 < <(tick_stats)
  local t_wait=$((SECONDS + RES_S * 2 + 10))
  while :; do
    read -r c1 s1 < <(tick_stats)
    [[ ${c1%.*} -gt ${c0%.*} || $SECONDS -gt $t_wait ]] && break
    sleep 0.2
  done
  read -r c0 s0 < <(tick_stats)
  cpu0=$(cpu_ticks "$SERVER_PID")
  local idle_start=$(date +%s.%N)
  sleep "$(python3 -c "print($IDLE_CYCLES * $RES_S - 0.5)")"
  t_wait=$((SECONDS + RES_S + 10))
  while :; do
    read -r c1 s1 < <(tick_stats)
    (( ${c1%.*} - ${c0%.*} >= IDLE_CYCLES || SECONDS > t_wait )) && break
    sleep 0.2
  done
  cpu1=$(cpu_ticks "$SERVER_PID")
  local idle_end=$(date +%s.%N)
  # Load window.
  local lc0 lc1
  lc0=$(cpu_ticks "$SERVER_PID")
  local load_start=$(date +%s.%N)
  "$KD_LOAD" "${CERT[@]}" run --url "$URL" --duration "$LOAD_SECONDS" --hpa-rate "$HPA_RATE" \
    --top-pods-rate "$TOP_PODS_RATE" --top-nodes-rate "$TOP_NODES_RATE" >"$OUT/$tag.load.json"
  local load_end=$(date +%s.%N)
  lc1=$(cpu_ticks "$SERVER_PID")
  local hwm
  hwm=$(status_kb "$SERVER_PID" VmHWM)
  kill "$SAMPLER_PID" 2>/dev/null || true
  wait "$SAMPLER_PID" 2>/dev/null || true
  SAMPLER_PID=
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
  python3 - "$OUT" "$tag" "$name" "$round" "$ready_s" "$c0" "$s0" "$c1" "$s1" "$cpu0" "$cpu1" \
    "$idle_start" "$idle_end" "$lc0" "$lc1" "$load_start" "$load_end" "$hwm" "$(getconf CLK_TCK)" <<'EOF'
import json, statistics, sys
(out, tag, name, rnd, ready_s, c0, s0, c1, s1, cpu0, cpu1, i0, i1, lc0, lc1, l0, l1, hwm,
 hz) = sys.argv[1:]
hz = float(hz)
cycles = float(c1) - float(c0)
rss = []
for line in open(f"{out}/{tag}.rss"):
    p = line.split()
    if len(p) == 2:
        rss.append((float(p[0]), int(p[1])))
idle = [kb for t, kb in rss if float(i0) <= t <= float(i1)] or [kb for _, kb in rss]
load = json.load(open(f"{out}/{tag}.load.json"))
res = {
    "server": name, "round": int(rnd), "ready_seconds": int(ready_s),
    "idle_cycles": cycles,
    "cpu_seconds_per_cycle": (float(cpu1) - float(cpu0)) / hz / cycles if cycles else None,
    "tick_seconds_mean": (float(s1) - float(s0)) / cycles if cycles else None,
    "rss_steady_mib": statistics.median(idle) / 1024,
    "rss_peak_mib": int(hwm) / 1024,
    "load_cpu_cores": (float(lc1) - float(lc0)) / hz / (float(l1) - float(l0)),
    "load": load,
}
json.dump(res, open(f"{out}/{tag}.json", "w"), indent=1)
print(json.dumps({k: v for k, v in res.items() if k != "load"}))
EOF
}

for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2 == 1)); then order=(ours metrics-server); else order=(metrics-server ours); fi
  for s in "${order[@]}"; do measure "$s" "$r" >&2; done
done

log "report"
set +e
python3 "$ROOT/bench/scale/report.py" "$OUT" --nodes "$NODES" --pods "$PODS" --containers "$CONTAINERS" \
  --resolution "$RESOLUTION" --hpa-rate "$HPA_RATE" --top-pods-rate "$TOP_PODS_RATE" \
  --top-nodes-rate "$TOP_NODES_RATE" --load-seconds "$LOAD_SECONDS" --rounds "$ROUNDS" \
  --wall "$((SECONDS - T0))" --kd-load "$KD_LOAD" $([[ $CHECK == true ]] && echo --check)
rc=$?
log "results: $OUT/results.md, $OUT/results.json (wall $((SECONDS - T0))s)"
exit $rc
