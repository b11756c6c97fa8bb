#!/usr/bin/env bash
# Golden protobuf comparison with metrics-server (issue 12 §1): our server and metrics-server
# v0.9.0 scrape the same kubelet-sim fleet (constant usage, so every rate is exact and both
# must serve the same values) with the same kube-apiserver, at the same time on two ports;
# NodeMetricsList, PodMetricsList (all, one namespace, the HPA's label-selected list) and
# single NodeMetrics / PodMetrics are fetched from both with
# `Accept: application/vnd.kubernetes.protobuf`, decoded by kd-pbdecode (the real Go types of
# k8s.io/metrics, tests/e2e/pbdecode.sh) and compared field by field by golden.py: kind,
# apiVersion, item set and order, names, namespaces, labels, container names (as a set:
# metrics-server orders them by Go map iteration, at random),
# window, CPU and memory quantities (timestamps may differ: different scrape instants).
# Exits non-zero on any difference.
#
# Usage: bench/scale/golden.sh [--nodes N] [--pods M] [--resolution 10s] [--out DIR] [--keep]
#        [--mutate WHAT]   (golden.py alters one field of our answer first: label, namespace,
#                           container, cpu, memory, window, drop-item; the run then fails)
# After the comparison every --mutate is also tried on the same answers and must be caught
# (the check proves it can fail in every run).
# Environment: KD_BIN, KD_LOAD, METRICS_SERVER_BIN, KD_PBDECODE (default: built/cached).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
E2E=$ROOT/tests/e2e
NODES=20 PODS=10 CONTAINERS=2 RESOLUTION=10s OUT= KEEP=false MUTATE=
while (($#)); do
  case "$1" in
    --nodes) NODES=$2; shift ;;
    --pods) PODS=$2; shift ;;
    --resolution) RESOLUTION=$2; shift ;;
    --out) OUT=$2; shift ;;
    --keep) KEEP=true ;;
    --mutate) MUTATE=$2; shift ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
RES_S=${RESOLUTION%s}
OUT=${OUT:-$ROOT/target/scale/golden-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log() { printf '[golden %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
T0=$SECONDS

# shellcheck source=bench/scale/pair.sh
source "$ROOT/bench/scale/pair.sh"
PBDECODE=${KD_PBDECODE:-$("$E2E/pbdecode.sh" | tail -n1)}
pair_binaries "$PBDECODE"
pair_cluster_up
pair_fleet 127.7.0.1 "kubelet-sim serving $NODES nodes" --usage constant
pair_servers
# Both have served the fleet: our first-scrape rates (issue 12 §4) and metrics-server's second
# scrape. One more cycle so both windows are between two periodic scrapes.
sleep "$RES_S"

# The objects asked for: one namespace, one deployment's pods (the HPA's query), one node, one pod.
read -r NS APP NODE POD < <(python3 -c '
import json, sys
items = json.load(open(sys.argv[1]))["items"]
pods = [o for o in items if o["kind"] == "Pod"]
nodes = [o for o in items if o["kind"] == "Node"]
p = pods[len(pods) // 2]
print(p["metadata"]["namespace"], p["metadata"]["labels"]["app"], nodes[-1]["metadata"]["name"], p["metadata"]["name"])' "$OUT/objects.json")
B=/apis/metrics.k8s.io/v1beta1
QUERIES=(
  "nodes $B/nodes"
  "pods $B/pods"
  "namespace-pods $B/namespaces/$NS/pods"
  "hpa-pods $B/namespaces/$NS/pods?labelSelector=app%3D$APP"
  "node $B/nodes/$NODE"
  "pod $B/namespaces/$NS/pods/$POD"
)
for s in ours ms; do
  for q in "${QUERIES[@]}"; do
    read -r name path <<<"$q"
    curl -sSk --max-time 30 "${CERT[@]}" -H 'Accept: application/vnd.kubernetes.protobuf' \
      -o "$OUT/$s-$name.pb" -w '%{http_code} %{content_type}\n' "https://127.0.0.1:${PORT[$s]}$path" \
      >"$OUT/$s-$name.http" || die "$s $path: curl failed"
    read -r code ctype <"$OUT/$s-$name.http"
    [[ $code == 200 && $ctype == application/vnd.kubernetes.protobuf* ]] ||
      die "$s $path: HTTP $code, Content-Type $ctype"
    "$PBDECODE" <"$OUT/$s-$name.pb" >"$OUT/$s-$name.json" || die "$s $path: kd-pbdecode rejected it"
  done
done
names=()
for q in "${QUERIES[@]}"; do names+=("${q%% *}"); done
python3 "$ROOT/bench/scale/golden.py" "$OUT" --resolution "$RES_S" ${MUTATE:+--mutate "$MUTATE"} "${names[@]}" |
  tee "$OUT/golden.txt"
rc=${PIPESTATUS[0]}
# The check must be able to fail: each deliberately wrong field of our answer must be caught.
for m in label namespace container cpu memory window drop-item; do
  if python3 "$ROOT/bench/scale/golden.py" "$OUT" --resolution "$RES_S" --mutate "$m" "${names[@]}" \
    >"$OUT/mutate-$m.txt"; then
    log "FAIL: --mutate $m was not caught"
    rc=1
  else
    log "--mutate $m caught: $(grep -m1 '^    ' "$OUT/mutate-$m.txt" | sed 's/^ *//')"
  fi
done
log "wall $((SECONDS - T0))s; output in $OUT"
exit "$rc"
