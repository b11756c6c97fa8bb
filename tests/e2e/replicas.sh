#!/usr/bin/env bash
# Shared set-up of tests/e2e/faults.sh and bench/soak.sh (sourced, not run): a real
# control plane (cluster.sh), kubelet-sim's fleet registered through the API, and N
# replicas of our server behind the Service, each its own endpoint.
#
# Endpoints: there is no kubelet and no controller-manager here, so this file plays both
# for our replicas. Each replica is one EndpointSlice (kubedojo-data-api-r<I>) with the
# host side veth address (cluster.sh netns-up) and the replica's own port; a prober
# (rs_prober_start) polls every replica's /readyz once a second and flips the slice's
# `ready` condition the first time the answer changes (a readinessProbe with
# periodSeconds=1, failureThreshold=1, successThreshold=1). kube-aggregator only proxies to
# ready endpoints, so a replica leaves the aggregator's rotation only when its own /readyz
# fails: nothing marks it unready at SIGTERM (a real EndpointSlice controller would, on the
# pod's deletion), which makes this stricter than a cluster.
#
# Functions (each dies on failure; globals below are set by rs_setup):
#   rs_setup DIR NODES PODS_PER_NODE [KUBELET_SIM_ARG...]
#       cluster + netns + manifests/{namespace,rbac}.yaml + our ServiceAccount token,
#       serving cert, kubelet-sim, its Nodes/Pods created with kd-load (OBJECTS_HOOK, if set,
#       is called with the objects file first, to edit it), Service + APIServices.
#   rs_start_replica I [EXTRA_SERVER_ARG...]   start replica I on a new port (RS_PORT[I]; a
#                                             restart is a new pod, with a new address)
#   rs_wait_replica_up I                      wait until it answers /livez
#   rs_stop_replica I                         SIGTERM, wait for it to exit; prints seconds
#   rs_slice I true|false                     apply replica I's EndpointSlice
#   rs_prober_start / rs_prober_stop          the readiness prober (log: DIR/prober.log)
#   rs_wait_slice_ready I SECONDS             wait until the prober has marked I ready
#   rs_cleanup                                stop the prober, then cluster.sh down DIR
#
# Environment: KUBEDOJO_BIN (else cargo build --release), KD_LOAD (else cargo build
# --release --bin kd-load), RS_RESOLUTION (our --metric-resolution, default 10s).

RS_E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RS_ROOT=$(cd "$RS_E2E_DIR/../.." && pwd)
# shellcheck source=cluster.sh
. "$RS_E2E_DIR/cluster.sh"

RS_SVC=kubedojo-data-api
RS_SVC_NS=kubedojo-system
RS_SA=kubedojo-data-api
RS_T0=${RS_T0:-$SECONDS}
declare -a RS_PORT=()

rs_log() { printf '[%s %3ds] %s\n' "${RS_NAME:-replicas}" "$((SECONDS - RS_T0))" "$*" >&2; }
rs_die() {
  printf '[%s] ERROR: %s\n' "${RS_NAME:-replicas}" "$*" >&2
  exit 1
}

k() { "$KD_KUBECTL" --kubeconfig "$RS_DIR/admin.kubeconfig" --request-timeout=30s "$@"; }

# rs_binaries: RS_BIN (our server) and RS_LOAD (kd-load), built if not given
rs_binaries() {
  local target=${CARGO_TARGET_DIR:-$RS_ROOT/target}
  if [[ -n ${KUBEDOJO_BIN:-} ]]; then
    RS_BIN=$KUBEDOJO_BIN
  else
    rs_log "cargo build --release --locked --bin kubedojo-data-api"
    (cd "$RS_ROOT" && cargo build --release --locked --bin kubedojo-data-api) >&2 || rs_die "cargo build failed"
    RS_BIN=$target/release/kubedojo-data-api
  fi
  if [[ -n ${KD_LOAD:-} ]]; then
    RS_LOAD=$KD_LOAD
  else
    rs_log "cargo build --release --locked --bin kd-load"
    (cd "$RS_ROOT" && cargo build --release --locked --bin kd-load) >&2 || rs_die "cargo build kd-load failed"
    RS_LOAD=$target/release/kd-load
  fi
  [[ -x $RS_BIN ]] || rs_die "$RS_BIN is not an executable"
  [[ -x $RS_LOAD ]] || rs_die "$RS_LOAD is not an executable"
}

