#!/usr/bin/env bash
# Scale harness (issues #7, #15): kubedojo-data-api vs metrics-server on the same simulated
# fleet, the same kube-apiserver and the same load, in the same run, rounds alternating order.
#
# Usage:
#   bench/scale/run.sh [--scenario NAME] [options]
#
# Scenarios (presets; options after them override them):
#   1000x30    1,000 nodes × 30 pods, 5 rounds, 120 s of recorded load per server and round
#   5000x30    5,000 nodes × 30 pods, 5 rounds, 60 s of load, 0.1 full pod lists/s
#   2000x110   2,000 nodes × 110 pods (the kubelet's default pod limit), 5 rounds, 60 s
#   faulty     1,000 × 30 with one slow kubelet (node 0, answers after --slow-delay, 2 s) and
#              one failing kubelet (node 1, answers 500): neither it nor its pods are expected
#   burst      1,000 × 30 with HPA queries in bursts (every deployment at once every 15 s,
#              drained by 5 workers, as kube-controller-manager's HPA controller does)
#   churn      1,000 × 30, 120 s of load, with pod churn at 5 pods/s: during each server's
#              load window 5 pods/s are created and 5 deleted (kube-apiserver and kubelet-sim),
#              so the fleet keeps its size (30,000 + a pool of 300 churned pods) while its
#              membership changes; full pod lists are checked with the churn tolerance
#   ci         100 × 30, 10 s resolution, 2 rounds (one per order), 20 s of load (ci.sh)
#
# Options:
#   --nodes N --pods M --containers K     fleet (default 100 × 30 × 2)
#   --namespaces N                        namespaces (default max(3, nodes / 20))
#   --deployment-pods MIN-MAX             deployment sizes (default 5-50: hundreds of
#                                         Deployments, the HPA's targets)
#   --resolution 15s --idle-cycles 3      scrape period; whole cycles in the idle window
#   --load-seconds S --warmup S           recorded load per server and round (default 120);
#                                         load before it, sent but not recorded (default 10)
#   --rounds R                            default 5; odd rounds ours first, even rounds the
#                                         baselines first
#   --hpa-period S --hpa-mode spread|burst --hpa-via direct|aggregator|both
#                                         every deployment once per S s (default 15), spread
#                                         open loop or in bursts; straight to the server,
#                                         through kube-apiserver's aggregator, or alternating
#                                         deployments between the two (default both)
#   --hpa-accept A --top-accept A         Accept headers (default application/json)
#   --top-pods-rate R --top-nodes-rate R  kubectl-top-style full pod / node lists per second
#   --kubelet-gzip true|false              whether our server asks kubelets for gzip (default
#                                         false, its default; metrics-server's Go client
#                                         always asks, and kubelet-sim compresses for it)
#   --slow-nodes I,J --slow-delay D --failing-nodes I,J
#                                         kubelet faults (node indices from 0)
#   --churn-rate N --churn-lifetime S     pod churn (issue #15 §3, default 0: none): N pods
#                                         created and N deleted per second during each
#                                         server's load window (warm-up included), identical
#                                         for every server. The churned pods (namespace
#                                         kd-churn, app=kd-churn, no deployment: HPA answers
#                                         stay exact) are a pool of ceil(N × S) pods made
#                                         before the servers start (S default 4 resolutions),
#                                         so each lives about S seconds; every step creates
#                                         one (Pod in kube-apiserver, container in the
#                                         simulator, Running) and deletes the oldest (both).
#                                         Full pod lists may be short by ceil(N × 3 × res) or
#                                         long by ceil(N × res) + 1 (src/bin/kd-load/churn.rs);
#                                         an empty list is always an error. Reported: pods
#                                         created/deleted, new pods served and how fast, pods
#                                         never served, RSS and CPU under load with churn.
#   --baselines "metrics-server metrics-server-legacy"
#                                         servers compared with ours (default metrics-server,
#                                         i.e. v0.9.0; metrics-server-legacy is v0.8.0;
#                                         ours-before is our server built from an earlier
#                                         commit, KD_BEFORE_BIN, run with our flags: a before
#                                         and after of a change measured in the same run)
#   --out DIR --check --keep
#
# The churn scenario in full (5 rounds × 2 servers × ~4 min, plus set-up):
#   nice -n 19 bench/scale/run.sh --scenario churn --out bench/results/churn-1000x30
#
# Per server and round: start it (same flags, both --v=1), wait until it lists every expected
# node and pod (the time is reported), an idle window of whole scrape cycles (CPU seconds per
# cycle = Δ(utime+stime) of /proc/PID/stat ÷ Δ metrics_server_manager_tick_duration_seconds_count;
# steady RSS = median VmRSS sampled every 0.5 s), then `kd-load run` (each kind of request on
# its own connections, every response checked against the fleet: src/bin/kd-load/load.rs), and
# peak RSS (VmHWM) at the end. The machine (CPU, kernel, Go and Rust versions, load average)
# goes into machine.json and each run's JSON. OUT/results.md and OUT/results.json: the median
# across rounds with min–max (report.py).
#
#   --check: exit non-zero unless report.py's CI gates hold (ratios with a noise margin,
#   correct answers, a baseline that served the whole fleet, zero errors); prints
#   `N passed, M failed` last.
#
# Environment: KD_BIN, KD_LOAD (binaries; default target/release, built if missing), KD_SIM_FIRST
# (first kubelet address, default 127.3.0.1),
# METRICS_SERVER_BIN, METRICS_SERVER_LEGACY_BIN (default `tests/e2e/tools.sh path ...`),
# KD_BEFORE_BIN (the ours-before baseline).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
E2E=$ROOT/tests/e2e

