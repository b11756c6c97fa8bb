#!/usr/bin/env bash
# Watchers (issue 12 §5): our server alone (metrics-server has no watch) on a kubelet-sim fleet
# behind kube-apiserver (pair.sh's set-up), in steps of N concurrent watches on all pods
# (`kd-load watchers`: every watch resumed from one list, every event of every watcher checked
# per scrape tick), each step for K checked ticks. Per step: the server's steady RSS (median
# VmRSS, 0.5 s samples) and VmHWM (reset at the step's start through /proc/PID/clear_refs),
# its CPU seconds per tick (Δ utime+stime ÷ Δ scrape ticks, as run.sh), kd-load's CPU per tick
# and errors. Writes OUT/results.md, OUT/results.json (watchers_report.py), machine.json and
# the exact command (command.txt).
#
# Usage: bench/scale/watchers.sh [--nodes 100] [--pods 30] [--resolution 15s]
#        [--steps 0,10,100] [--ticks 4] [--http h2|h1] [--connections 1]
#        [--namespace NS] [--label-selector SEL] [--extra SERVER_FLAG]... [--out DIR] [--keep]
# Environment: KD_BIN, KD_LOAD (default: built), KD_SIM_FIRST (first kubelet address, default
# 127.10.0.1, apart from run.sh's 127.3.0.1 and the other harnesses').
# Hold the shared cluster lock: flock /tmp/kubedojo-cluster.lock bash bench/scale/watchers.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
E2E=$ROOT/tests/e2e
NODES=100 PODS=30 CONTAINERS=2 RESOLUTION=15s STEPS=0,10,100 TICKS=4 HTTP=h2 CONNECTIONS=1
NAMESPACE= SELECTOR= OUT= KEEP=false
OURS_EXTRA=()
SIM_FIRST=${KD_SIM_FIRST:-127.10.0.1}
ARGV=("$@")
while (($#)); do
  case "$1" in
    --nodes) NODES=$2; shift ;;
    --pods) PODS=$2; shift ;;
    --resolution) RESOLUTION=$2; shift ;;
    --steps) STEPS=$2; shift ;;
    --ticks) TICKS=$2; shift ;;
    --http) HTTP=$2; shift ;;
    --connections) CONNECTIONS=$2; shift ;;
    --namespace) NAMESPACE=$2; shift ;;
    --label-selector) SELECTOR=$2; shift ;;
    --extra) OURS_EXTRA+=("$2"); shift ;;
    --out) OUT=$2; shift ;;
    --keep) KEEP=true ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
RES_S=${RESOLUTION%s}
[[ $RES_S =~ ^[0-9]+$ ]] || { echo "--resolution: whole seconds like 15s, not $RESOLUTION" >&2; exit 2; }
[[ $TICKS =~ ^[1-9][0-9]*$ ]] || { echo "--ticks: a positive number, not $TICKS" >&2; exit 2; }
IFS=, read -r -a STEP_LIST <<<"$STEPS"
for w in "${STEP_LIST[@]}"; do
  [[ $w =~ ^[0-9]+$ ]] || { echo "--steps: numbers of watchers like 0,10,100, not $STEPS" >&2; exit 2; }
done
OUT=${OUT:-$ROOT/target/scale/watchers-${NODES}x${PODS}-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log() { printf '[watchers %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
echo "bench/scale/watchers.sh ${ARGV[*]}  (git $(git -C "$ROOT" rev-parse --short HEAD))" >"$OUT/command.txt"

PAIR_SERVERS=ours
# shellcheck source=bench/scale/pair.sh
source "$ROOT/bench/scale/pair.sh"
pair_binaries
python3 "$ROOT/bench/scale/machine.py" "$OUT/machine.json" "$KD_BIN"
pair_cluster_up
log "kubelet-sim: $NODES nodes × $PODS pods from $SIM_FIRST"
pair_fleet "$SIM_FIRST" "kubelet-sim serving $NODES nodes"
pair_servers
PID=${SPID[ours]}
URL=https://127.0.0.1:${PORT[ours]}
log "ours (pid $PID) serves $EXPECT_NODES nodes, $EXPECT_PODS pods on $URL"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
tick_count() {
  curl -sk --max-time 10 "${CERT[@]}" "$URL/metrics" |
    awk '/^metrics_server_manager_tick_duration_seconds_count/ {c = $2} END {print (c == "" ? 0 : int(c))}'
}
(while kill -0 "$PID" 2>/dev/null; do
  echo "$(date +%s.%N) $(status_kb "$PID" VmRSS)"
  sleep 0.5
done) >"$OUT/rss.tsv" &
PIDS+=($!)

printf 'watchers\tstart\tend\tticks0\tticks1\tcpu0\tcpu1\thwm_kb\thwm_reset\n' >"$OUT/steps.tsv"
WATCH_ARGS=(--http "$HTTP" --connections "$CONNECTIONS" --ticks "$TICKS" --grace "$RES_S"
  --timeout "$(((TICKS + 6) * RES_S + 120))")
[[ -n $NAMESPACE ]] && WATCH_ARGS+=(--namespace "$NAMESPACE")
[[ -n $SELECTOR ]] && WATCH_ARGS+=(--label-selector "$SELECTOR")
[[ -z $NAMESPACE && -z $SELECTOR ]] && WATCH_ARGS+=(--expect-pods "$EXPECT_PODS")
for w in "${STEP_LIST[@]}"; do
  kill -0 "$PID" 2>/dev/null || die "the server exited (log: $OUT/ours.log)"
  reset=false
  echo 5 2>/dev/null >"/proc/$PID/clear_refs" && reset=true
  start=$(date +%s.%N)
  c0=$(tick_count)
  cpu0=$(cpu_ticks "$PID")
  log "step $w watchers: from tick $c0 (load $(cut -d' ' -f1-3 /proc/loadavg))"
  if ((w == 0)); then
    deadline=$((SECONDS + (TICKS + 2) * RES_S + 30))
    while (($(tick_count) < c0 + TICKS && SECONDS < deadline)); do sleep 1; done
  else
    "$KD_LOAD" "${CERT[@]}" watchers --url "$URL" --watchers "$w" "${WATCH_ARGS[@]}" \
      >"$OUT/step-$w.json" 2>"$OUT/step-$w.log" ||
      log "kd-load watchers failed: $(tail -3 "$OUT/step-$w.log")"
  fi
  c1=$(tick_count)
  cpu1=$(cpu_ticks "$PID")
  end=$(date +%s.%N)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$w" "$start" "$end" "$c0" "$c1" "$cpu0" "$cpu1" \
    "$(status_kb "$PID" VmHWM)" "$reset" >>"$OUT/steps.tsv"
  [[ -s $OUT/step-$w.json ]] && python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print("  errors", r["errors"], r["errors_by_reason"], "kd-load CPU-s/tick", r["kd_load_cpu_seconds_per_tick"])' \
    "$OUT/step-$w.json" >&2 || true
done
python3 "$ROOT/bench/scale/watchers_report.py" "$OUT" --nodes "$NODES" --pods "$PODS" \
  --resolution "$RESOLUTION" --ticks "$TICKS" --http "$HTTP" --connections "$CONNECTIONS" \
  --namespace="$NAMESPACE" --label-selector="$SELECTOR" --extra="${OURS_EXTRA[*]}" \
  --hz "$(getconf CLK_TCK)"
log "results: $OUT/results.md"