rs_setup() {
  RS_DIR=${1:?rs_setup DIR NODES PODS_PER_NODE}
  local nodes=${2:?NODES} pods=${3:?PODS_PER_NODE}
  shift 3
  [[ $(id -u) == 0 ]] || rs_die "needs root: the aggregator reaches our replicas through a veth address (cluster.sh netns-up)"
  local c
  for c in openssl curl python3 ip ss; do command -v "$c" >/dev/null || rs_die "$c is required"; done
  KUBECTL_BIN=$("$RS_E2E_DIR/tools.sh" kubectl | tail -n1)
  KUBE_APISERVER_BIN=$("$RS_E2E_DIR/tools.sh" kube-apiserver | tail -n1)
  ETCD_BIN=$("$RS_E2E_DIR/tools.sh" etcd | tail -n1)
  export KUBE_APISERVER_BIN ETCD_BIN KUBECTL_BIN
  rs_binaries
  export KUBECACHEDIR=$RS_DIR/kube-cache

  kd_cluster_up "$RS_DIR"
  kd_netns_up "$RS_DIR"
  # shellcheck disable=SC1091
  . "$RS_DIR/cluster.env"
  # shellcheck disable=SC1091
  . "$RS_DIR/netns.env"

  rs_log "serving certificate, RBAC (manifests/), our ServiceAccount token"
  mkdir -p "$RS_DIR/serving"
  (
    cd "$RS_DIR/serving"
    local ca_ext='basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\nsubjectKeyIdentifier=hash'
    local srv_ext='basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid'
    srv_ext+="\nsubjectAltName=DNS:$RS_SVC.$RS_SVC_NS.svc,IP:$KD_EXT_HOST_IP,IP:127.0.0.1"
    _kd_cert serving-ca "/CN=kubedojo-faults-serving-ca" "$ca_ext"
    _kd_cert tls "/CN=$RS_SVC.$RS_SVC_NS.svc" "$srv_ext" serving-ca
  )
  k apply -f "$RS_ROOT/manifests/namespace.yaml" -f "$RS_ROOT/manifests/rbac.yaml" >&2
  k -n "$RS_SVC_NS" get serviceaccount "$RS_SA" >/dev/null 2>&1 || k -n "$RS_SVC_NS" create serviceaccount "$RS_SA" >&2
  RS_TOKEN=$(k -n "$RS_SVC_NS" create token "$RS_SA" --duration=3h) || rs_die "kubectl create token failed"
  cat >"$RS_DIR/server.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster: {server: "$KD_APISERVER_URL", certificate-authority-data: "$(base64 -w0 <"$KD_CA_CRT")"}
users:
- name: server
  user: {token: "$RS_TOKEN"}
contexts:
- name: e2e
  context: {cluster: e2e, user: server}
current-context: e2e
EOF
  chmod 600 "$RS_DIR/server.kubeconfig"

  RS_SIM_FIRST=127.1.$((RANDOM % 200 + 20)).1
  RS_OBJECTS=$RS_DIR/sim-objects.json
  rs_log "kubelet-sim: $nodes nodes x $pods pods from $RS_SIM_FIRST:10250"
  _kd_start "$RS_DIR" kubelet-sim "$RS_BIN" kubelet-sim --nodes "$nodes" --pods-per-node "$pods" \
    --first-address "$RS_SIM_FIRST" --port 10250 --objects-out "$RS_OBJECTS" \
    --ca-out "$RS_DIR/sim-ca.crt" --token "$RS_TOKEN" "$@"
  local i
  for ((i = 0; i < 240; i++)); do
    grep -q "kubelet-sim serving" "$RS_DIR/kubelet-sim.log" 2>/dev/null && break
    _kd_alive "$RS_DIR/kubelet-sim.pid" || rs_die "kubelet-sim exited: $(tail -n 5 "$RS_DIR/kubelet-sim.log")"
    sleep 0.25
  done
  [[ -s $RS_OBJECTS ]] || rs_die "kubelet-sim wrote no objects"
  if [[ -n ${OBJECTS_HOOK:-} ]]; then "$OBJECTS_HOOK" "$RS_OBJECTS"; fi
  "$RS_LOAD" --cert "$KD_ADMIN_CRT" --key "$KD_ADMIN_KEY" create --apiserver "$KD_APISERVER_URL" \
    --objects "$RS_OBJECTS" >&2 || rs_die "kd-load create failed"

  rs_log "Service + APIServices (manifests/), caBundle of our serving CA"
  k apply -f "$RS_ROOT/manifests/service.yaml" >&2
  k apply -f "$RS_ROOT/manifests/apiservice.yaml" \
    -f "$RS_ROOT/manifests/components/metrics-server-takeover/apiservice.yaml" >&2
  local ca a
  ca=$(base64 -w0 <"$RS_DIR/serving/serving-ca.crt")
  for a in v1alpha1.data.kubedojo.io v1beta1.metrics.k8s.io; do
    k patch apiservice "$a" --type=merge -p "{\"spec\":{\"caBundle\":\"$ca\",\"insecureSkipTLSVerify\":false}}" >&2
  done
  RS_SVC_PORT_NAME=$(k -n "$RS_SVC_NS" get service "$RS_SVC" -o 'jsonpath={.spec.ports[0].name}')
}

# The flags a pod of ours would get (as tests/e2e/run.sh passes them).
rs_server_args() {
  local i=$1
  printf '%s\n' --secure-port="${RS_PORT[$i]}" --bind-address="$KD_EXT_HOST_IP" \
    --tls-cert-file="$RS_DIR/serving/tls.crt" --tls-private-key-file="$RS_DIR/serving/tls.key" \
    --kubeconfig="$RS_DIR/server.kubeconfig" --metric-resolution="${RS_RESOLUTION:-10s}" \
    --kubelet-certificate-authority="$RS_DIR/sim-ca.crt" \
    --kubelet-preferred-address-types=InternalIP --kubelet-use-node-status-port
}

