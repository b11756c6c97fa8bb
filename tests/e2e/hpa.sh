#!/usr/bin/env bash
# A real HorizontalPodAutoscaler driven by kube-controller-manager, reading our
# metrics.k8s.io (issue 12 §3).
#
#   tests/e2e/hpa.sh [--keep]
#
# Control plane: etcd + kube-apiserver (cluster.sh) and kube-controller-manager with only
# the deployment, replicaset and horizontal-pod-autoscaler controllers (per-controller
# ServiceAccount credentials, so the HPA asks us as
# system:serviceaccount:kube-system:horizontal-pod-autoscaler, authorised by the bootstrap
# RBAC). Our server runs behind kube-aggregator as in run.sh; kubelet-sim serves two Nodes
# with no pods, and tests/e2e/hpa_kubelet.py plays scheduler and kubelet for namespace
# `hpa`: it binds the Deployments' Pods, marks them Running/Ready and has kubelet-sim serve
# the usage a load file gives each app (its control endpoint).
#
# Checks: an HPA on CPU utilization (50% of a 100m request) scales its Deployment from 1 to
# its maximum of 4 under 400m per pod, and back to 1 under 10m; an HPA on memory
# (AverageValue 100Mi) does the same under 500Mi / 20Mi; `kubectl describe hpa` shows the
# current values we serve; the HPA's requests reached us and were answered in protobuf
# (content_type in our request log).
#
# Needs root (network namespace), openssl, curl, python3, iproute2.
# Environment: KUBEDOJO_BIN (skip cargo build), KUBEDOJO_E2E_V (our server's -v, default 1).
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$E2E_DIR/../.." && pwd)
# shellcheck source=cluster.sh
. "$E2E_DIR/cluster.sh"
OBJ="python3 $E2E_DIR/e2e_objects.py"

KEEP=false
case "${1:-}" in
  --keep) KEEP=true ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 0
    ;;
  "") ;;
  *)
    echo "unknown argument: $1 (try --help)" >&2
    exit 2
    ;;
esac

SVC=kubedojo-data-api
SVC_NS=kubedojo-system
SA=kubedojo-data-api
NS=hpa
HPA_USER=system:serviceaccount:kube-system:horizontal-pod-autoscaler
T0=$SECONDS
log() { printf '[hpa %3ds] %s\n' "$((SECONDS - T0))" "$*" >&2; }
die() {
  printf '[hpa] ERROR: %s\n' "$*" >&2
  exit 1
}

[[ $(id -u) == 0 ]] || die "needs root (cluster.sh netns-up)"
KUBECTL=$("$E2E_DIR/tools.sh" kubectl | tail -n1)
KUBE_APISERVER_BIN=$("$E2E_DIR/tools.sh" kube-apiserver | tail -n1)
ETCD_BIN=$("$E2E_DIR/tools.sh" etcd | tail -n1)
KCM_BIN=$("$E2E_DIR/tools.sh" kube-controller-manager | tail -n1)
KUBECTL_BIN=$KUBECTL
export KUBE_APISERVER_BIN ETCD_BIN KUBECTL_BIN

if [[ -n ${KUBEDOJO_BIN:-} ]]; then
  BIN=$KUBEDOJO_BIN
else
  (cd "$ROOT" && cargo build --release --locked --bin kubedojo-data-api) >&2 || die "cargo build failed"
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/kubedojo-data-api
fi
[[ -x $BIN ]] || die "$BIN is not an executable"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

DIR=$(mktemp -d "${TMPDIR:-/tmp}/kubedojo-hpa.XXXXXX")
export KUBECACHEDIR=$DIR/kube-cache
PASS=0
FAIL=0
FAILED=()