NODES=100 PODS=30 CONTAINERS=2 RESOLUTION=15s IDLE_CYCLES=3 LOAD_SECONDS=120 WARMUP=10
NAMESPACES= DEPLOYMENT_PODS=5-50 HPA_PERIOD=15 HPA_MODE=spread HPA_VIA=both
HPA_ACCEPT=application/json TOP_ACCEPT=application/json
TOP_PODS_RATE=0.5 TOP_NODES_RATE=1 ROUNDS=5 OUT= CHECK=false KEEP=false
SLOW_NODES= SLOW_DELAY=2s FAILING_NODES= BASELINES=metrics-server SCENARIO=custom KUBELET_GZIP=false
CHURN_RATE=0 CHURN_LIFETIME=
SIM_FIRST=${KD_SIM_FIRST:-127.3.0.1}  # first kubelet address (override: another fleet runs)
scenario() {
  SCENARIO=$1
  case "$1" in
    1000x30) NODES=1000 PODS=30 LOAD_SECONDS=120 ;;
    5000x30) NODES=5000 PODS=30 LOAD_SECONDS=60 TOP_PODS_RATE=0.1 ;;
    2000x110) NODES=2000 PODS=110 LOAD_SECONDS=60 TOP_PODS_RATE=0.1 ;;
    faulty) NODES=1000 PODS=30 LOAD_SECONDS=120 SLOW_NODES=0 FAILING_NODES=1 ;;
    burst) NODES=1000 PODS=30 LOAD_SECONDS=120 HPA_MODE=burst ;;
    churn) NODES=1000 PODS=30 LOAD_SECONDS=120 CHURN_RATE=5 ;;
    ci) NODES=100 PODS=30 RESOLUTION=10s IDLE_CYCLES=2 LOAD_SECONDS=20 WARMUP=5 ROUNDS=2 TOP_PODS_RATE=1 ;;
    *) echo "unknown scenario $1 (1000x30 5000x30 2000x110 faulty burst churn ci)" >&2; exit 2 ;;
  esac
}
while (($#)); do
  case "$1" in
    --scenario) scenario "$2"; shift ;;
    --nodes) NODES=$2; shift ;;
    --pods) PODS=$2; shift ;;
    --containers) CONTAINERS=$2; shift ;;
    --namespaces) NAMESPACES=$2; shift ;;
    --deployment-pods) DEPLOYMENT_PODS=$2; shift ;;
    --resolution) RESOLUTION=$2; shift ;;
    --idle-cycles) IDLE_CYCLES=$2; shift ;;
    --load-seconds) LOAD_SECONDS=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --hpa-period) HPA_PERIOD=$2; shift ;;
    --hpa-mode) HPA_MODE=$2; shift ;;
    --hpa-via) HPA_VIA=$2; shift ;;
    --hpa-accept) HPA_ACCEPT=$2; shift ;;
    --top-accept) TOP_ACCEPT=$2; shift ;;
    --top-pods-rate) TOP_PODS_RATE=$2; shift ;;
    --top-nodes-rate) TOP_NODES_RATE=$2; shift ;;
    --kubelet-gzip) KUBELET_GZIP=$2; shift ;;
    --slow-nodes) SLOW_NODES=$2; shift ;;
    --slow-delay) SLOW_DELAY=$2; shift ;;
    --failing-nodes) FAILING_NODES=$2; shift ;;
    --churn-rate) CHURN_RATE=$2; shift ;;
    --churn-lifetime) CHURN_LIFETIME=$2; shift ;;
    --baselines) BASELINES=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --out) OUT=$2; shift ;;
    --check) CHECK=true ;;
    --keep) KEEP=true ;;
    -h | --help) sed -n '2,82p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