rs_start_replica() {
  local i=$1
  shift
  # a fresh port each start, as a new pod gets a new address
  RS_PORT[i]=$(_kd_free_port "${RS_PORT[@]}")
  echo false >"$RS_DIR/ready-$i"
  echo "${RS_PORT[$i]}" >"$RS_DIR/port-$i"
  local args
  mapfile -t args < <(rs_server_args "$i")
  printf '\n===== start %s =====\n' "$(date -u +%T.%N)" >>"$RS_DIR/replica-$i.log"
  NO_COLOR=1 "$RS_BIN" "${args[@]}" "$@" </dev/null >>"$RS_DIR/replica-$i.log" 2>&1 &
  echo $! >"$RS_DIR/replica-$i.pid"
  rs_log "replica $i started (pid $!, $KD_EXT_HOST_IP:${RS_PORT[$i]})"
}

rs_url() { echo "https://$KD_EXT_HOST_IP:${RS_PORT[$1]}"; }

# rs_curl I PATH [CURL_ARG...]: straight to replica I (prints the body, fails on transport)
rs_curl() {
  local i=$1 path=$2
  shift 2
  curl -sS --max-time 10 --cacert "$RS_DIR/serving/serving-ca.crt" "$@" "$(rs_url "$i")$path"
}

rs_wait_replica_up() {
  _kd_wait "$RS_DIR" "replica-$1" 60 rs_curl "$1" /livez -f -o /dev/null
}

# rs_stop_replica I: SIGTERM; waits up to 40 s; prints the seconds it took to exit
rs_stop_replica() {
  local i=$1 pid t0 n
  pid=$(cat "$RS_DIR/replica-$i.pid")
  t0=$(date +%s.%N)
  kill -TERM "$pid"
  for ((n = 0; n < 400; n++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null
    rs_log "replica $i ignored SIGTERM for 40 s: killed"
    echo 999
    return 1
  fi
  wait "$pid" 2>/dev/null
  rm -f "$RS_DIR/replica-$i.pid"
  python3 -c "import sys,time; print(f'{time.time()-float(sys.argv[1]):.1f}')" "$t0"
}

rs_slice() {
  local i=$1 ready=$2
  k apply -f - >/dev/null <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $RS_SVC-r$i
  namespace: $RS_SVC_NS
  labels:
    kubernetes.io/service-name: $RS_SVC
    endpointslice.kubernetes.io/managed-by: kubedojo-faults
addressType: IPv4
endpoints:
- addresses: ["$KD_EXT_HOST_IP"]
  conditions: {ready: $ready}
ports:
- {name: "$RS_SVC_PORT_NAME", port: ${RS_PORT[$i]}, protocol: TCP}
EOF
}

# The prober: every second, each replica's /readyz; on a change, its slice. State in
# DIR/ready-<I> (true/false), transitions in DIR/prober.log.
rs_prober_loop() {
  local i f code state
  declare -A last=() port=()
  while true; do
    for f in "$RS_DIR"/port-*; do
      i=${f##*-}
      RS_PORT[i]=$(cat "$f")
      # a new port (a new pod) starts unready
      [[ ${port[$i]:-} == "${RS_PORT[$i]}" ]] || { port[$i]=${RS_PORT[$i]}; last[$i]=; }
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 \
        --cacert "$RS_DIR/serving/serving-ca.crt" "$(rs_url "$i")/readyz" 2>/dev/null) || true
      if [[ $code == 200 ]]; then state=true; else state=false; fi
      if [[ ${last[$i]:-} != "$state" ]]; then
        if rs_slice "$i" "$state" 2>>"$RS_DIR/prober.log"; then
          last[$i]=$state
          echo "$state" >"$RS_DIR/ready-$i"
          printf '%s replica %s readyz=%s -> slice ready=%s\n' "$(date -u +%T.%N)" "$i" "$code" "$state" >>"$RS_DIR/prober.log"
        fi
      fi
    done
    sleep 1
  done
}

rs_prober_start() {
  rs_prober_loop &
  RS_PROBER_PID=$!
}

rs_prober_stop() {
  [[ -z ${RS_PROBER_PID:-} ]] && return 0
  kill "$RS_PROBER_PID" 2>/dev/null
  wait "$RS_PROBER_PID" 2>/dev/null
  RS_PROBER_PID=
}

rs_wait_slice_ready() {
  local i=$1 secs=$2 n
  for ((n = 0; n < secs * 4; n++)); do
    [[ $(cat "$RS_DIR/ready-$i" 2>/dev/null) == true ]] && return 0
    _kd_alive "$RS_DIR/replica-$i.pid" || rs_die "replica $i exited: $(tail -n 20 "$RS_DIR/replica-$i.log")"
    sleep 0.25
  done
  rs_die "replica $i not ready after ${secs}s: $(rs_curl "$i" '/readyz?verbose' 2>&1 | tr '\n' ' ')"
}

rs_cleanup() {
  rs_prober_stop
  [[ -n ${RS_DIR:-} ]] && kd_cluster_down "$RS_DIR" 2>/dev/null
  return 0
}
