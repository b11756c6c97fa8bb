#!/usr/bin/env bash
# HA scale benchmark (issue 14 § Measured): sharded replicas of ours vs metrics-server run as
# several replicas (each scrapes everything), on one simulated fleet and one kube-apiserver.
#
# Usage (each step is short enough to hold /tmp/kubedojo-cluster.lock for one step at a time;
# the cluster and the simulator stay up, idle, between steps; take the lock with `flock -o`, or
# the daemons `up` leaves running inherit its descriptor and hold it until `down`):
#   bench/scale/ha.sh up      --out DIR [--nodes 5000 --pods 30 --containers 2 --resolution 15s]
#   bench/scale/ha.sh measure --out DIR --server ours|metrics-server --replicas N
#                             [--scrape-replication R] [--load-seconds 60] [--hpa-period 60]
#   bench/scale/ha.sh report  --out DIR        (OUT/results.md from every measured scenario)
#   bench/scale/ha.sh down    --out DIR
#
# `up`: kube-apiserver + etcd (tests/e2e/cluster.sh, aggregator routing off), kubelet-sim with
# `--requests-out` (the kubelet requests it received, the ground truth for "R x nodes"), the
# fleet registered (kd-load create), a ServiceAccount whose token the replicas present to each
# other (peer authentication by TokenReview, docs/ha.md § 3), machine.json.
#
# `measure`: starts N replicas, each on its own loopback address (127.4.0.1, .2, ...) with the
# same flags as run.sh's servers (both --v=1, the admin kubeconfig); ours with N > 1 also gets
# --peer-port, POD_NAME, POD_NAMESPACE, --peer-token-file and --scrape-replication R (N = 1
# runs without them: a single replica exactly as today). Then, per scenario:
#   1. ready: seconds until every replica lists every node and pod (kd-load wait);
#   2. idle window of IDLE_CYCLES whole cycles after two settling cycles: kubelet requests per
#      cycle (simulator), per-replica CPU seconds per cycle (Δ utime+stime of /proc/PID/stat over
#      wall-clock cycles, 10 ms ticks; and Δ of the threads' schedstat, ns), steady RSS (median VmRSS, 1 s samples), peer bytes per tick
#      (Δ kubedojo_peer_received_bytes), fallback scrapes;
#   3. load: one `kd-load run` per replica at the same time, straight at it: every deployment's
#      HPA list once per --hpa-period s, node lists at 0.2/s, no full pod lists (70 MB each at
#      5,000 x 30); HPA p50/p99/max and n per replica; peak RSS (VmHWM) after it;
#   4. kill (N > 1): SIGKILL replica 0 three quarters into a tick (ours: after that tick's peer
#      fetch, the worst moment for R = 1: the survivors next notice at the next fetch); then
#      poll each survivor's node list every 0.5 s: time until every node carries a reading taken
#      after the kill ("full coverage"), and the largest reading age seen; then, after the
#      dead member's Lease has expired, kubelet requests per cycle with N - 1 members.
# Writes OUT/<server>-n<N>-r<R>.json; `report` turns them into OUT/results.md.
#
# Environment: KD_BIN, KD_LOAD (default: the static release build under CARGO_TARGET_DIR or
# target/), METRICS_SERVER_BIN (default `tests/e2e/tools.sh path metrics-server`, v0.9.0).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
E2E=$ROOT/tests/e2e