NAMESPACES=${NAMESPACES:-$((NODES / 20 > 3 ? NODES / 20 : 3))}
read -r -a BASELINE_LIST <<<"$BASELINES"
RES_S=${RESOLUTION%s}
# Churn: the pool of churned pods (ceil(rate × lifetime)), 0 without churn.
read -r CHURN_ON CHURN_LIFETIME CHURN_POOL < <(python3 -c '
import math, sys
rate, life, res = sys.argv[1], sys.argv[2], float(sys.argv[3])
try:
    rate = float(rate); life = float(life) if life else 4 * res
except ValueError:
    sys.exit("--churn-rate and --churn-lifetime take numbers")
if rate < 0 or life <= 0 or not math.isfinite(rate * life):
    sys.exit("--churn-rate must be >= 0 and --churn-lifetime > 0")
pool = math.ceil(rate * life) if rate > 0 else 0
if rate > 0 and pool < 1:
    sys.exit("--churn-rate x --churn-lifetime must make a pool of at least one pod")
print("true" if rate > 0 else "false", f"{life:g}", pool)' "$CHURN_RATE" "$CHURN_LIFETIME" "$RES_S") ||
  { echo "bad churn options" >&2; exit 2; }
if [[ $CHURN_ON == true && -n $FAILING_NODES ]]; then
  echo "--churn-rate with --failing-nodes is not supported (churned pods would land on failing nodes)" >&2
  exit 2
fi
OUT=${OUT:-$ROOT/target/scale/${SCENARIO}-${NODES}x${PODS}-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log() { printf '[scale %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ -z ${KD_BIN:-} || -z ${KD_LOAD:-} ]]; then
  log "building release binaries (kubedojo-data-api, kd-load)"
  (cd "$ROOT" && cargo build --release --locked --bin kubedojo-data-api --bin kd-load >&2)
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
KD_BIN=${KD_BIN:-$TARGET_DIR/release/kubedojo-data-api}
KD_LOAD=${KD_LOAD:-$TARGET_DIR/release/kd-load}
declare -A SERVER_BIN
for b in "${BASELINE_LIST[@]}"; do
  case "$b" in
    metrics-server) SERVER_BIN[$b]=${METRICS_SERVER_BIN:-$("$E2E/tools.sh" path metrics-server | tail -n1)} ;;
    metrics-server-legacy) SERVER_BIN[$b]=${METRICS_SERVER_LEGACY_BIN:-$("$E2E/tools.sh" path metrics-server-legacy | tail -n1)} ;;
    ours-before) SERVER_BIN[$b]=${KD_BEFORE_BIN:-}
      [[ -n ${SERVER_BIN[$b]} ]] || die "ours-before needs KD_BEFORE_BIN (our binary built from an earlier commit)" ;;
    *) die "unknown baseline $b (metrics-server, metrics-server-legacy, ours-before)" ;;
  esac
  [[ -x ${SERVER_BIN[$b]} ]] || die "no $b binary (${SERVER_BIN[$b]})"