cleanup() {
  local rc=$?
  trap - EXIT
  if ((FAIL > 0 || rc != 0)); then
    for f in hpa-kubelet kube-controller-manager kubedojo-data-api kubelet-sim; do
      [[ -s $DIR/$f.log ]] || continue
      printf '\n----- %s.log (last 60 lines) -----\n' "$f" >&2
      tail -n 60 "$DIR/$f.log" >&2 || true
    done
  fi
  if [[ $KEEP == true ]]; then
    log "kept: $DIR (stop with: bash $E2E_DIR/cluster.sh down $DIR)"
  else
    kd_cluster_down "$DIR" 2>/dev/null
    rm -rf "$DIR"
  fi
  log "wall time $((SECONDS - T0))s"
  if ((FAIL > 0)); then printf '  - %s\n' "${FAILED[@]}" >&2; fi
  printf '%d passed, %d failed\n' "$PASS" "$FAIL"
  ((rc == 0 && FAIL > 0)) && rc=1
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# check NAME CMD...: counts CMD's success, prints its output on failure
check() {
  local name=$1 out rc=0
  shift
  out=$("$@" 2>&1) || rc=$?
  if ((rc == 0)); then
    PASS=$((PASS + 1))
    printf 'PASS  %s\n' "$name" >&2
  else
    FAIL=$((FAIL + 1))
    FAILED+=("$name")
    printf 'FAIL  %s\n' "$name" >&2
    sed 's/^/        /' <<<"$out" | tail -n 40 >&2
  fi
}

k() { "$KUBECTL" --kubeconfig "$DIR/admin.kubeconfig" --request-timeout=30s "$@"; }

# ---------------------------------------------------------------- control plane, our server

kd_cluster_up "$DIR"
kd_netns_up "$DIR"
# shellcheck disable=SC1091
. "$DIR/cluster.env"
# shellcheck disable=SC1091
. "$DIR/netns.env"

mkdir -p "$DIR/serving"
(
  cd "$DIR/serving"
  ca_ext='basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\nsubjectKeyIdentifier=hash'
  srv_ext='basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid'
  srv_ext+="\nsubjectAltName=DNS:$SVC,DNS:$SVC.$SVC_NS,DNS:$SVC.$SVC_NS.svc,IP:$KD_EXT_HOST_IP,IP:127.0.0.1"
  _kd_cert serving-ca "/CN=kubedojo-data-api-hpa-serving-ca" "$ca_ext"
  _kd_cert tls "/CN=$SVC.$SVC_NS.svc" "$srv_ext" serving-ca
)

k apply -f "$ROOT/manifests/namespace.yaml" -f "$ROOT/manifests/rbac.yaml" >/dev/null
k -n "$SVC_NS" get serviceaccount "$SA" >/dev/null 2>&1 || k -n "$SVC_NS" create serviceaccount "$SA" >/dev/null
TOKEN=$(k -n "$SVC_NS" create token "$SA" --duration=2h)
cat >"$DIR/server.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster: {server: "$KD_APISERVER_URL", certificate-authority-data: $(base64 -w0 <"$KD_CA_CRT")}
users:
- name: sa
  user: {token: "$TOKEN"}
contexts:
- name: e2e
  context: {cluster: e2e, user: sa}
current-context: e2e
EOF

SIM_FIRST=127.1.$((RANDOM % 200 + 20)).1
CONTROL_PORT=$(_kd_free_port)
CONTROL=http://127.0.0.1:$CONTROL_PORT
_kd_start "$DIR" kubelet-sim "$BIN" kubelet-sim --nodes 2 --pods-per-node 0 \
  --first-address "$SIM_FIRST" --port 10250 --token "$TOKEN" --control-address "127.0.0.1:$CONTROL_PORT" \
  --objects-out "$DIR/sim-objects.json" --ca-out "$DIR/sim-ca.crt"
_kd_wait "$DIR" kubelet-sim 30 grep -q "kubelet-sim serving 2 nodes" "$DIR/kubelet-sim.log"
$OBJ nodes-list "$DIR/sim-objects.json" | k create -f - >/dev/null
NODES=$(k get nodes -o 'jsonpath={range .items[*]}{.metadata.name},{end}')
NODES=${NODES%,}

PORT=$(_kd_free_port)
NO_COLOR=1 _kd_start "$DIR" kubedojo-data-api "$BIN" --secure-port="$PORT" --bind-address="$KD_EXT_HOST_IP" \
  --tls-cert-file="$DIR/serving/tls.crt" --tls-private-key-file="$DIR/serving/tls.key" \
  --kubeconfig="$DIR/server.kubeconfig" --metric-resolution=10s --kubelet-request-timeout=5s \
  --kubelet-certificate-authority="$DIR/sim-ca.crt" --kubelet-preferred-address-types=InternalIP \
  --kubelet-use-node-status-port -v "${KUBEDOJO_E2E_V:-1}"
_kd_wait "$DIR" kubedojo-data-api 30 curl -sS -o /dev/null --max-time 2 \
  --cacert "$DIR/serving/serving-ca.crt" "https://$KD_EXT_HOST_IP:$PORT/livez"

k apply -f "$ROOT/manifests/service.yaml" >/dev/null
SVC_PORT_NAME=$(k -n "$SVC_NS" get service "$SVC" -o 'jsonpath={.spec.ports[0].name}')
k apply -f - >/dev/null <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $SVC-hpa
  namespace: $SVC_NS
  labels: {kubernetes.io/service-name: $SVC, endpointslice.kubernetes.io/managed-by: kubedojo-e2e}
addressType: IPv4
endpoints:
- addresses: ["$KD_EXT_HOST_IP"]
  conditions: {ready: true}
ports:
- {name: "$SVC_PORT_NAME", port: $PORT, protocol: TCP}
EOF
k apply -f "$ROOT/manifests/components/metrics-server-takeover/apiservice.yaml" >/dev/null
k patch apiservice v1beta1.metrics.k8s.io --type=merge \
  -p "{\"spec\":{\"caBundle\":\"$(base64 -w0 <"$DIR/serving/serving-ca.crt")\",\"insecureSkipTLSVerify\":false}}" >/dev/null
kd_wait_apiservice "$DIR" v1beta1.metrics.k8s.io 60 >/dev/null

# ---------------------------------------------------------------- controllers, workloads

_kd_start "$DIR" kube-controller-manager "$KCM_BIN" --kubeconfig="$DIR/admin.kubeconfig" \
  --controllers=deployment-controller,replicaset-controller,horizontal-pod-autoscaler-controller \
  --use-service-account-credentials=true --leader-elect=false --secure-port=0 \
  --horizontal-pod-autoscaler-sync-period=3s --horizontal-pod-autoscaler-downscale-stabilization=10s \
  --horizontal-pod-autoscaler-cpu-initialization-period=5s --v=2

echo '{"cpu-app": {"cpu": "400m", "memory": "30Mi"}, "mem-app": {"cpu": "5m", "memory": "500Mi"}}' >"$DIR/load.json"
_kd_start "$DIR" hpa-kubelet python3 "$E2E_DIR/hpa_kubelet.py" "$KUBECTL" "$DIR/admin.kubeconfig" \
  "$NS" "$CONTROL" "$DIR/load.json" "$NODES"

k create namespace "$NS" >/dev/null
for app in cpu-app mem-app; do
  k apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: $app, namespace: $NS}
