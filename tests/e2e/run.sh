#!/usr/bin/env bash
# End-to-end test of kubedojo-data-api behind a real kube-apiserver (issue #5).
#
# Usage:
#   tests/e2e/run.sh [--keep] [--dir DIR]
#     --keep     leave the control plane, our server and kubelet-sim running (prints how to
#                use and stop them) instead of cleaning up
#     --dir DIR  work in DIR (default: a new mktemp -d); removed at the end unless --keep
#
# What it does: builds our binary (cargo build --release --locked, or $KUBEDOJO_BIN),
# starts etcd + kube-apiserver (tests/e2e/cluster.sh) with the aggregation layer and a
# netns/veth address, applies manifests/namespace.yaml and rbac.yaml (namespace
# kubedojo-system), and runs our server the way a pod
# would: bound only by that RBAC (ServiceAccount token from `kubectl create token`),
# trusting what the extension-apiserver-authentication ConfigMap says, serving a
# certificate made here whose CA goes into the APIServices' caBundle. The Service and
# APIServices come from manifests/ (metrics.k8s.io from its metrics-server-takeover
# component) and a hand-made EndpointSlice routes the Service to
# our process (--enable-aggregator-routing=true). kubelet-sim's Nodes and Pods are
# registered through the API. Then every check goes through kube-apiserver with the
# pinned kubectl. Prints `N passed, M failed` last; exits non-zero on any failure.
# Every process, the netns and the work dir are removed on exit (trap), also on failure
# or SIGTERM/Ctrl-C; on failure the server's, kube-apiserver's and kubelet-sim's logs are
# printed first. Warm run: about 50 s.
#
# Note: a request kube-apiserver's own RBAC denies is answered 403 by kube-apiserver and
# never proxied, so alice's 403s through the aggregator test kube-apiserver plus our
# manifests; our server's delegated SubjectAccessReview is tested straight against it with
# the front-proxy client certificate (same message text).
#
# Needs root (network namespace), openssl, curl, python3, iproute2; builds the pinned Go
# tools with tests/e2e/tools.sh if they are missing.
#
# Environment: KUBEDOJO_BIN (skip cargo build), KUBEDOJO_E2E_NODES (3),
# KUBEDOJO_E2E_PODS_PER_NODE (4), KUBEDOJO_E2E_V (our server's -v, default 1),
# KUBEDOJO_E2E_LOG_FORMAT (text or json; the log checks read either).
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$E2E_DIR/../.." && pwd)
# shellcheck source=cluster.sh
. "$E2E_DIR/cluster.sh"
OBJ="python3 $E2E_DIR/e2e_objects.py"