done
python3 "$ROOT/bench/scale/machine.py" "$OUT/machine.json" "$KD_BIN" "${SERVER_BIN[@]}"

# shellcheck source=tests/e2e/cluster.sh
source "$E2E/cluster.sh"
CL=$OUT/cluster
SIM_PID= SERVER_PID= SAMPLER_PID=
cleanup() {
  local rc=$?
  [[ -n $SAMPLER_PID ]] && kill "$SAMPLER_PID" 2>/dev/null || true
  if [[ -n $SERVER_PID ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ $KEEP == false ]]; then
    if [[ -n $SIM_PID ]]; then
      kill "$SIM_PID" 2>/dev/null || true
      wait "$SIM_PID" 2>/dev/null || true
    fi
    kd_cluster_down "$CL" >/dev/null 2>&1 || true
  else
    log "kept: cluster in $CL, kubelet-sim pid $SIM_PID"
  fi
  exit $rc
}
trap cleanup EXIT

T0=$SECONDS
log "control plane in $CL"
# Aggregator routing off: the APIService's ExternalName Service reaches the server under test
# at localhost:PORT without root (tests/e2e/cluster.sh).
KUBEDOJO_AGGREGATOR_ROUTING=false kd_cluster_up "$CL" >&2
# shellcheck disable=SC1091
source "$CL/cluster.env"
ADMIN_KC=$CL/admin.kubeconfig
CERT=(--cert "$CL/pki/admin.crt" --key "$CL/pki/admin.key")

log "kubelet-sim: $NODES nodes × $PODS pods × $CONTAINERS containers from $SIM_FIRST:10250, $NAMESPACES namespaces, deployments of ${DEPLOYMENT_PODS:-equal} pods"
SIM_ARGS=(--nodes "$NODES" --pods-per-node "$PODS" --containers-per-pod "$CONTAINERS"
  --namespaces "$NAMESPACES" --first-address "$SIM_FIRST" --port 10250 --idle-percent 0)
[[ -n $DEPLOYMENT_PODS ]] && SIM_ARGS+=(--deployment-pods "$DEPLOYMENT_PODS")
[[ -n $SLOW_NODES ]] && SIM_ARGS+=(--slow-nodes "$SLOW_NODES" --slow-delay "$SLOW_DELAY")
[[ -n $FAILING_NODES ]] && SIM_ARGS+=(--failing-nodes "$FAILING_NODES")
CONTROL_URL=
if [[ $CHURN_ON == true ]]; then
  CONTROL_PORT=$(_kd_free_port)
  CONTROL_URL=http://127.0.0.1:$CONTROL_PORT
  SIM_ARGS+=(--control-address "127.0.0.1:$CONTROL_PORT")
