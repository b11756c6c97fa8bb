#!/usr/bin/env bash
# Chart and manifests tests: one entry point.
#
#   tests/chart/run.sh                      lint + template assertions, manifests vs chart (no cluster, ~15 s)
#   tests/chart/run.sh --cluster DIR        also server-side dry-run + real helm install/upgrade/uninstall of
#                                           each mode and kubectl apply of manifests/, against the
#                                           kube-apiserver of DIR/admin.kubeconfig (tests/e2e/cluster.sh up DIR)
#   tests/chart/run.sh --own-cluster        start a throwaway kube-apiserver for the run and stop it after
#   tests/chart/run.sh --write-readme       regenerate the values table of charts/kubedojo-data-api/README.md
#   tests/chart/run.sh -k PATTERN ...       only checks whose name contains PATTERN
#   KUBEDOJO_BIN=target/release/kubedojo-data-api tests/chart/run.sh
#                                           also check that the binary accepts every flag the chart passes
#
# helm and kubectl are the pinned builds of tests/e2e/tools.sh (built on first use); the
# cluster checks install cert-manager's real CRDs (tools.sh cert-manager-crds).
# Exits non-zero on any failure; the last line is "N passed, M failed".
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TOOLS=$ROOT/tests/e2e/tools.sh

# tools.sh builds one tool at a time under a lock; retry while another build holds it.
tool() {
  local t=$1 i out
  for i in 1 2 3 4 5 6; do
    if out=$(bash "$TOOLS" "$t" 2>/tmp/kd-chart-tools.$$); then
      rm -f /tmp/kd-chart-tools.$$
      printf '%s\n' "$out" | tail -n1
      return 0
    fi
    echo "[run.sh] tools.sh $t failed (try $i): $(tail -n2 /tmp/kd-chart-tools.$$)" >&2
    sleep 20
  done
  return 1
}

args=()
own_cluster=
while (($#)); do
  case "$1" in
    --own-cluster) own_cluster=1 ;;
    *) args+=("$1") ;;
  esac
  shift
done

HELM=${HELM:-$(tool helm)} || { echo "0 passed, 1 failed"; exit 1; }
KUBECTL=${KUBECTL:-$(tool kubectl)} || { echo "0 passed, 1 failed"; exit 1; }
command -v python3 >/dev/null || { echo "python3 is required"; echo "0 passed, 1 failed"; exit 1; }

if [[ -n $own_cluster ]]; then
  dir=$(mktemp -d /tmp/kd-chart-cluster.XXXXXX)
  trap 'bash "$ROOT/tests/e2e/cluster.sh" down "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
  bash "$ROOT/tests/e2e/cluster.sh" up "$dir" || { echo "0 passed, 1 failed"; exit 1; }
  args+=(--cluster "$dir")
fi

# cert-manager's real CRDs (rendered from its chart in the Go module) for the cluster checks
for a in "${args[@]+"${args[@]}"}"; do
  if [[ $a == --cluster ]]; then
    CRDS=${CERT_MANAGER_CRDS:-$(tool cert-manager-crds)} || { echo "0 passed, 1 failed"; exit 1; }
    args+=(--cert-manager-crds "$CRDS")
    break
  fi
done

python3 "$HERE/test_chart.py" --helm "$HELM" --kubectl "$KUBECTL" "${args[@]+"${args[@]}"}"