CMD=${1:-}
[[ -n $CMD ]] || { sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
shift
NODES=5000 PODS=30 CONTAINERS=2 RESOLUTION=15s IDLE_CYCLES=3 LOAD_SECONDS=60 WARMUP=5
HPA_PERIOD=60 TOP_NODES_RATE=0.2 DEPLOYMENT_PODS=5-50 OUT= SERVER=ours REPLICAS=1 R=1
while (($#)); do
  case "$1" in
    --out) OUT=$2; shift ;;
    --nodes) NODES=$2; shift ;;
    --pods) PODS=$2; shift ;;
    --containers) CONTAINERS=$2; shift ;;
    --resolution) RESOLUTION=$2; shift ;;
    --idle-cycles) IDLE_CYCLES=$2; shift ;;
    --load-seconds) LOAD_SECONDS=$2; shift ;;
    --hpa-period) HPA_PERIOD=$2; shift ;;
    --server) SERVER=$2; shift ;;
    --replicas) REPLICAS=$2; shift ;;
    --scrape-replication) R=$2; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ -n $OUT ]] || { echo "--out DIR is required" >&2; exit 2; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
CL=$OUT/cluster
log() { printf '[ha-bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
KD_BIN=${KD_BIN:-$TARGET_DIR/x86_64-unknown-linux-gnu/release/kubedojo-data-api}
KD_LOAD=${KD_LOAD:-$TARGET_DIR/x86_64-unknown-linux-gnu/release/kd-load}
[[ -x $KD_BIN && -x $KD_LOAD ]] || die "no $KD_BIN / $KD_LOAD (build them as scripts/build-static.sh does)"
# shellcheck source=tests/e2e/cluster.sh
source "$E2E/cluster.sh"
NS=kubedojo-system
SA=kubedojo-data-api

# ---------------------------------------------------------------- up / down

cmd_up() {
  local kubectl
  kubectl=$("$E2E/tools.sh" path kubectl | tail -n1)
  local ms
  ms=$("$E2E/tools.sh" path metrics-server | tail -n1)
  python3 "$ROOT/bench/scale/machine.py" "$OUT/machine.json" "$KD_BIN" "$ms"
  log "control plane in $CL"
  KUBEDOJO_AGGREGATOR_ROUTING=false kd_cluster_up "$CL" >&2
  # shellcheck disable=SC1091
  source "$CL/cluster.env"
  local k=("$kubectl" --kubeconfig "$CL/admin.kubeconfig")
  "${k[@]}" create namespace "$NS" >&2
  "${k[@]}" -n "$NS" create serviceaccount "$SA" >&2
  "${k[@]}" -n "$NS" create token "$SA" --duration=24h >"$OUT/sa.token"
  local namespaces=$((NODES / 20 > 3 ? NODES / 20 : 3))
  log "kubelet-sim: $NODES nodes x $PODS pods x $CONTAINERS containers, $namespaces namespaces"
  setsid "$KD_BIN" kubelet-sim --nodes "$NODES" --pods-per-node "$PODS" --containers-per-pod "$CONTAINERS" \
    --namespaces "$namespaces" --deployment-pods "$DEPLOYMENT_PODS" --first-address 127.3.0.1 \
    --port 10250 --idle-percent 0 --objects-out "$OUT/objects.json" --ca-out "$OUT/sim-ca.crt" \
    --requests-out "$OUT/sim-requests" </dev/null >"$OUT/kubelet-sim.log" 2>&1 &
  echo $! >"$OUT/kubelet-sim.pid"
  local i
  for ((i = 0; i < 600; i++)); do
    grep -q "kubelet-sim serving $NODES nodes" "$OUT/kubelet-sim.log" 2>/dev/null && break
    kill -0 "$(cat "$OUT/kubelet-sim.pid")" 2>/dev/null || die "kubelet-sim exited"
    sleep 0.5
  done
  log "registering the fleet in kube-apiserver"
  local t0=$SECONDS
  "$KD_LOAD" --cert "$CL/pki/admin.crt" --key "$CL/pki/admin.key" create --apiserver "$KD_APISERVER_URL" \
    --objects "$OUT/objects.json" --concurrency 32 >&2
  "$KD_LOAD" targets --objects "$OUT/objects.json" >"$OUT/targets.json"
  cat >"$OUT/fleet.env" <<EOF
NODES=$NODES PODS=$PODS CONTAINERS=$CONTAINERS RESOLUTION=$RESOLUTION NAMESPACES=$namespaces
REGISTER_SECONDS=$((SECONDS - t0))
EOF
  log "up: fleet registered in $((SECONDS - t0))s"
}

cmd_down() {
  [[ -f $OUT/kubelet-sim.pid ]] && kill "$(cat "$OUT/kubelet-sim.pid")" 2>/dev/null || true
  rm -f "$OUT/kubelet-sim.pid"
  kd_cluster_down "$CL" >&2 || true
  log "down"
}

# ---------------------------------------------------------------- measure

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# CPU time of every thread of PID in ns (schedstat): /proc/PID/stat counts 10 ms ticks, too
# coarse for a replica that spends ~30 ms per cycle (a thread that exits meanwhile is lost here;
# the tick count keeps it, both are reported)
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%d\n", s}'; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
sim_requests() { cat "$OUT/sim-requests"; }
# counter URL NAME: the value of a counter on /metrics (0 when absent)
counter() {
  curl -sk --max-time 10 --cert "$CL/pki/admin.crt" --key "$CL/pki/admin.key" "$1/metrics" |
    awk -v n="$2" '$1 == n || $1 == n "_total" {v = $2} END {printf "%d\n", v}'
}
# sleep until FRACTION (e.g. 0.75) into the current wall-clock cycle
align() {
  python3 -c "
import time
r = $RES_S; now = time.time(); t = (now // r) * r + $1 * r
time.sleep((t - now) % r)"
}

cmd_measure() {
  # shellcheck disable=SC1091
  source "$OUT/fleet.env"
  # shellcheck disable=SC1091
  source "$CL/cluster.env"
  RES_S=${RESOLUTION%s}
  local tag=$SERVER-n$REPLICAS-r$R
  [[ $SERVER == metrics-server ]] && tag=$SERVER-n$REPLICAS
  local dir=$OUT/$tag
  rm -rf "$dir"
  mkdir -p "$dir"
  local ms_bin=
  [[ $SERVER == metrics-server ]] && ms_bin=${METRICS_SERVER_BIN:-$("$E2E/tools.sh" path metrics-server | tail -n1)}
  local expect_nodes expect_pods
  read -r expect_nodes expect_pods < <(python3 -c '
import json, sys; t = json.load(open(sys.argv[1])); print(t["nodes"], t["pods"])' "$OUT/targets.json")
  local port peer_port
  port=$(_kd_free_port)
  peer_port=$(_kd_free_port "$port")
  local common=(
    --secure-port="$port"
    --kubeconfig="$CL/admin.kubeconfig" --authentication-kubeconfig="$CL/admin.kubeconfig"
    --authorization-kubeconfig="$CL/admin.kubeconfig"
    --kubelet-certificate-authority="$OUT/sim-ca.crt" --kubelet-use-node-status-port
    --kubelet-preferred-address-types=InternalIP --metric-resolution="$RESOLUTION"
    --kubelet-request-timeout="$((RES_S / 2))s" --v=1
  )
  PIDS=() URLS=()
  trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
  log "[$tag] starting $REPLICAS replica(s) (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  local t0 i ip
  t0=$(date +%s.%N)
  for ((i = 0; i < REPLICAS; i++)); do
    ip=127.4.0.$((i + 1))
    URLS[i]=https://$ip:$port
    if [[ $SERVER == ours ]]; then
      local ha=()
      ((REPLICAS > 1)) && ha=(--peer-port="$peer_port" --peer-advertise-address="$ip"
        --peer-token-file="$OUT/sa.token" --scrape-replication="$R")
      POD_NAME=replica-$i POD_NAMESPACE=$NS NO_COLOR=1 "$KD_BIN" "${common[@]}" --bind-address="$ip" \
        --cert-dir="$dir/certs-$i" "${ha[@]}" </dev/null >"$dir/replica-$i.log" 2>&1 &
    else
      "$ms_bin" "${common[@]}" --bind-address="$ip" --cert-dir="$dir/certs-$i" \
        </dev/null >"$dir/replica-$i.log" 2>&1 &
    fi
    PIDS[i]=$!
  done
  local ready=()
  for ((i = 0; i < REPLICAS; i++)); do
    "$KD_LOAD" --cert "$CL/pki/admin.crt" --key "$CL/pki/admin.key" wait --url "${URLS[i]}" \
      --nodes "$expect_nodes" --pods "$expect_pods" --timeout 600 --pid "${PIDS[i]}" >"$dir/wait-$i.log" 2>&1 ||
      die "[$tag] replica $i never served the whole fleet: $(tail -3 "$dir/wait-$i.log")"
    ready[i]=$(python3 -c "import time; print(round(time.time() - $t0, 2))")
  done
  log "[$tag] every replica serves the fleet (${ready[*]} s); two settling cycles"
  sleep $((RES_S * 2))

  # RSS sampler: "time pid kB" every second
  (while :; do
    for p in "${PIDS[@]}"; do echo "$(date +%s.%N) $p $(status_kb "$p" VmRSS)"; done
    sleep 1
  done) >"$dir/rss.txt" 2>/dev/null &
  local sampler=$!

  # ---- idle window
  align 0.75
  local q0 q1 i0 i1 cpu0=() cpu1=() ns0=() ns1=() rx0=() rx1=() fb0=() fb1=()
  i0=$(date +%s.%N)
  q0=$(sim_requests)
  for ((i = 0; i < REPLICAS; i++)); do
    cpu0[i]=$(cpu_ticks "${PIDS[i]}")
    ns0[i]=$(cpu_ns "${PIDS[i]}")
    rx0[i]=$(counter "${URLS[i]}" kubedojo_peer_received_bytes)
    fb0[i]=$(counter "${URLS[i]}" kubedojo_peer_fallback_scrapes)
  done
  sleep $((RES_S * IDLE_CYCLES))
  q1=$(sim_requests)
  for ((i = 0; i < REPLICAS; i++)); do
    cpu1[i]=$(cpu_ticks "${PIDS[i]}")
    ns1[i]=$(cpu_ns "${PIDS[i]}")
    rx1[i]=$(counter "${URLS[i]}" kubedojo_peer_received_bytes)
    fb1[i]=$(counter "${URLS[i]}" kubedojo_peer_fallback_scrapes)
  done
  i1=$(date +%s.%N)
  log "[$tag] idle: $(((q1 - q0) / IDLE_CYCLES)) kubelet requests per cycle"

  # ---- load, one kd-load per replica at once
  local loads=() lc0=() lc1=()
  for ((i = 0; i < REPLICAS; i++)); do lc0[i]=$(cpu_ticks "${PIDS[i]}"); done
  local l0 l1
  l0=$(date +%s.%N)
  for ((i = 0; i < REPLICAS; i++)); do
    "$KD_LOAD" --cert "$CL/pki/admin.crt" --key "$CL/pki/admin.key" run --url "${URLS[i]}" \
      --targets "$OUT/targets.json" --duration "$LOAD_SECONDS" --warmup "$WARMUP" \
      --hpa-period "$HPA_PERIOD" --hpa-via direct --top-pods-rate 0 --top-nodes-rate "$TOP_NODES_RATE" \
      >"$dir/load-$i.json" 2>"$dir/load-$i.log" &
    loads[i]=$!
  done
  for ((i = 0; i < REPLICAS; i++)); do wait "${loads[i]}" || die "[$tag] kd-load on replica $i failed: $(tail -3 "$dir/load-$i.log")"; done
  l1=$(date +%s.%N)
  local hwm=()
  for ((i = 0; i < REPLICAS; i++)); do
    lc1[i]=$(cpu_ticks "${PIDS[i]}")
    hwm[i]=$(status_kb "${PIDS[i]}" VmHWM)
  done
  kill "$sampler" 2>/dev/null || true
  log "[$tag] load done"

  # ---- kill replica 0, coverage on the survivors
  local kill_at=0 after_q=0 after_cycles=0
  if ((REPLICAS > 1)); then
    align 0.75
    kill_at=$(date +%s.%N)
    kill -KILL "${PIDS[0]}"
    log "[$tag] replica 0 SIGKILLed"
    python3 "$ROOT/bench/scale/ha_coverage.py" "$kill_at" "$((RES_S * 3))" "$expect_nodes" \
      "$CL/pki/admin.crt" "$CL/pki/admin.key" "${URLS[@]:1}" >"$dir/coverage.json" ||
      log "[$tag] coverage poll failed"
    if [[ $SERVER == ours ]]; then
      # the dead member's Lease (15 s) expires; then one whole cycle with N - 1 members
      sleep 12
      align 0.75
      local a
      a=$(sim_requests)
      sleep $((RES_S * 2))
      after_q=$(($(sim_requests) - a))
      after_cycles=2
    fi
  fi
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()

  python3 - "$dir" "$tag" "$SERVER" "$REPLICAS" "$R" "$NODES" "$IDLE_CYCLES" "$RES_S" "$q0" "$q1" "$i0" "$i1" \
    "$l0" "$l1" "$(getconf CLK_TCK)" "$after_q" "$after_cycles" "$HPA_PERIOD" "$LOAD_SECONDS" \
    "${ready[*]}" "${cpu0[*]}" "${cpu1[*]}" "${rx0[*]}" "${rx1[*]}" "${fb0[*]}" "${fb1[*]}" \
    "${lc0[*]}" "${lc1[*]}" "${hwm[*]}" "${ns0[*]}" "${ns1[*]}" "$(cut -d' ' -f1-3 /proc/loadavg)" >"$OUT/$tag.json" <<'EOF'
import json, os, statistics, sys
a = sys.argv[1:]
(d, tag, server, n, r, nodes, cycles, res, q0, q1, i0, i1, l0, l1, hz, after_q, after_cycles,
 hpa_period, load_seconds) = a[:19]
ready, cpu0, cpu1, rx0, rx1, fb0, fb1, lc0, lc1, hwm, ns0, ns1 = [[float(x) for x in s.split()] for s in a[19:31]]
n, cycles, hz = int(n), int(cycles), float(hz)
pids = []
rss = {}
for line in open(f"{d}/rss.txt"):
    p = line.split()
    if len(p) == 3 and float(i0) <= float(p[0]) <= float(i1):
        rss.setdefault(p[1], []).append(int(p[2]))
steady = [statistics.median(v) / 1024 for _, v in sorted(rss.items(), key=lambda kv: int(kv[0]))]
replicas = []
for i in range(n):
    load = json.load(open(f"{d}/load-{i}.json"))
    replicas.append({
        "ready_seconds": ready[i],
        "cpu_seconds_per_cycle": (cpu1[i] - cpu0[i]) / hz / cycles,
        "cpu_seconds_per_cycle_ns": (ns1[i] - ns0[i]) / 1e9 / cycles,
        "rss_steady_mib": steady[i] if i < len(steady) else None,
        "rss_peak_mib": hwm[i] / 1024,
        "peer_bytes_per_tick": (rx1[i] - rx0[i]) / cycles,
        "fallback_scrapes_per_tick": (fb1[i] - fb0[i]) / cycles,
        "load_cpu_cores": (lc1[i] - lc0[i]) / hz / (float(l1) - float(l0)),
        "load": load,
    })
cov = None
if os.path.exists(f"{d}/coverage.json"):
    try:
        cov = json.load(open(f"{d}/coverage.json"))
    except ValueError:
        cov = None
res = {
    "tag": tag, "server": server, "replicas": n, "scrape_replication": int(r), "nodes": int(nodes),
    "resolution_seconds": float(res), "idle_cycles": cycles,
    "kubelet_requests_per_cycle": (int(q1) - int(q0)) / cycles,
    "kubelet_requests_per_cycle_after_kill": (int(after_q) / int(after_cycles)) if int(after_cycles) else None,
    "hpa_period_seconds": float(hpa_period), "load_seconds": float(load_seconds),
    "per_replica": replicas, "coverage_after_kill": cov,
    "loadavg_after": a[31].split(),
}
print(json.dumps(res, indent=1))
EOF
  log "[$tag] written $OUT/$tag.json"
}

case "$CMD" in
  up) cmd_up ;;
  down) cmd_down ;;
  measure) cmd_measure ;;
  report) python3 "$ROOT/bench/scale/ha_report.py" "$OUT" ;;
  *) echo "unknown command $CMD (up, measure, report, down)" >&2; exit 2 ;;
esac