KEEP=false
DIR=
while (($#)); do
  case "$1" in
    --keep) KEEP=true ;;
    --dir) DIR=${2:?--dir needs a directory} && shift ;;
    --dir=*) DIR=${1#--dir=} ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "unknown argument: $1 (try --help)" >&2
      exit 2
      ;;
  esac
  shift
done

NODES=${KUBEDOJO_E2E_NODES:-3}
PODS_PER_NODE=${KUBEDOJO_E2E_PODS_PER_NODE:-4}
SVC=kubedojo-data-api
SVC_NS=kubedojo-system # the lab's namespace, as in manifests/
SA=kubedojo-data-api
APISERVICES=(v1alpha1.data.kubedojo.io v1beta1.metrics.k8s.io)
T0=$SECONDS

log() { printf '[e2e %3ds] %s\n' "$((SECONDS - T0))" "$*" >&2; }
die() {
  printf '[e2e] ERROR: %s\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------- preflight

[[ $(id -u) == 0 ]] || die "needs root: the aggregator reaches our server through a veth address in a network namespace (cluster.sh netns-up)"
for c in openssl curl python3 ip ss cargo; do
  if [[ $c == cargo && -n ${KUBEDOJO_BIN:-} ]]; then continue; fi
  command -v "$c" >/dev/null || die "$c is required"
done

log "pinned tools (tests/e2e/tools.sh)"
KUBECTL=$("$E2E_DIR/tools.sh" kubectl | tail -n1)
KUBE_APISERVER_BIN=$("$E2E_DIR/tools.sh" kube-apiserver | tail -n1)
ETCD_BIN=$("$E2E_DIR/tools.sh" etcd | tail -n1)
KUBECTL_BIN=$KUBECTL
export KUBE_APISERVER_BIN ETCD_BIN KUBECTL_BIN

if [[ -n ${KUBEDOJO_BIN:-} ]]; then
  BIN=$KUBEDOJO_BIN
  [[ -x $BIN ]] || die "KUBEDOJO_BIN=$BIN is not an executable"
else
  log "cargo build --release --locked"
  (cd "$ROOT" && cargo build --release --locked --bin kubedojo-data-api) >&2 || die "cargo build failed"
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/kubedojo-data-api
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
if [[ -n ${KUBEDOJO_BIN:-} ]]; then
  BUILD_REV="KUBEDOJO_BIN=$KUBEDOJO_BIN"
else
  BUILD_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  git -C "$ROOT" diff --quiet HEAD 2>/dev/null || BUILD_REV+="+dirty"
fi
log "server binary: $BIN ($BUILD_REV)"

# ---------------------------------------------------------------- work dir and cleanup

if [[ -z $DIR ]]; then
  DIR=$(mktemp -d "${TMPDIR:-/tmp}/kubedojo-e2e.XXXXXX")
  OWN_DIR=true
else
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  OWN_DIR=false
fi
export KUBECACHEDIR=$DIR/kube-cache # no stale discovery from earlier runs
PASS=0
FAIL=0
FAILED=()
RESULTS=$DIR/results

print_logs() {
  local f
  for f in kubedojo-data-api kd-pg-a kd-pg-b postgres kube-apiserver kubelet-sim; do
    [[ -s $DIR/$f.log ]] || continue
    printf '\n----- %s.log (last 150 lines of %s) -----\n' "$f" "$DIR/$f.log" >&2
    tail -n 150 "$DIR/$f.log" >&2
  done
  printf -- '----- end of logs -----\n' >&2
}

# kill_tree PID: PID and its descendants (a check in progress and its kubectl/curl)
kill_tree() {
  local c
  for c in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$c"; done
  kill "$1" 2>/dev/null
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  [[ -z ${CHECK_PID:-} ]] || kill_tree "$CHECK_PID"
  if ((rc != 0 || FAIL > 0)); then
    if ((rc != 0 && PASS + FAIL == 0)); then
      log "set-up failed (rc=$rc)"
      FAIL=1
      FAILED=("set-up (rc=$rc, see above)")
    fi
    print_logs
  fi
  if [[ $KEEP == true ]]; then
    cat >&2 <<EOF

--keep: everything is still running in $DIR
  export KUBECONFIG=$DIR/admin.kubeconfig       # admin (system:masters)
  export KUBECONFIG=$DIR/alice.kubeconfig       # alice (Role: get/list datarecords in default)
  logs: $DIR/{kubedojo-data-api,kube-apiserver,kubelet-sim,etcd}.log
  stop: $E2E_DIR/cluster.sh down $DIR && rm -rf $DIR
EOF
  else
    kd_cluster_down "$DIR" 2>/dev/null
    if [[ $OWN_DIR == true ]]; then rm -rf "$DIR"; fi
  fi
  ((rc < 128)) || log "interrupted (rc=$rc): the checks below are incomplete"
  if ((PASS + FAIL > 0)); then
    log "wall time $((SECONDS - T0))s, server: $BUILD_REV"
    if ((FAIL > 0)); then
      printf 'failed checks:\n' >&2
      printf '  - %s\n' "${FAILED[@]}" >&2
    fi
    printf '%d passed, %d failed\n' "$PASS" "$FAIL"
  fi
  ((rc == 0 && FAIL > 0)) && rc=1
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- check framework

# check NAME CMD...: runs CMD (in a subshell; it must return non-zero on failure and
# print why), counts it and prints PASS/FAIL with CMD's output indented on failure.
# The check runs in the background and the shell `wait`s for it, so that Ctrl-C / SIGTERM
# reach the traps (and the cleanup) at once instead of after the check.
CHECK_PID=
check() {
  local name=$1 out rc=0
  shift
  (
    set +e
    "$@"
  ) >"$DIR/check.out" 2>&1 &
  CHECK_PID=$!
  wait "$CHECK_PID" || rc=$?
  CHECK_PID=
  out=$(cat "$DIR/check.out")
  if ((rc == 0)); then
    PASS=$((PASS + 1))
    printf 'PASS  %s\n' "$name" >&2
  else
    FAIL=$((FAIL + 1))
    FAILED+=("$name")
    printf 'FAIL  %s\n' "$name" >&2
    [[ -z $out ]] || { sed 's/^/        /' <<<"$out" | head -n 60 >&2 || true; }
  fi
  printf '%s\t%s\n' "$([[ $rc == 0 ]] && echo PASS || echo FAIL)" "$name" >>"$RESULTS"
}

k() { "$KUBECTL" --kubeconfig "$DIR/admin.kubeconfig" --request-timeout=30s "$@"; }
ka() { "$KUBECTL" --kubeconfig "$DIR/alice.kubeconfig" --request-timeout=30s "$@"; }

# expect_contains TEXT NEEDLE...: every NEEDLE (fixed string) occurs in TEXT
expect_contains() {
  local text=$1 n miss=0
  shift
  for n in "$@"; do
    if [[ $text != *"$n"* ]]; then
      echo "missing: $n"
      miss=1
    fi
  done
  if ((miss)); then
    printf -- '--- got:\n%s\n' "$text"
    return 1
  fi
}

# retry SECONDS CMD...: until CMD succeeds (its last output is shown on timeout)
retry() {
  local secs=$1 end out
  shift
  end=$((SECONDS + secs))
  while true; do
    if out=$("$@" 2>&1); then
      [[ -z $out ]] || printf '%s\n' "$out"
      return 0
    fi
    if ((SECONDS >= end)); then
      printf 'still failing after %ss:\n%s\n' "$secs" "$out"
      return 1
    fi
    sleep 2
  done
}

server_supports() { grep -q -- "$1" "$DIR/server-help.txt"; }

# ---------------------------------------------------------------- control plane

log "work dir $DIR"
kd_cluster_up "$DIR"
kd_netns_up "$DIR"
# shellcheck disable=SC1091
. "$DIR/cluster.env"
# shellcheck disable=SC1091
. "$DIR/netns.env"
[[ $KD_AGGREGATOR_ROUTING == true ]] || die "run.sh needs KUBEDOJO_AGGREGATOR_ROUTING=true (EndpointSlice routing)"

ADMIN_USER=$(openssl x509 -in "$KD_ADMIN_CRT" -noout -subject -nameopt multiline | sed -n 's/^ *commonName *= *//p')
[[ -n $ADMIN_USER ]] || die "cannot read the admin certificate's CN"
log "admin.kubeconfig user: $ADMIN_USER"

# Our manifests (the same files `kubectl apply -k manifests/` installs)
manifest() {
  [[ -f $ROOT/manifests/$1 ]] || die "manifests/$1 is missing"
  echo "$ROOT/manifests/$1"
}
RBAC_YAML=$(manifest rbac.yaml)
SERVICE_YAML=$(manifest service.yaml)
APISERVICE_YAML=$(manifest apiservice.yaml)
# metrics.k8s.io is the metrics-server-takeover component (the checks below use kubectl top)
METRICS_APISERVICE_YAML=$(manifest components/metrics-server-takeover/apiservice.yaml)

# ---------------------------------------------------------------- PKI: our serving cert, alice

log "serving certificate (own CA) and alice's client certificate"
mkdir -p "$DIR/serving"
(
  cd "$DIR/serving"
  ca_ext='basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\nsubjectKeyIdentifier=hash'
  srv_ext='basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid'
  srv_ext+="\nsubjectAltName=DNS:$SVC,DNS:$SVC.$SVC_NS,DNS:$SVC.$SVC_NS.svc,DNS:$SVC.$SVC_NS.svc.cluster.local,IP:$KD_EXT_HOST_IP,IP:127.0.0.1"
  _kd_cert serving-ca "/CN=kubedojo-data-api-e2e-serving-ca" "$ca_ext"
  _kd_cert tls "/CN=$SVC.$SVC_NS.svc" "$srv_ext" serving-ca
)
(
  cd "$KD_PKI"
  _kd_cert alice "/CN=alice" 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nauthorityKeyIdentifier=keyid' ca
)

# kubeconfig FILE USER (cert|token) CRED [KEY]
write_kubeconfig() {
  local out=$1 user=$2 kind=$3 cred=$4 key=${5:-} userblock
  if [[ $kind == token ]]; then
    userblock="    token: $cred"
  else
    userblock="    client-certificate-data: $(base64 -w0 <"$cred")
    client-key-data: $(base64 -w0 <"$key")"
  fi
  cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: $KD_APISERVER_URL
    certificate-authority-data: $(base64 -w0 <"$KD_CA_CRT")
users:
- name: $user
  user:
$userblock
contexts:
- name: e2e
  context: {cluster: e2e, user: $user}
current-context: e2e
EOF
  chmod 600 "$out"
}
write_kubeconfig "$DIR/alice.kubeconfig" alice cert "$KD_PKI/alice.crt" "$KD_PKI/alice.key"

# ---------------------------------------------------------------- RBAC and our identity

log "applying $(realpath --relative-to="$ROOT" "$RBAC_YAML")"
k apply -f "$(manifest namespace.yaml)" >&2
k apply -f "$RBAC_YAML" >&2
k -n "$SVC_NS" get serviceaccount "$SA" >/dev/null 2>&1 || k -n "$SVC_NS" create serviceaccount "$SA" >&2
TOKEN=$(k -n "$SVC_NS" create token "$SA" --duration=2h) || die "kubectl create token failed"
write_kubeconfig "$DIR/server.kubeconfig" "system:serviceaccount:$SVC_NS:$SA" token "$TOKEN"

# alice: get/list datarecords in default only
k apply -f - >&2 <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: e2e-datarecord-reader, namespace: default}
rules:
- apiGroups: [data.kubedojo.io]
  resources: [datarecords]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: e2e-alice-datarecord-reader, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: e2e-datarecord-reader}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}