spec:
  replicas: 1
  selector: {matchLabels: {app: $app}}
  template:
    metadata: {labels: {app: $app}}
    spec:
      containers:
      - name: app
        image: registry.example/kubedojo-sim/$app:1.0
        resources: {requests: {cpu: 100m, memory: 64Mi}}
EOF
done
k apply -f - >/dev/null <<EOF
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: cpu-app, namespace: $NS}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: cpu-app}
  minReplicas: 1
  maxReplicas: 4
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: mem-app, namespace: $NS}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: mem-app}
  minReplicas: 1
  maxReplicas: 4
  metrics:
  - type: Resource
    resource: {name: memory, target: {type: AverageValue, averageValue: 100Mi}}
EOF
log "set-up done; load high (cpu-app 400m/pod, mem-app 500Mi/pod)"

# ---------------------------------------------------------------- checks

# replicas APP: "spec ready" of the Deployment
replicas() { k -n "$NS" get deployment "$1" -o 'jsonpath={.spec.replicas} {.status.readyReplicas}'; }

# wait_replicas APP N SECONDS: until the Deployment wants and has N ready Pods
wait_replicas() {
  local app=$1 want=$2 end=$((SECONDS + $3)) got
  while ((SECONDS < end)); do
    got=$(replicas "$app")
    [[ $got == "$want $want" ]] && {
      echo "$app: $want replicas after $((SECONDS - T0))s"
      return 0
    }
    sleep 2
  done
  echo "$app: wanted $want ready replicas, have: $(replicas "$app")"
  k -n "$NS" describe hpa "$app" | tail -n 25
  return 1
}

