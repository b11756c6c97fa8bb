#!/usr/bin/env bash
# Soak (issue 13 §8; not in CI): our server behind a real kube-apiserver for a long run
# at HPA-like load, with pod churn and a kubelet that fails now and then; RSS and CPU of
# our server sampled every few seconds, plotted, summarized.
#
# Usage: bench/soak.sh [--minutes 30] [--warmup-minutes 5] [--nodes 30] [--pods-per-node 10]
#                      [--out DIR] [--png FILE]
#
# Set-up: tests/e2e/replicas.sh (etcd + kube-apiserver, kubelet-sim's fleet registered
# through the API, one replica of our server behind the Service and the metrics.k8s.io
# APIService, --metric-resolution=15s as metrics-server's manifests set).
# Load, all through kube-apiserver's aggregator with the admin client certificate:
#   - kd-load HPA queries (`namespaces/NS/pods?labelSelector=app=APP`, protobuf first),
#     every deployment once per --hpa-period (10 s), open loop; only the deployments with
#     no churned pod and no pod on the flaky node, so each answer's item count is exact;
#   - kd-load full lists: pods -A every 2 s and nodes every 5 s, item counts within a slack
#     of the flaky node's and the churned pods;
#   - two watches, `kubectl get pods.metrics.k8s.io -A -w` and `kubectl get nodes.metrics.k8s.io -w`
#     (restarted when they end; their events are counted).
# Faults: every 30 s one of 10 pods is deleted through the API and created again 15 s
# later (new UID, same name, Running via /status); the last node's kubelet sits behind a
# TCP forwarder that is up 60 s, down 20 s (connection refused), forever.
# Every 5 s: RSS (VmRSS) and CPU time (utime+stime) of our server from /proc.
#
# Output (--out, default bench/results/soak-<UTC time>): samples.csv, hpa.json,
# lists.json (kd-load summaries), summary.json (errors, RSS after warm-up and at the end,
# drift = median of the last 3 min vs median of the 3 min after warm-up, CPU), soak.png
# (matplotlib; a venv with it is made in ~/.cache/kubedojo/plotvenv when python3 lacks it).
# Exits non-zero on any error or an RSS drift of 5% or more.
# Needs root (the netns of cluster.sh). KUBEDOJO_BIN and KD_LOAD as in replicas.sh.
set -euo pipefail

RS_NAME=soak
RS_T0=$SECONDS
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
# shellcheck source=../tests/e2e/replicas.sh
. "$ROOT/tests/e2e/replicas.sh"

MINUTES=30
WARMUP_MINUTES=5
NODES=30
PODS_PER_NODE=10
OUT=
PNG=
while (($#)); do
  case "$1" in
    --minutes) MINUTES=$2 && shift ;;
    --warmup-minutes) WARMUP_MINUTES=$2 && shift ;;
    --nodes) NODES=$2 && shift ;;
    --pods-per-node) PODS_PER_NODE=$2 && shift ;;
    --out) OUT=$2 && shift ;;
    --png) PNG=$2 && shift ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
      exit 0
      ;;
    *) rs_die "unknown argument $1 (try --help)" ;;
  esac
  shift