EOF

# ---------------------------------------------------------------- kubelet-sim (or stand-in)

"$BIN" --help >"$DIR/server-help.txt" 2>&1 || true
SIM=false
if "$BIN" kubelet-sim --help >/dev/null 2>&1; then SIM=true; fi
SIM_FIRST=127.1.$((RANDOM % 200 + 20)).1 # a /24 of the loopback range per run
SIM_PORT=10250
OBJECTS=$DIR/sim-objects.json
if [[ $SIM == true ]]; then
  log "starting kubelet-sim: $NODES nodes x $PODS_PER_NODE pods from $SIM_FIRST:$SIM_PORT"
  SIM_ARGS=(--nodes "$NODES" --pods-per-node "$PODS_PER_NODE" --first-address "$SIM_FIRST"
    --port "$SIM_PORT" --objects-out "$OBJECTS" --ca-out "$DIR/sim-ca.crt")
  # like a real kubelet, accept only our server's ServiceAccount token
  if "$BIN" kubelet-sim --help 2>&1 | grep -- --token >/dev/null; then
    SIM_ARGS+=(--token "$TOKEN")
  fi
  _kd_start "$DIR" kubelet-sim "$BIN" kubelet-sim "${SIM_ARGS[@]}"
  for ((i = 0; i < 120; i++)); do
    grep -q "kubelet-sim serving $NODES nodes" "$DIR/kubelet-sim.log" 2>/dev/null && break
    _kd_alive "$DIR/kubelet-sim.pid" || die "kubelet-sim exited (log: $DIR/kubelet-sim.log)"
    sleep 0.25
  done
  grep -q "kubelet-sim serving $NODES nodes" "$DIR/kubelet-sim.log" || die "kubelet-sim did not get ready in 30s"
  [[ -s $OBJECTS ]] || die "kubelet-sim wrote no --objects-out file"
else
  log "WARNING: this build has no 'kubelet-sim' subcommand: registering STAND-IN Nodes at $SIM_FIRST.. where nothing listens; the metrics checks will fail"
  $OBJ standin "$OBJECTS" 2 2 "$SIM_FIRST" "$SIM_PORT"
fi

log "registering Nodes and Pods through the API"
while read -r ns; do
  k get namespace "$ns" >/dev/null 2>&1 || k create namespace "$ns" >&2
done < <($OBJ namespaces "$OBJECTS")
$OBJ nodes-list "$OBJECTS" | k create -f - >&2
$OBJ pods-list "$OBJECTS" | k create -f - >&2
while read -r ns name patch; do
  k -n "$ns" patch pod "$name" --subresource=status --type=merge -p "$patch" >/dev/null ||
    die "cannot set pod $ns/$name Running via /status"