# qty QUANTITY: its value as an integer (100m -> 0, 500Mi -> 524288000, 524288k -> 524288000)
qty() {
  python3 -c '
import re, sys
m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", sys.argv[1].strip())
scale = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
print(int(float(m.group(1)) * scale[m.group(2)]) if m and m.group(2) in scale else "")
' "$1"
}

# current HPA FIELD: the HPA's first current metric field (averageUtilization, averageValue)
current() { k -n "$NS" get hpa "$1" -o "jsonpath={.status.currentMetrics[0].resource.current.$2}"; }

# wait_current HPA FIELD LOW HIGH SECONDS: until the HPA's current metric is in [LOW, HIGH]
wait_current() {
  local hpa=$1 field=$2 lo=$3 hi=$4 end=$((SECONDS + $5)) v
  while ((SECONDS < end)); do
    v=$(qty "$(current "$hpa" "$field")")
    [[ -n $v ]] && ((v >= lo && v <= hi)) && return 0
    sleep 2
  done
  echo "$hpa: current $field not in [$lo, $hi]: $(k -n "$NS" get hpa "$hpa" -o jsonpath='{.status.currentMetrics}')"
  return 1
}

# describe_shows HPA TEXT: `kubectl describe hpa` has the line TEXT (fixed string)
describe_shows() {
  local d
  d=$(k -n "$NS" describe hpa "$1")
  grep -F -- "$2" <<<"$d" || {
    printf 'no line with %q in:\n%s\n' "$2" "$d"
    return 1
  }
}

check_describe_cpu() {
  wait_current cpu-app averageUtilization 390 410 60 || return 1
  describe_shows cpu-app "$(current cpu-app averageUtilization)% ($(current cpu-app averageValue)) / 50%"
}

check_describe_memory() {
  # 500Mi = 524288000 bytes, within 1%
  wait_current mem-app averageValue 519045120 529530880 60 || return 1
  describe_shows mem-app "resource memory on pods:  $(current mem-app averageValue) / 100Mi"
}

check_protobuf() {
  local lines
  lines=$(sed 's/\x1b\[[0-9;]*m//g' "$DIR/kubedojo-data-api.log" |
    grep "metrics.k8s.io/v1beta1/namespaces/$NS/pods" | grep -F "$HPA_USER") || {
    echo "no request of $HPA_USER for namespace $NS pods in our log"
    return 1
  }
  grep -qE 'content_type="?application/vnd.kubernetes.protobuf' <<<"$lines" || {
    printf 'the HPA was not answered in protobuf:\n%s\n' "$(tail -n 3 <<<"$lines")"
    return 1
  }
  if grep -vE 'content_type="?application/vnd.kubernetes.protobuf' <<<"$lines" | grep -q .; then
    printf 'some HPA requests were not answered in protobuf:\n%s\n' \
      "$(grep -vE 'content_type="?application/vnd.kubernetes.protobuf' <<<"$lines" | tail -n 3)"
    return 1
  fi
  echo "$(wc -l <<<"$lines") HPA requests, all answered in protobuf"
}

T_UP=$SECONDS
check "HPA on CPU utilization scales cpu-app 1 -> 4 under 400m/pod" wait_replicas cpu-app 4 120
check "HPA on memory AverageValue scales mem-app 1 -> 4 under 500Mi/pod" wait_replicas mem-app 4 60
log "scaled up in $((SECONDS - T_UP))s"
check "kubectl describe hpa cpu-app shows our 400% (400m) / 50%" check_describe_cpu
check "kubectl describe hpa mem-app shows our 500Mi / 100Mi" check_describe_memory

echo '{"cpu-app": {"cpu": "10m", "memory": "30Mi"}, "mem-app": {"cpu": "5m", "memory": "20Mi"}}' >"$DIR/load.json"
log "load low (cpu-app 10m/pod, mem-app 20Mi/pod)"
T_DOWN=$SECONDS
check "HPA on CPU utilization scales cpu-app back to 1 under 10m/pod" wait_replicas cpu-app 1 120
check "HPA on memory AverageValue scales mem-app back to 1 under 20Mi/pod" wait_replicas mem-app 1 60
log "scaled down in $((SECONDS - T_DOWN))s"
check "the HPA's requests reached us and were answered in protobuf (request log)" check_protobuf