done
OUT=${OUT:-$ROOT/bench/results/soak-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PNG=${PNG:-$OUT/soak.png}
SECONDS_TOTAL=$((MINUTES * 60))
WARMUP_S=$((WARMUP_MINUTES * 60))
CHURN=10
HPA_PERIOD=10
export RS_RESOLUTION=15s

DIR=$(mktemp -d "${TMPDIR:-/tmp}/kubedojo-soak.XXXXXX")
BG=()
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  set +e
  for p in "${BG[@]}"; do pkill -P "$p" 2>/dev/null; kill "$p" 2>/dev/null; done
  cp "$DIR/replica-0.log" "$OUT/server.log" 2>/dev/null
  ((rc == 0)) || tail -n 40 "$DIR/replica-0.log" >&2
  rs_cleanup
  rm -rf "$DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

FLAKY_PORT=$(_kd_free_port)
prepare_objects() { python3 "$BENCH_DIR/soak_helper.py" prepare "$1" "$FLAKY_PORT" "$CHURN" "$DIR"; }
OBJECTS_HOOK=prepare_objects
rs_setup "$DIR" "$NODES" "$PODS_PER_NODE" --deployment-pods 2-6 --namespaces 5
# shellcheck disable=SC1091
. "$DIR/flaky.env"
rs_log "flaky kubelet: $FLAKY_NODE via $FLAKY_ADDR:$FLAKY_PORT -> :$FLAKY_REAL_PORT ($FLAKY_PODS pods); HPA targets: $HPA_DEPLOYMENTS of $ALL_DEPLOYMENTS deployments"
python3 "$BENCH_DIR/soak_helper.py" flaky "$FLAKY_ADDR" "$FLAKY_PORT" "$FLAKY_ADDR" "$FLAKY_REAL_PORT" 60 20 "$OUT/flaky.log" &
BG+=($!)

rs_start_replica 0
rs_wait_replica_up 0
rs_prober_start
BG+=("$RS_PROBER_PID")
rs_wait_slice_ready 0 120
kd_wait_apiservice "$DIR" v1beta1.metrics.k8s.io 60 || rs_die "metrics.k8s.io APIService not Available"
SERVER_PID=$(cat "$DIR/replica-0.pid")
rs_log "our server: pid $SERVER_PID; soak for ${MINUTES} min (warm-up ${WARMUP_MINUTES} min), output in $OUT"

# samples: unix time, VmRSS kB, CPU seconds (utime+stime)
TICK=$(getconf CLK_TCK)
(
  echo "t,rss_kb,cpu_s"
  while kill -0 "$SERVER_PID" 2>/dev/null; do
    rss=$(awk '/^VmRSS:/{print $2}' "/proc/$SERVER_PID/status")
    cpu=$(awk -v tck="$TICK" '{sub(/^.*\) /, ""); print ($12 + $13) / tck}' "/proc/$SERVER_PID/stat")
    echo "$(date +%s.%N),$rss,$cpu"
    sleep 5
  done
) >"$OUT/samples.csv" &
BG+=($!)

# watches through the aggregator, restarted when they end
watch_loop() {
  local what=$1
  set +e
  while true; do
    "$KD_KUBECTL" --kubeconfig "$DIR/admin.kubeconfig" get "$what" -A -w --output-watch-events \
      -o 'custom-columns=E:.type,N:.object.metadata.name' --no-headers 2>&1 | sed -u "s/^/$what /"
    echo "$what RESTART"
    sleep 1
  done
}
watch_loop pods.metrics.k8s.io >"$OUT/watch-pods.log" &
BG+=($!)
watch_loop nodes.metrics.k8s.io >"$OUT/watch-nodes.log" &
BG+=($!)

# pod churn: delete one, recreate it 15 s later
churn_loop() {
  local i=0 n ns name
  set +e
  n=$(wc -l <"$DIR/churn.txt")
  while true; do
    read -r ns name < <(sed -n "$((i % n + 1))p" "$DIR/churn.txt")
    # no kubelet confirms a graceful deletion here: delete at once, as a force delete does
    k -n "$ns" delete pod "$name" --grace-period=0 --force >/dev/null 2>&1 && echo "$(date +%s) deleted $ns/$name"
    sleep 15
    k create -f "$DIR/churn/$((i % n)).json" >/dev/null &&
      k -n "$ns" patch pod "$name" --subresource=status --type=merge \
        -p "$(cat "$DIR/churn/$((i % n)).status")" >/dev/null &&
      echo "$(date +%s) recreated $ns/$name"
    sleep 15
    i=$((i + 1))
  done
}
churn_loop >"$OUT/churn.log" 2>&1 &
BG+=($!)

LOAD=("$RS_LOAD" --cert "$KD_ADMIN_CRT" --key "$KD_ADMIN_KEY" run --url "$KD_APISERVER_URL"
  --hpa-via direct --warmup 0 --duration "$SECONDS_TOTAL" --timeout 10)
"${LOAD[@]}" --targets "$DIR/targets-hpa.json" --hpa-period "$HPA_PERIOD" \
  --hpa-accept 'application/vnd.kubernetes.protobuf, application/json' \
  --top-pods-rate 0 --top-nodes-rate 0 >"$OUT/hpa.json" 2>"$OUT/hpa.err" &
HPA_PID=$!
BG+=("$HPA_PID")
"${LOAD[@]}" --targets "$DIR/targets-lists.json" --slack $((FLAKY_PODS + CHURN)) \
  --top-pods-rate 0.5 --top-nodes-rate 0.2 >"$OUT/lists.json" 2>"$OUT/lists.err" &
LISTS_PID=$!
BG+=("$LISTS_PID")
rs_log "load running: $HPA_DEPLOYMENTS deployments every ${HPA_PERIOD}s = $((HPA_DEPLOYMENTS * 60 / HPA_PERIOD)) HPA queries/min"
wait "$HPA_PID" || rs_die "kd-load (HPA) failed: $(tail -n 5 "$OUT/hpa.err")"
wait "$LISTS_PID" || rs_die "kd-load (lists) failed: $(tail -n 5 "$OUT/lists.err")"
kill -0 "$SERVER_PID" || rs_die "our server exited during the soak"

python3 "$BENCH_DIR/soak_helper.py" summarize "$OUT/samples.csv" "$OUT/hpa.json" "$OUT/lists.json" \
  "$OUT/watch-pods.log,$OUT/watch-nodes.log" "$WARMUP_S" "$OUT/summary.json"
{
  echo "flaky kubelet down periods: $(grep -c down "$OUT/flaky.log")"
  echo "pods deleted: $(grep -c deleted "$OUT/churn.log"), recreated: $(grep -c recreated "$OUT/churn.log")"
  echo "our server: $(grep -c 'panicked' "$DIR/replica-0.log" || true) panics"
} | tee "$OUT/faults.txt" >&2

PY=python3
python3 -c 'import matplotlib' 2>/dev/null || {
  [[ -x $HOME/.cache/kubedojo/plotvenv/bin/python ]] ||
    { python3 -m venv "$HOME/.cache/kubedojo/plotvenv" && "$HOME/.cache/kubedojo/plotvenv/bin/pip" install -q matplotlib; }
  PY=$HOME/.cache/kubedojo/plotvenv/bin/python
}
"$PY" "$BENCH_DIR/soak_helper.py" plot "$OUT/samples.csv" "$OUT/summary.json" "$PNG"
rs_log "plot: $PNG"
python3 - "$OUT/summary.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
bad = []
if s["errors"]:
    bad.append(f"{s['errors']} errors")
if abs(s["rss_drift_percent"]) >= 5:
    bad.append(f"RSS drift {s['rss_drift_percent']}%")
print("soak:", "FAILED: " + ", ".join(bad) if bad else "passed", file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