done < <($OBJ pod-status "$OBJECTS")

# ---------------------------------------------------------------- our server

PORT=$(_kd_free_port)
SERVER_ARGS=(
  --secure-port="$PORT"
  --bind-address="$KD_EXT_HOST_IP"
  --tls-cert-file="$DIR/serving/tls.crt"
  --tls-private-key-file="$DIR/serving/tls.key"
  --kubeconfig="$DIR/server.kubeconfig"
  -v "${KUBEDOJO_E2E_V:-1}"
  --log-format="${KUBEDOJO_E2E_LOG_FORMAT:-text}"
)
MISSING_FLAGS=()
# add_flag FLAG[=VALUE]: passed only if --help lists it (so an older build still starts)
add_flag() {
  if server_supports "${1%%=*}"; then SERVER_ARGS+=("$1"); else MISSING_FLAGS+=("${1%%=*}"); fi
}
add_flag --metric-resolution=10s
add_flag --kubelet-request-timeout=5s # must be <= 90% of the resolution
if [[ $SIM == true && -s $DIR/sim-ca.crt ]]; then
  add_flag --kubelet-certificate-authority="$DIR/sim-ca.crt"
else
  add_flag --kubelet-insecure-tls
fi
add_flag --kubelet-preferred-address-types=InternalIP
add_flag --kubelet-use-node-status-port
((${#MISSING_FLAGS[@]} == 0)) || log "WARNING: the server's --help lacks: ${MISSING_FLAGS[*]} (not passed)"

log "starting kubedojo-data-api on $KD_EXT_HOST_IP:$PORT"
NO_COLOR=1 _kd_start "$DIR" kubedojo-data-api "$BIN" "${SERVER_ARGS[@]}"
SERVER_URL=https://$KD_EXT_HOST_IP:$PORT
server_up() { curl -sS -o /dev/null --max-time 2 --cacert "$DIR/serving/serving-ca.crt" "$SERVER_URL/livez"; }
_kd_wait "$DIR" kubedojo-data-api 30 server_up

# ---------------------------------------------------------------- Service, EndpointSlice, APIServices

log "applying $(realpath --relative-to="$ROOT" "$SERVICE_YAML"), EndpointSlice -> $KD_EXT_HOST_IP:$PORT, $(realpath --relative-to="$ROOT" "$APISERVICE_YAML")"
k apply -f "$SERVICE_YAML" >&2
SVC_PORT_NAME=$(k -n "$SVC_NS" get service "$SVC" -o 'jsonpath={.spec.ports[0].name}')
k apply -f - >&2 <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $SVC-e2e
  namespace: $SVC_NS
  labels:
    kubernetes.io/service-name: $SVC
    endpointslice.kubernetes.io/managed-by: kubedojo-e2e
addressType: IPv4
endpoints:
- addresses: ["$KD_EXT_HOST_IP"]
  conditions: {ready: true}
ports:
- {name: "$SVC_PORT_NAME", port: $PORT, protocol: TCP}
EOF
CA_BUNDLE=$(base64 -w0 <"$DIR/serving/serving-ca.crt")
k apply -f "$APISERVICE_YAML" -f "$METRICS_APISERVICE_YAML" >&2
for a in "${APISERVICES[@]}"; do
  k patch apiservice "$a" --type=merge -p "{\"spec\":{\"caBundle\":\"$CA_BUNDLE\",\"insecureSkipTLSVerify\":false}}" >&2
done
log "set-up done in $((SECONDS - T0))s; running checks"
echo >&2

# ================================================================ checks

check_server_flags() {
  local f lacking=()
  for f in --secure-port --bind-address --tls-cert-file --tls-private-key-file --cert-dir \
    --kubeconfig --metric-resolution --kubelet-insecure-tls --kubelet-certificate-authority \
    --kubelet-preferred-address-types --kubelet-use-node-status-port --kubelet-port \
    --records-file --log-format; do
    server_supports "$f" || lacking+=("$f")
  done
  ((${#lacking[@]} == 0)) || {
    echo "kubedojo-data-api --help lacks: ${lacking[*]}"
    return 1
  }
}
check "server --help has every contracted serve flag" check_server_flags
check_sim() {
  [[ $SIM == true ]] || {
    echo "no 'kubelet-sim' subcommand in this build: Nodes are stand-ins where nothing listens"
    return 1
  }
}
check "kubelet-sim subcommand exists and served $NODES nodes" check_sim

apiservice_available() { [[ $(k get apiservice "$1" -o 'jsonpath={.status.conditions[?(@.type=="Available")].status}' 2>/dev/null) == True ]]; }
check_server_identity() {
  local who can
  who=$("$KUBECTL" --kubeconfig "$DIR/server.kubeconfig" auth whoami -o 'jsonpath={.status.userInfo.username}') || return 1
  [[ $who == "system:serviceaccount:$SVC_NS:$SA" ]] || {
    echo "server kubeconfig authenticates as '$who'"
    return 1
  }
  for can in "list nodes" "watch pods" "create tokenreviews.authentication.k8s.io" \
    "create subjectaccessreviews.authorization.k8s.io" "get nodes/metrics"; do
    # shellcheck disable=SC2086 # word splitting of verb/resource intended
    "$KUBECTL" --kubeconfig "$DIR/server.kubeconfig" auth can-i $can -q || {
      echo "rbac.yaml does not let the server: $can"
      return 1
    }
  done
  "$KUBECTL" --kubeconfig "$DIR/server.kubeconfig" -n kube-system auth can-i get configmap/extension-apiserver-authentication -q || {
    echo "rbac.yaml does not let the server read the extension-apiserver-authentication ConfigMap"
    return 1
  }
  for can in "list secrets -A" "create pods" "get configmaps -n default" "list datarecords.data.kubedojo.io"; do
    # shellcheck disable=SC2086
    if "$KUBECTL" --kubeconfig "$DIR/server.kubeconfig" auth can-i $can -q 2>/dev/null; then
      echo "the server's identity is allowed more than it needs: $can"
      return 1
    fi
  done
}
check "server runs as its ServiceAccount, bound only by manifests/rbac.yaml" check_server_identity

check_available() {
  local a rc=0 end=$((SECONDS + 60)) pending
  while true; do
    pending=()
    for a in "${APISERVICES[@]}"; do apiservice_available "$a" || pending+=("$a"); done
    ((${#pending[@]} > 0 && SECONDS < end)) || break
    sleep 1
  done
  for a in "${pending[@]}"; do
    echo "apiservice/$a not Available after 60s:"
    k get apiservice "$a" -o 'jsonpath={range .status.conditions[*]}  {.type}={.status} {.reason}: {.message}{"\n"}{end}'
    rc=1
  done
  return $rc
}
check "APIServices ${APISERVICES[*]} reach Available=True" check_available
AVAILABLE=false
[[ $(tail -n1 "$RESULTS") == PASS* ]] && AVAILABLE=true

check_api_resources() {
  local out err rc=0
  out=$(k api-resources 2>"$DIR/api-resources.err") || rc=$?
  err=$(cat "$DIR/api-resources.err")
  if ((rc != 0)) || [[ -n $err ]]; then
    printf 'kubectl api-resources rc=%s, stderr:\n%s\n' "$rc" "$err"
    return 1
  fi
  local -a want=(
    '^datarecords +dr +data\.kubedojo\.io/v1alpha1 +true +DataRecord$'
    '^nodes +metrics\.k8s\.io/v1beta1 +false +NodeMetrics$'
    '^pods +metrics\.k8s\.io/v1beta1 +true +PodMetrics$'
  )
  local re miss=0
  for re in "${want[@]}"; do
    grep -Eq "$re" <<<"$out" || {
      echo "no line matching /$re/"
      miss=1
    }
  done
  ((miss == 0)) || {
    grep -E 'kubedojo|metrics' <<<"$out"
    return 1
  }
}
# aggregated discovery refreshes right after Available, but allow a little time
check "kubectl api-resources lists datarecords and metrics.k8s.io nodes/pods, no errors" retry 30 check_api_resources

check_get_all() {
  local out names
  out=$(k get dr -A) || return 1
  expect_contains "$out" NAMESPACE user-config feature-flags metrics-config || return 1
  names=$(k get dr -A -l '!data.kubedojo.io/source' --no-headers -o custom-columns=NS:.metadata.namespace,NAME:.metadata.name | sort | tr -s ' ')
  [[ $names == $'default feature-flags\ndefault user-config\nmonitoring metrics-config' ]] || {
    printf 'records (namespace name):\n%s\n' "$names"
    return 1
  }
}
check "kubectl get dr -A returns the 3 seed records" check_get_all

check_get_ns() {
  local names
  names=$(k get dr -n default -l '!data.kubedojo.io/source' --no-headers -o custom-columns=NAME:.metadata.name | sort) || return 1
  [[ $names == $'feature-flags\nuser-config' ]] || {
    printf 'got:\n%s\n' "$names"
    return 1
  }
}
check "kubectl get dr -n default returns only default's records" check_get_ns

check_get_yaml() {
  local out
  out=$(k get dr user-config -n default -o yaml) || return 1
  expect_contains "$out" "apiVersion: data.kubedojo.io/v1alpha1" "kind: DataRecord" "name: user-config" \
    "namespace: default" "uid: a1b2c3d4-0001-0001-0001-000000000001" "resourceVersion: " \
    "creationTimestamp: " "source: postgres" "query: SELECT * FROM config WHERE env='production'" \
    "max_connections: \"100\"" "timeout_ms: \"5000\"" "log_level: info" "syncStatus: Current"
}
check "kubectl get dr user-config -n default -o yaml is the full object" check_get_yaml

check_jsonpath() {
  local out
  out=$(k get dr user-config -n default -o 'jsonpath={.spec.data}') || return 1
  $OBJ check-json-equal '{"max_connections":"100","timeout_ms":"5000","log_level":"info"}' "$out"
}
check "kubectl get dr user-config -o jsonpath='{.spec.data}'" check_jsonpath

check_describe() {
  local out
  out=$(k describe dr user-config -n default) || return 1
  grep -Eq '^Name: +user-config$' <<<"$out" &&
    grep -Eq '^Namespace: +default$' <<<"$out" &&
    grep -Eq '^API Version: +data\.kubedojo\.io/v1alpha1$' <<<"$out" &&
    grep -Eq '^Kind: +DataRecord$' <<<"$out" &&
    grep -Eq '^ +Source: +postgres$' <<<"$out" &&
    grep -Eq '^ +max_connections: +100$' <<<"$out" || {
    printf 'unexpected describe output:\n%s\n' "$out"
    return 1
  }
}
check "kubectl describe dr user-config -n default" check_describe

check_explain() {
  local out
  out=$(k explain dr.spec 2>&1) || {
    echo "$out"
    return 1
  }
  # kubectl >= 1.27 prints GROUP and VERSION separately; older ones VERSION: group/version
  grep -Eq '^KIND: +DataRecord$' <<<"$out" &&
    grep -Eq '^(GROUP: +data\.kubedojo\.io|VERSION: +data\.kubedojo\.io/v1alpha1)$' <<<"$out" &&
    grep -Eq '^VERSION: +(data\.kubedojo\.io/)?v1alpha1$' <<<"$out" &&
    grep -Eq '^FIELD: +spec ' <<<"$out" &&
    grep -Eq '^ +source\b' <<<"$out" || {
    printf 'unexpected explain output:\n%s\n' "$out"
    return 1
  }
}
if [[ $AVAILABLE == true ]]; then
  check "kubectl explain dr.spec (OpenAPI through the aggregator)" retry 60 check_explain
else
  check "kubectl explain dr.spec (OpenAPI through the aggregator)" check_explain
fi

check_watch() {
  # a watch streams through the aggregator's proxy: the initial ADDED events arrive
  # while the connection stays open (ended here by timeout)
  local out rc=0
  out=$(timeout 8 "$KUBECTL" --kubeconfig "$DIR/admin.kubeconfig" get dr -n default --watch \
    --output-watch-events -o 'custom-columns=EVENT:.type,NAME:.object.metadata.name' --no-headers 2>&1) || rc=$?
  ((rc == 124)) || {
    printf 'watch ended by itself (rc=%s) instead of staying open:\n%s\n' "$rc" "$out"
    return 1
  }
  grep -Eq '^ADDED +user-config$' <<<"$out" && grep -Eq '^ADDED +feature-flags$' <<<"$out" || {
    printf 'expected ADDED user-config and feature-flags, got:\n%s\n' "$out"
    return 1
  }
}
check "kubectl get dr -n default --watch streams ADDED events through the aggregator" check_watch

check_notfound() {
  local out rc=0
  out=$(k get dr nope -n default 2>&1) || rc=$?
  ((rc != 0)) || {
    echo "exit 0, expected NotFound: $out"
    return 1
  }
  [[ $out == 'Error from server (NotFound): datarecords.data.kubedojo.io "nope" not found' ]] || {
    echo "got: $out"
    return 1
  }
}
check "kubectl get dr nope gives NotFound" check_notfound

# --- metrics through the aggregator
check_top_nodes() {
  k top node --no-headers >"$DIR/top-nodes.txt" 2>&1 || {
    cat "$DIR/top-nodes.txt"
    return 1
  }
  $OBJ check-top-nodes "$OBJECTS" "$DIR/top-nodes.txt"
}
check_top_pods() {
  k top pod -A --no-headers >"$DIR/top-pods.txt" 2>&1 || {
    cat "$DIR/top-pods.txt"
    return 1
  }
  $OBJ check-top-pods "$OBJECTS" "$DIR/top-pods.txt"
}
read -r SEL_NS SEL_APP < <($OBJ pick-selector "$OBJECTS")
check_top_selector() {
  k top pod -n "$SEL_NS" -l "app=$SEL_APP" --no-headers >"$DIR/top-sel.txt" 2>&1 || {
    cat "$DIR/top-sel.txt"
    return 1
  }
  $OBJ check-top-pods "$OBJECTS" "$DIR/top-sel.txt" "$SEL_NS" "$SEL_APP"
}
# first usage needs two scrapes (rates), 10s resolution
METRICS_WAIT=60
[[ $AVAILABLE == true && $SIM == true ]] || METRICS_WAIT=10
check "kubectl top node shows every simulated node with its usage" retry "$METRICS_WAIT" check_top_nodes
check "kubectl top pod -A shows every simulated pod with its usage" retry 20 check_top_pods
check "kubectl top pod -n $SEL_NS -l app=$SEL_APP filters by label" retry 20 check_top_selector

read -r -a CONTAINERS_OF < <($OBJ containers "$OBJECTS")
check_top_containers() {
  local ns=${CONTAINERS_OF[0]} pod=${CONTAINERS_OF[1]} got want c
  got=$(k top pod -n "$ns" "$pod" --containers --no-headers) || return 1
  got=$(awk '{print $1, $2}' <<<"$got" | sort)
  want=$(for c in "${CONTAINERS_OF[@]:2}"; do echo "$pod $c"; done | sort)
  [[ $got == "$want" ]] || {
    printf 'expected pod/container rows:\n%s\ngot:\n%s\n' "$want" "$got"
    return 1
  }
}
check "kubectl top pod ${CONTAINERS_OF[1]} --containers shows each of its containers" check_top_containers

check_top_protobuf() {
  # kubectl top asks for protobuf (its default); kube-apiserver proxies the Accept header and
  # our answer's content type is in our request log
  sed 's/\x1b\[[0-9;]*m//g' "$DIR/kubedojo-data-api.log" | grep 'metrics.k8s.io' |
    grep -E 'content_type="?application/vnd.kubernetes.protobuf' >/dev/null || {
    echo "no metrics.k8s.io request answered in protobuf in $DIR/kubedojo-data-api.log; last metrics lines:"
    sed 's/\x1b\[[0-9;]*m//g' "$DIR/kubedojo-data-api.log" | grep 'metrics.k8s.io' | tail -n 3
    return 1
  }
}
check "kubectl top got protobuf from us through the aggregator (content_type in our log)" check_top_protobuf

check_metrics_watch() {
  # kubectl get pods.metrics.k8s.io -A -w through the aggregator: every pod ADDED, then
  # MODIFIED within one resolution (10s) and a bit
  local out rc=0 pods added modified
  out=$(timeout 14 "$KUBECTL" --kubeconfig "$DIR/admin.kubeconfig" get pods.metrics.k8s.io -A -w \
    --output-watch-events -o 'custom-columns=EVENT:.type,NS:.object.metadata.namespace,NAME:.object.metadata.name' \
    --no-headers 2>&1) || rc=$?
  ((rc == 124)) || {
    printf 'watch ended by itself (rc=%s) instead of staying open:\n%s\n' "$rc" "$out"
    return 1
  }
  pods=$(grep -c . "$DIR/top-pods.txt")
  added=$(grep -c '^ADDED ' <<<"$out" || true)
  modified=$(grep -c '^MODIFIED ' <<<"$out" || true)
  ((added == pods && modified > 0)) || {
    printf 'expected %s ADDED and some MODIFIED, got %s ADDED, %s MODIFIED:\n%s\n' "$pods" "$added" "$modified" "$(head -n 20 <<<"$out")"
    return 1
  }
}
check "kubectl get pods.metrics.k8s.io -A -w streams ADDED then MODIFIED through the aggregator" check_metrics_watch

# --- identity
# request lines of our server's log by USER (ANSI colours stripped; text or JSON format)
server_requests_of() {
  sed 's/\x1b\[[0-9;]*m//g' "$DIR/kubedojo-data-api.log" |
    grep -E "(user=\"?$1\"?([[:space:],]|$)|\"user\":\"$1\")"
}
check_log_user() {
  local log=$DIR/kubedojo-data-api.log
  server_requests_of "$ADMIN_USER" | grep datarecords >/dev/null || {
    echo "no request line with user=$ADMIN_USER for datarecords in $log; last request lines seen:"
    sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E 'user' | tail -n 5
    return 1
  }
  server_requests_of "$ADMIN_USER" | grep 'metrics.k8s.io' >/dev/null || {
    echo "no request line with user=$ADMIN_USER for metrics.k8s.io in $log"
    return 1
  }
}
check "our server's log shows the real user ($ADMIN_USER) for proxied requests" check_log_user

# --- RBAC through the aggregator, with alice's real client certificate
check_alice_default() {
  local names
  names=$(ka get dr -n default -l '!data.kubedojo.io/source' --no-headers -o custom-columns=NAME:.metadata.name | sort) || return 1
  [[ $names == $'feature-flags\nuser-config' ]] || {
    printf 'got:\n%s\n' "$names"
    return 1
  }
  server_requests_of alice | grep 'namespaces/default/datarecords' >/dev/null || {
    echo "our server's log has no request of user alice (identity not passed through?)"
    return 1
  }
}
check "alice (Role in default) can list datarecords in default" check_alice_default

# expect_forbidden EXPECTED_MESSAGE CMD...
expect_forbidden() {
  local expected=$1 out rc=0
  shift
  out=$("$@" 2>&1) || rc=$?
  ((rc != 0)) || {
    printf 'allowed (exit 0):\n%s\n' "$out"
    return 1
  }
  [[ $out == "Error from server (Forbidden): $expected" ]] || {
    printf 'expected: Error from server (Forbidden): %s\n     got: %s\n' "$expected" "$out"
    return 1
  }
}
# Through the aggregator these 403s come from kube-apiserver's own RBAC, which authorizes
# every request before proxying it (alice's denied requests never reach our server);
# our server's delegated SAR answers with the same text, checked straight below.
check "alice gets 403 for datarecords in monitoring" expect_forbidden \
  'datarecords.data.kubedojo.io is forbidden: User "alice" cannot list resource "datarecords" in API group "data.kubedojo.io" in the namespace "monitoring"' \
  ka get dr -n monitoring
check "alice gets 403 for metrics.k8s.io pods" expect_forbidden \
  'pods.metrics.k8s.io is forbidden: User "alice" cannot list resource "pods" in API group "metrics.k8s.io" in the namespace "default"' \
  ka get pods.metrics.k8s.io -n default
check "alice gets 403 for metrics.k8s.io nodes" expect_forbidden \
  'nodes.metrics.k8s.io is forbidden: User "alice" cannot list resource "nodes" in API group "metrics.k8s.io" at the cluster scope' \
  ka get nodes.metrics.k8s.io

# --- straight to our server: its own delegated authn/authz
# curl_server OUTFILE CURL_ARGS... -> prints the HTTP status
curl_server() {
  local out=$1
  shift
  curl -sS -o "$out" -w '%{http_code}' --max-time 10 --cacert "$DIR/serving/serving-ca.crt" "$@"
}
DR_MON=/apis/data.kubedojo.io/v1alpha1/namespaces/monitoring/datarecords
DR_DEF=/apis/data.kubedojo.io/v1alpha1/namespaces/default/datarecords
check_front_proxy_sar() {
  # a genuine front-proxy certificate asserting alice: our server asks kube-apiserver (SAR)
  local code fp=(--cert "$KD_PKI/front-proxy-client.crt" --key "$KD_PKI/front-proxy-client.key"
    -H 'X-Remote-User: alice' -H 'X-Remote-Group: system:authenticated')
  code=$(curl_server "$DIR/fp-def.json" "${fp[@]}" "$SERVER_URL$DR_DEF") || return 1
  [[ $code == 200 ]] && grep -q '"DataRecordList"' "$DIR/fp-def.json" || {
    echo "default as alice via front-proxy: HTTP $code: $(head -c 400 "$DIR/fp-def.json")"
    return 1
  }
  code=$(curl_server "$DIR/fp-mon.json" "${fp[@]}" "$SERVER_URL$DR_MON") || return 1
  [[ $code == 403 ]] && grep -q 'datarecords.data.kubedojo.io is forbidden: User \\"alice\\" cannot list resource \\"datarecords\\" in API group \\"data.kubedojo.io\\" in the namespace \\"monitoring\\"' "$DIR/fp-mon.json" || {
    echo "monitoring as alice via front-proxy: HTTP $code: $(head -c 400 "$DIR/fp-mon.json")"
    return 1
  }
  code=$(curl_server "$DIR/fp-nodes.json" "${fp[@]}" "$SERVER_URL/apis/metrics.k8s.io/v1beta1/nodes") || return 1
  [[ $code == 403 ]] && grep -q 'nodes.metrics.k8s.io is forbidden: User \\"alice\\" cannot list resource \\"nodes\\" in API group \\"metrics.k8s.io\\" at the cluster scope' "$DIR/fp-nodes.json" || {
    echo "metrics nodes as alice via front-proxy: HTTP $code: $(head -c 400 "$DIR/fp-nodes.json")"
    return 1
  }
}
check "our server's delegated SAR: alice via front-proxy cert -> 200 default, exact 403 for monitoring and metrics nodes" check_front_proxy_sar

check_forged() {
  local code rc=0 path
  for path in "$DR_MON" /apis/metrics.k8s.io/v1beta1/nodes /apis/metrics.k8s.io/v1beta1/pods; do
    # no client certificate at all
    code=$(curl_server "$DIR/forged.json" -H 'X-Remote-User: system:admin' -H 'X-Remote-Group: system:masters' "$SERVER_URL$path") || code=000
    if [[ $code != 401 && $code != 403 ]] || grep -qE '"(DataRecordList|NodeMetricsList|PodMetricsList)"' "$DIR/forged.json"; then
      echo "no client cert, forged X-Remote-User system:admin on $path: HTTP $code: $(head -c 300 "$DIR/forged.json")"
      rc=1
    fi
    # a client certificate from the cluster CA (not the front-proxy CA): headers must be ignored
    code=$(curl_server "$DIR/forged.json" --cert "$KD_PKI/alice.crt" --key "$KD_PKI/alice.key" \
      -H 'X-Remote-User: system:admin' -H 'X-Remote-Group: system:masters' "$SERVER_URL$path") || code=000
    if [[ $code != 401 && $code != 403 ]] || grep -qE '"(DataRecordList|NodeMetricsList|PodMetricsList)"' "$DIR/forged.json"; then
      echo "alice's cert + forged X-Remote-User system:admin on $path: HTTP $code: $(head -c 300 "$DIR/forged.json")"
      rc=1
    fi
  done
  return $rc
}
check "forged X-Remote-User/Group without a front-proxy cert: 401/403, never data" check_forged

# --- drop-in for metrics-server: metrics-server's own manifest/chart args start our server
check_dropin_args() {
  local port code i
  port=$(_kd_free_port)
  mkdir -p "$DIR/dropin-certs"
  # metrics-server's manifests/base and chart defaults, verbatim; only --kubeconfig and the
  # bind address replace the in-cluster service account and the pod network.
  NO_COLOR=1 _kd_start "$DIR" dropin "$BIN" \
    --cert-dir="$DIR/dropin-certs" \
    --secure-port="$port" \
    --kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname \
    --kubelet-use-node-status-port \
    --metric-resolution=15s \
    --kubelet-insecure-tls \
    --kubeconfig="$DIR/server.kubeconfig" \
    --bind-address=127.0.0.1
  for ((i = 0; i < 160; i++)); do
    code=$(curl -sk -o "$DIR/dropin-nodes.json" -w '%{http_code}' --max-time 2 \
      --cert "$KD_PKI/admin.crt" --key "$KD_PKI/admin.key" \
      "https://127.0.0.1:$port/apis/metrics.k8s.io/v1beta1/nodes") || code=000
    if [[ $code == 200 ]] && [[ $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["items"]))' "$DIR/dropin-nodes.json") == "$NODES" ]]; then
      curl -sk --max-time 2 "https://127.0.0.1:$port/readyz" | grep -x ok >/dev/null || { echo "not ready"; return 1; }
      kill_tree "$(cat "$DIR/dropin.pid")" 2>/dev/null || true
      return 0
    fi
    _kd_alive "$DIR/dropin.pid" || { echo "exited:"; tail -n 20 "$DIR/dropin.log"; return 1; }
    sleep 0.25
  done
  echo "no NodeMetrics for all $NODES nodes within 40s (last HTTP $code)"
  tail -n 20 "$DIR/dropin.log"
  kill_tree "$(cat "$DIR/dropin.pid")" 2>/dev/null || true
  return 1
}
check "metrics-server's own args (--cert-dir, --secure-port, --kubelet-preferred-address-types, --kubelet-use-node-status-port, --metric-resolution=15s, --kubelet-insecure-tls) start our server and it serves NodeMetrics" check_dropin_args

# --- kubelets gone: discovery must keep working
if [[ $SIM == true ]]; then
  log "stopping kubelet-sim; waiting 25s (2 resolutions + slack)"
  _kd_stop "$DIR" kubelet-sim
  sleep 25 &
  wait $!
fi
check_discovery_without_kubelets() {
  local err rc=0 a
  k get --raw /apis/metrics.k8s.io/v1beta1 >/dev/null || rc=1
  k get --raw /apis/data.kubedojo.io/v1alpha1 >/dev/null || rc=1
  k api-resources >/dev/null 2>"$DIR/api-resources2.err" || rc=1
  err=$(cat "$DIR/api-resources2.err")
  [[ -z $err ]] || {
    printf 'kubectl api-resources stderr:\n%s\n' "$err"
    rc=1
  }
  for a in "${APISERVICES[@]}"; do
    [[ $(k get apiservice "$a" -o 'jsonpath={.status.conditions[?(@.type=="Available")].status}') == True ]] || {
      echo "apiservice/$a no longer Available: $(k get apiservice "$a" -o 'jsonpath={.status.conditions[?(@.type=="Available")].message}')"
      rc=1
    }
  done
  k get dr -A >/dev/null || rc=1
  return $rc
}
check "with every kubelet stopped, discovery and APIServices still answer" check_discovery_without_kubelets

# DataRecords: the lab's records, computed records, a restart mid-watch (issue 10)
. "$E2E_DIR/records.sh"

# DataRecords from a PostgreSQL table, two replicas (issue 11); replaces our server, so last
. "$E2E_DIR/postgres.sh"