fi
"$KD_BIN" kubelet-sim "${SIM_ARGS[@]}" --objects-out "$OUT/objects.json" --ca-out "$OUT/sim-ca.crt" \
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
EXCLUDE=
for i in ${FAILING_NODES//,/ }; do EXCLUDE+=${EXCLUDE:+,}$(printf 'sim-node-%04d' $((i + 1))); done
"$KD_LOAD" targets --objects "$OUT/objects.json" ${EXCLUDE:+--exclude-nodes "$EXCLUDE"} >"$OUT/targets.json"
read -r EXPECT_NODES EXPECT_PODS DEPLOYMENTS < <(python3 -c '
import json, sys
t = json.load(open(sys.argv[1]))
print(t["nodes"], t["pods"], len(t["deployments"]))' "$OUT/targets.json")
if [[ $CHURN_ON == true ]]; then
  log "churn: a pool of $CHURN_POOL pods (${CHURN_RATE}/s × ${CHURN_LIFETIME} s) in namespace kd-churn"
  "$KD_LOAD" "${CERT[@]}" churn-pool --apiserver "$KD_APISERVER_URL" --control "$CONTROL_URL" \
    --objects "$OUT/objects.json" --pods "$CHURN_POOL" >"$OUT/churn-pool.json" ||
    die "creating the churn pool failed"
  EXPECT_PODS=$((EXPECT_PODS + CHURN_POOL))
fi
log "expected answers: $EXPECT_NODES nodes, $EXPECT_PODS pods, $DEPLOYMENTS deployments"

# Physical limits: one cycle of kubelet payloads (fetched once, concurrently) and a byte scan.
python3 - "$OUT/objects.json" >"$OUT/node-addrs.txt" <<'EOF'
import json, sys
for o in json.load(open(sys.argv[1]))["items"]:
    if o["kind"] == "Node":
        ip = [a["address"] for a in o["status"]["addresses"] if a["type"] == "InternalIP"][0]
        print(ip, o["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"])
EOF
if [[ -z $FAILING_NODES ]]; then
  "$KD_LOAD" payload --addrs "$OUT/node-addrs.txt" --ca "$OUT/sim-ca.crt" >"$OUT/payload.json" || log "payload measurement failed"
  # The floor (issue #15 §5): persistent TLS connections + values into a flat Vec, nothing else.
  "$KD_LOAD" floor --addrs "$OUT/node-addrs.txt" --ca "$OUT/sim-ca.crt" --cycles "$IDLE_CYCLES" >"$OUT/floor.json" ||
    log "floor measurement failed"
  # Experiment (issue #15 §4): the same with one lean hyper HTTP/1.1 connection per kubelet
  # and an 8 KiB read buffer, to size what small connection buffers would save.
  "$KD_LOAD" floor --addrs "$OUT/node-addrs.txt" --ca "$OUT/sim-ca.crt" --cycles "$IDLE_CYCLES" \
    --lean-max-buf 8192 >"$OUT/floor-lean.json" || log "lean floor measurement failed"
fi

# A fresh port per server start (set in measure): the machine is shared, so a port free when
# one round ended may be taken by another process by the next start ("Address already in use").
SERVER_PORT= URL=
COMMON=(
  --bind-address=127.0.0.1
  --kubeconfig="$ADMIN_KC" --authentication-kubeconfig="$ADMIN_KC" --authorization-kubeconfig="$ADMIN_KC"
  --kubelet-certificate-authority="$OUT/sim-ca.crt" --kubelet-use-node-status-port
  --kubelet-preferred-address-types=InternalIP --metric-resolution="$RESOLUTION"
  --kubelet-request-timeout="$((RES_S / 2))s" --v=1
)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# TCP payload bytes received on the process's open connections to kubelets (port 10250; TLS
# records, i.e. the bytes on the wire less TCP/IP headers), from `ss -tip` (tcp_info
# bytes_received). /proc/PID/io rchar would miss ours: Rust reads sockets with recv(2).
read_bytes() {
  ss -tinpH state established '( dport = :10250 )' 2>/dev/null | awk -v p="pid=$1," '
    index($0, p) {want = 1; next}
    want { if (match($0, /bytes_received:[0-9]+/)) s += substr($0, RSTART + 15, RLENGTH - 15); want = 0 }
    END {print s + 0}'
}
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
  log "[$tag] starting (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  local load0 t_ready0 ready_s
  load0=$(cut -d' ' -f1-3 /proc/loadavg)
  local attempt
  for attempt in 1 2 3; do
    SERVER_PORT=$(_kd_free_port "$SERVER_PORT")
    URL=https://127.0.0.1:$SERVER_PORT
    if [[ $HPA_VIA != direct ]]; then
      # The aggregator reaches the server at localhost:$SERVER_PORT (ExternalName Service).
      kd_register_apiservice "$CL" metrics.k8s.io v1beta1 "$SERVER_PORT" "" metrics-server kube-system >/dev/null
    fi
    t_ready0=$(date +%s.%N)
    if [[ $name == ours || $name == ours-before ]]; then
      local ours_extra=() ours_bin=$KD_BIN
      [[ $name == ours-before ]] && ours_bin=${SERVER_BIN[$name]}
      [[ $KUBELET_GZIP == true ]] && ours_extra+=(--kubelet-gzip=true)
      NO_COLOR=1 "$ours_bin" --secure-port="$SERVER_PORT" "${COMMON[@]}" "${ours_extra[@]}" --cert-dir="$certdir" \
        </dev/null >"$OUT/$tag.log" 2>&1 &
    else
      "${SERVER_BIN[$name]}" --secure-port="$SERVER_PORT" "${COMMON[@]}" --cert-dir="$certdir" </dev/null >"$OUT/$tag.log" 2>&1 &
    fi
    SERVER_PID=$!
    "$KD_LOAD" "${CERT[@]}" wait --url "$URL" --nodes "$EXPECT_NODES" --pods "$EXPECT_PODS" --timeout 600 \
      --pid "$SERVER_PID" >"$OUT/$tag.wait.log" 2>&1 && break
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
    # Lost the port between choosing and binding it: another free port (at most 3 attempts).
    if ((attempt < 3)) && grep -qi "address already in use" "$OUT/$tag.log"; then
      log "[$tag] port $SERVER_PORT taken before the server bound it; another port"
      continue
    fi
    die "[$tag] never served the whole fleet: $(tail -3 "$OUT/$tag.wait.log") (log: $OUT/$tag.log)"
  done
  ready_s=$(python3 -c "import time; print(round(time.time() - $t_ready0, 2))")
  if [[ $HPA_VIA != direct ]]; then
    kd_wait_apiservice "$CL" v1beta1.metrics.k8s.io 120 || die "[$tag] APIService not Available"
    # Available may be stale (the previous server's port): wait until the aggregator serves
    # this server's full fleet.
    "$KD_LOAD" "${CERT[@]}" wait --url "$KD_APISERVER_URL" --nodes "$EXPECT_NODES" --pods "$EXPECT_PODS" \
      --timeout 120 --pid "$SERVER_PID" >>"$OUT/$tag.wait.log" 2>&1 ||
      die "[$tag] the aggregator never served the whole fleet: $(tail -3 "$OUT/$tag.wait.log")"
  fi
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
  local rc0 rc1
  rc0=$(read_bytes "$SERVER_PID")
  local idle_start
  idle_start=$(date +%s.%N)
  sleep "$(python3 -c "print($IDLE_CYCLES * $RES_S - 0.5)")"
  t_wait=$((SECONDS + RES_S + 10))
  while :; do
    read -r c1 s1 < <(tick_stats)
    (( ${c1%.*} - ${c0%.*} >= IDLE_CYCLES || SECONDS > t_wait )) && break
    sleep 0.2
  done
  cpu1=$(cpu_ticks "$SERVER_PID")
  rc1=$(read_bytes "$SERVER_PID")
  local idle_end
  idle_end=$(date +%s.%N)
  # Load window.
  local lc0 lc1 load_start load_end
  lc0=$(cpu_ticks "$SERVER_PID")
  local churn_args=()
  [[ $CHURN_ON == true ]] && churn_args=(--churn-rate "$CHURN_RATE" --churn-pool "$CHURN_POOL"
    --churn-control "$CONTROL_URL" --churn-objects "$OUT/objects.json" --resolution "$RES_S")
  load_start=$(date +%s.%N)
  "$KD_LOAD" "${CERT[@]}" run --url "$URL" --aggregator-url "$KD_APISERVER_URL" \
    --targets "$OUT/targets.json" --duration "$LOAD_SECONDS" --warmup "$WARMUP" \
    --hpa-period "$HPA_PERIOD" --hpa-mode "$HPA_MODE" --hpa-via "$HPA_VIA" \
    --hpa-accept "$HPA_ACCEPT" --top-accept "$TOP_ACCEPT" \
    --top-pods-rate "$TOP_PODS_RATE" --top-nodes-rate "$TOP_NODES_RATE" "${churn_args[@]}" >"$OUT/$tag.load.json"
  load_end=$(date +%s.%N)
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
    "$idle_start" "$idle_end" "$lc0" "$lc1" "$load_start" "$load_end" "$hwm" "$(getconf CLK_TCK)" \
    "$load0" "$(cut -d' ' -f1-3 /proc/loadavg)" "$rc0" "$rc1" <<'EOF'
import json, statistics, sys
(out, tag, name, rnd, ready_s, c0, s0, c1, s1, cpu0, cpu1, i0, i1, lc0, lc1, l0, l1, hwm,
 hz, load0, load1, rc0, rc1) = sys.argv[1:]
hz = float(hz)
cycles = float(c1) - float(c0)
rss = []
for line in open(f"{out}/{tag}.rss"):
    p = line.split()
    if len(p) == 2:
        rss.append((float(p[0]), int(p[1])))
idle = [kb for t, kb in rss if float(i0) <= t <= float(i1)] or [kb for _, kb in rss]
under_load = [kb for t, kb in rss if float(l0) <= t <= float(l1)]
load = json.load(open(f"{out}/{tag}.load.json"))
res = {
    "server": name, "round": int(rnd), "ready_seconds": float(ready_s),
    "loadavg_before": load0.split(), "loadavg_after": load1.split(),
    "idle_cycles": cycles,
    "cpu_seconds_per_cycle": (float(cpu1) - float(cpu0)) / hz / cycles if cycles else None,
    "tick_seconds_mean": (float(s1) - float(s0)) / cycles if cycles else None,
    "read_bytes_per_cycle": (int(rc1) - int(rc0)) / cycles if cycles else None,
    "rss_steady_mib": statistics.median(idle) / 1024,
    "rss_peak_mib": int(hwm) / 1024,
    "rss_load_mib": statistics.median(under_load) / 1024 if under_load else None,
    "load_cpu_cores": (float(lc1) - float(lc0)) / hz / (float(l1) - float(l0)),
    "load_cpu_seconds": (float(lc1) - float(lc0)) / hz,
    "load": load,
}
json.dump(res, open(f"{out}/{tag}.json", "w"), indent=1)
print(json.dumps({k: v for k, v in res.items() if k != "load"}))
EOF
}

for ((r = 1; r <= ROUNDS; r++)); do
  order=(ours "${BASELINE_LIST[@]}")
  ((r % 2 == 0)) && order=("${BASELINE_LIST[@]}" ours)
  for s in "${order[@]}"; do measure "$s" "$r" >&2; done
done

log "report"
set +e
python3 "$ROOT/bench/scale/report.py" "$OUT" --scenario "$SCENARIO" --nodes "$NODES" --pods "$PODS" \
  --containers "$CONTAINERS" --namespaces "$NAMESPACES" --deployments "$DEPLOYMENTS" \
  --deployment-pods "$DEPLOYMENT_PODS" --resolution "$RESOLUTION" --hpa-period "$HPA_PERIOD" \
  --hpa-mode "$HPA_MODE" --hpa-via "$HPA_VIA" --hpa-accept "$HPA_ACCEPT" --top-accept "$TOP_ACCEPT" \
  --top-pods-rate "$TOP_PODS_RATE" --top-nodes-rate "$TOP_NODES_RATE" --load-seconds "$LOAD_SECONDS" \
  --warmup "$WARMUP" --rounds "$ROUNDS" --slow-nodes "$SLOW_NODES" --failing-nodes "$FAILING_NODES" \
  --expect-nodes "$EXPECT_NODES" --expect-pods "$EXPECT_PODS" --baselines "$BASELINES" \
  --churn-rate "$CHURN_RATE" --churn-pool "$CHURN_POOL" --churn-lifetime "$CHURN_LIFETIME" \
  --wall "$((SECONDS - T0))" --kd-load "$KD_LOAD" $([[ $CHECK == true ]] && echo --check)
rc=$?
log "results: $OUT/results.md, $OUT/results.json (wall $((SECONDS - T0))s)"
exit $rc
