#!/usr/bin/env bash
# Throwaway Kubernetes control plane for the e2e tests: etcd + kube-apiserver
# with RBAC and the aggregation layer, on 127.0.0.1 only, no Docker, no kubelet,
# no controller-manager.
#
# Usage:
#   tests/e2e/cluster.sh up DIR      PKI + etcd + kube-apiserver, state/logs in DIR
#   tests/e2e/cluster.sh down DIR    stop everything started for DIR (idempotent)
#   tests/e2e/cluster.sh netns-up DIR / netns-down DIR
#                                    create/remove the network namespace + veth used to
#                                    give an extension server a non-loopback address (root)
#   tests/e2e/cluster.sh register-apiservice DIR GROUP VERSION PORT [CA_BUNDLE_FILE] [SERVICE] [NS]
#   tests/e2e/cluster.sh wait-apiservice DIR NAME [SECONDS]
#                                    point an APIService at an extension server on PORT
#   source tests/e2e/cluster.sh      defines kd_cluster_up, kd_cluster_down, kd_netns_up,
#                                    kd_netns_down, kd_register_apiservice, kd_wait_apiservice
#
# After `up`, DIR holds:
#   admin.kubeconfig            CN=admin, O=system:masters client cert (embedded)
#   cluster.env                 KEY=value lines: KD_APISERVER_URL, KD_KUBECONFIG,
#                               KD_KUBECTL, KD_ETCD_URL, KD_PKI, ... (source it)
#   pki/ca.{crt,key}            cluster CA (--client-ca-file, signs serving + admin certs)
#   pki/front-proxy-ca.{crt,key}      SEPARATE CA, --requestheader-client-ca-file
#   pki/front-proxy-client.{crt,key}  CN=front-proxy-client, EKU clientAuth
#                                     (--proxy-client-cert-file: what the aggregator presents)
#   pki/sa.{key,pub}            service-account signing key pair
#   pki/apiserver.{crt,key}     serving cert for 127.0.0.1 / localhost
#   etcd.log, kube-apiserver.log, etcd.pid, kube-apiserver.pid
# `down` also stops any other process whose pid the harness wrote to DIR/<name>.pid
# (e.g. the extension server), provided its command line mentions DIR (guards
# against recycled pids), and removes the netns of netns-up.
#
# Environment:
#   KUBEDOJO_AGGREGATOR_ROUTING   value of --enable-aggregator-routing (default true)
#   KUBEDOJO_APISERVER_ARGS       extra kube-apiserver flags (whitespace separated)
#   KUBEDOJO_APISERVER_V          kube-apiserver --v (default 1)
#   KUBE_APISERVER_BIN, ETCD_BIN, KUBECTL_BIN   binaries to use instead of tools.sh's
#
# Reaching an extension server (the Rust aggregated API server) from kube-apiserver:
# EndpointSlice validation rejects 127.0.0.0/8 ("may not be in the loopback
# range"), so a server on 127.0.0.1 cannot be published through an EndpointSlice. Both workarounds were tested against kube-apiserver v1.36.3 and
# work (notes above kd_register_apiservice): ExternalName -> localhost with
# KUBEDOJO_AGGREGATOR_ROUTING=false (no root), or a netns/veth address with
# routing=true (root).
#
# Only loopback addresses are used, plus (netns-up) a veth pair whose addresses
# (10.251.N.0/30) exist only between the host and a namespace this script creates.

_KD_E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

_kd_log() { printf '[cluster.sh] %s\n' "$*" >&2; }
_kd_die() {
  printf '[cluster.sh] ERROR: %s\n' "$*" >&2
  exit 1
}

# A TCP port on 127.0.0.1 that nothing listens on (and not in $*).
_kd_free_port() {
  local p i
  for i in $(seq 1 200); do
    p=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768+)
    [[ " $* " == *" $p "* ]] && continue
    if [[ -z $(ss -Hltn "sport = :$p" 2>/dev/null) ]]; then
      echo "$p"
      return 0
    fi
  done
  _kd_die "no free port found"
}

_kd_bins() {
  KUBE_APISERVER_BIN=${KUBE_APISERVER_BIN:-$("$_KD_E2E_DIR/tools.sh" kube-apiserver)} || _kd_die "no kube-apiserver (tests/e2e/tools.sh kube-apiserver failed)"
  ETCD_BIN=${ETCD_BIN:-$("$_KD_E2E_DIR/tools.sh" etcd)} || _kd_die "no etcd (tests/e2e/tools.sh etcd failed)"
  KUBECTL_BIN=${KUBECTL_BIN:-$("$_KD_E2E_DIR/tools.sh" kubectl)} || _kd_die "no kubectl (tests/e2e/tools.sh kubectl failed)"
}

# ---------------------------------------------------------------- PKI (openssl)

# _kd_cert NAME SUBJ EXT [CA]: EC P-256 key NAME.key + cert NAME.crt (10 years),
# self-signed when CA is empty, else signed by CA.{crt,key}. Run inside pki/.
_kd_cert() {
  local name=$1 subj=$2 ext=$3 ca=${4:-}
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$name.key" 2>/dev/null
  openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr" 2>/dev/null
  printf '%b\n' "$ext" >"$name.ext"
  if [[ -z $ca ]]; then
    openssl x509 -req -in "$name.csr" -signkey "$name.key" -days 3650 \
      -set_serial "0x$(openssl rand -hex 16)" -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  else
    openssl x509 -req -in "$name.csr" -CA "$ca.crt" -CAkey "$ca.key" -days 3650 \
      -set_serial "0x$(openssl rand -hex 16)" -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  fi || _kd_die "openssl failed for $name"
  rm -f "$name.csr" "$name.ext"
  chmod 600 "$name.key"
}

_kd_pki() {
  local pki=$1
  mkdir -p "$pki"
  (
    cd "$pki"
    local ca_ext='basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\nsubjectKeyIdentifier=hash'
    local client_ext='basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nauthorityKeyIdentifier=keyid'
    local server_ext='basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid'
    server_ext+='\nsubjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local'
    _kd_cert ca "/CN=kubedojo-e2e-ca" "$ca_ext"
    _kd_cert front-proxy-ca "/CN=kubedojo-e2e-front-proxy-ca" "$ca_ext"
    _kd_cert front-proxy-client "/CN=front-proxy-client" "$client_ext" front-proxy-ca
    _kd_cert admin "/O=system:masters/CN=admin" "$client_ext" ca
    _kd_cert apiserver "/CN=kube-apiserver" "$server_ext" ca
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
    openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
    chmod 600 sa.key
  ) || _kd_die "PKI generation failed in $pki"
}

# ---------------------------------------------------------------- processes

# _kd_start DIR NAME BIN ARGS...: start a daemon, log to DIR/NAME.log, pid in DIR/NAME.pid
_kd_start() {
  local dir=$1 name=$2
  shift 2
  "$@" </dev/null >"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}

_kd_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# _kd_wait DIR NAME SECONDS CMD...: poll CMD until it succeeds; fail early if the daemon died
_kd_wait() {
  local dir=$1 name=$2 secs=$3 i
  shift 3
  for ((i = 0; i < secs * 4; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    if ! _kd_alive "$dir/$name.pid"; then
      tail -n 30 "$dir/$name.log" >&2 || true
      _kd_die "$name exited during start-up (log: $dir/$name.log)"
    fi
    sleep 0.25
  done
  tail -n 30 "$dir/$name.log" >&2 || true
  _kd_die "timed out after ${secs}s waiting for $name ($*)"
}

# Stop the process in DIR/NAME.pid if it is still the one we started (its command
# line mentions DIR), TERM then KILL after 10 s.
_kd_stop() {
  local dir=$1 name=$2 pidf pid i
  pidf=$dir/$name.pid
  [[ -f $pidf ]] || return 0
  pid=$(cat "$pidf")
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -F -- "$dir" >/dev/null; then
    _kd_log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
      _kd_log "$name (pid $pid) ignored SIGTERM, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidf"
}

_kd_kubeconfig() {
  local dir=$1 url=$2 out=$1/admin.kubeconfig
  local b64='base64 -w0'
  cat >"$out.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kubedojo-e2e
  cluster:
    server: $url
    certificate-authority-data: $($b64 <"$dir/pki/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $($b64 <"$dir/pki/admin.crt")
    client-key-data: $($b64 <"$dir/pki/admin.key")
contexts:
- name: kubedojo-e2e
  context:
    cluster: kubedojo-e2e
    user: admin
current-context: kubedojo-e2e
EOF
  chmod 600 "$out.tmp"
  mv "$out.tmp" "$out"
}

# ---------------------------------------------------------------- up / down

kd_cluster_up() (
  set -euo pipefail
  local dir=${1:?usage: kd_cluster_up DIR}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local name
  for name in kube-apiserver etcd; do
    if _kd_alive "$dir/$name.pid"; then
      _kd_die "$name from a previous 'up' is still running in $dir; run: $_KD_E2E_DIR/cluster.sh down $dir"
    fi
  done
  command -v openssl >/dev/null || _kd_die "openssl is required"
  command -v curl >/dev/null || _kd_die "curl is required"
  command -v ss >/dev/null || _kd_die "ss (iproute2) is required"
  _kd_bins

  # on any failure: dump what we know and stop what was started
  # shellcheck disable=SC2154 # rc is assigned inside the trap string
  trap 'rc=$?; if ((rc != 0)); then _kd_log "up failed (rc=$rc), stopping what was started in $dir"; kd_cluster_down "$dir"; fi' EXIT

  local start=$SECONDS
  rm -rf "$dir/pki" "$dir/etcd-data"
  _kd_log "generating PKI in $dir/pki"
  _kd_pki "$dir/pki"
  local pki=$dir/pki

  local etcd_client etcd_peer port
  etcd_client=$(_kd_free_port)
  etcd_peer=$(_kd_free_port "$etcd_client")
  port=$(_kd_free_port "$etcd_client" "$etcd_peer")

  _kd_log "starting etcd on 127.0.0.1:$etcd_client ($("$ETCD_BIN" --version | head -n1))"
  _kd_start "$dir" etcd "$ETCD_BIN" \
    --name=kd-e2e \
    --data-dir="$dir/etcd-data" \
    --listen-client-urls="http://127.0.0.1:$etcd_client" \
    --advertise-client-urls="http://127.0.0.1:$etcd_client" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer" \
    --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer" \
    --initial-cluster="kd-e2e=http://127.0.0.1:$etcd_peer" \
    --unsafe-no-fsync=true
  _kd_wait "$dir" etcd 30 curl -fsS "http://127.0.0.1:$etcd_client/health"

  local url="https://127.0.0.1:$port"
  local routing=${KUBEDOJO_AGGREGATOR_ROUTING:-true}
  local extra=()
  read -r -a extra <<<"${KUBEDOJO_APISERVER_ARGS:-}"
  _kd_log "starting kube-apiserver on $url ($("$KUBE_APISERVER_BIN" --version), aggregator routing=$routing)"
  _kd_start "$dir" kube-apiserver "$KUBE_APISERVER_BIN" \
    --etcd-servers="http://127.0.0.1:$etcd_client" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$port" \
    --cert-dir="$pki" \
    --tls-cert-file="$pki/apiserver.crt" \
    --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --authorization-mode=RBAC \
    --service-account-issuer="https://kubernetes.default.svc" \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --allow-privileged=true \
    --disable-admission-plugins=ServiceAccount \
    --endpoint-reconciler-type=none \
    --requestheader-client-ca-file="$pki/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$pki/front-proxy-client.crt" \
    --proxy-client-key-file="$pki/front-proxy-client.key" \
    --enable-aggregator-routing="$routing" \
    --v="${KUBEDOJO_APISERVER_V:-1}" \
    "${extra[@]}"
  _kd_kubeconfig "$dir" "$url"
  _kd_wait "$dir" kube-apiserver 90 curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" \
    --key "$pki/admin.key" "$url/readyz"
  _kd_log "kube-apiserver ready, waiting for kube-system/extension-apiserver-authentication"
  _kd_wait "$dir" kube-apiserver 60 _kd_has_authn_configmap "$dir"

  cat >"$dir/cluster.env" <<EOF
KD_DIR=$dir
KD_APISERVER_URL=$url
KD_APISERVER_PORT=$port
KD_KUBECONFIG=$dir/admin.kubeconfig
KD_KUBECTL=$KUBECTL_BIN
KD_KUBE_APISERVER=$KUBE_APISERVER_BIN
KD_ETCD_URL=http://127.0.0.1:$etcd_client
KD_PKI=$pki
KD_CA_CRT=$pki/ca.crt
KD_FRONT_PROXY_CA_CRT=$pki/front-proxy-ca.crt
KD_ADMIN_CRT=$pki/admin.crt
KD_ADMIN_KEY=$pki/admin.key
KD_AGGREGATOR_ROUTING=$routing
EOF
  trap - EXIT
  _kd_log "control plane up in $((SECONDS - start))s: KUBECONFIG=$dir/admin.kubeconfig ($url)"
)

_kd_has_authn_configmap() {
  local out
  out=$("$KUBECTL_BIN" --kubeconfig "$1/admin.kubeconfig" -n kube-system get configmap \
    extension-apiserver-authentication -o 'jsonpath={.data.requestheader-client-ca-file}') &&
    [[ $out == *"BEGIN CERTIFICATE"* ]]
}

kd_cluster_down() (
  set -uo pipefail
  local dir=${1:?usage: kd_cluster_down DIR}
  [[ -d $dir ]] || return 0
  dir=$(cd "$dir" && pwd)
  local f name
  # extension servers etc. registered by the harness as DIR/*.pid go first
  for f in "$dir"/*.pid; do
    [[ -e $f ]] || continue
    name=$(basename "$f" .pid)
    [[ $name == kube-apiserver || $name == etcd ]] && continue
    _kd_stop "$dir" "$name"
  done
  _kd_stop "$dir" kube-apiserver
  _kd_stop "$dir" etcd
  kd_netns_down "$dir"
  return 0
)

# ---------------------------------------------------------------- network namespace
#
# Why: kube-apiserver only proxies to an extension server it can address
# through a Service. With --enable-aggregator-routing=true it dials an
# EndpointSlice address, and endpoint validation rejects 127.0.0.0/8 (and
# link-local/unspecified). So the extension server needs a non-loopback address
# that only exists on this machine: a veth pair between the host and a network
# namespace created here, host side 10.251.N.1/30, namespace side 10.251.N.2/30.
# The extension server binds the HOST side address (10.251.N.1), so it still
# reaches kube-apiserver on 127.0.0.1 and kube-apiserver reaches it locally;
# the namespace only exists so the veth link is up. Needs root (CAP_NET_ADMIN).
# Writes DIR/netns.env: KD_NETNS, KD_EXT_HOST_IP (bind + EndpointSlice address),
# KD_EXT_NS_IP.

_kd_netns_names() {
  local h
  h=$(printf '%s' "$1" | sha256sum | cut -c1-6)
  KD_NETNS=kd-$h
  KD_VETH_HOST=kdh-$h
  KD_VETH_NS=kdn-$h
  KD_NET_OCTET=$((0x${h:0:2}))
}

kd_netns_up() (
  set -euo pipefail
  local dir=${1:?usage: kd_netns_up DIR}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  _kd_netns_names "$dir"
  command -v ip >/dev/null || _kd_die "ip (iproute2) is required"
  local host_ip=10.251.$KD_NET_OCTET.1 ns_ip=10.251.$KD_NET_OCTET.2
  if ! ip netns list | grep -w "$KD_NETNS" >/dev/null; then
    _kd_log "creating netns $KD_NETNS with veth $KD_VETH_HOST($host_ip) <-> $KD_VETH_NS($ns_ip)"
    ip netns add "$KD_NETNS" || _kd_die "ip netns add failed (root / CAP_SYS_ADMIN+CAP_NET_ADMIN needed)"
    trap 'rc=$?; ((rc == 0)) || kd_netns_down "$dir"' EXIT
    ip link add "$KD_VETH_HOST" type veth peer name "$KD_VETH_NS" netns "$KD_NETNS"
    ip addr add "$host_ip/30" dev "$KD_VETH_HOST"
    ip link set "$KD_VETH_HOST" up
    ip -n "$KD_NETNS" addr add "$ns_ip/30" dev "$KD_VETH_NS"
    ip -n "$KD_NETNS" link set "$KD_VETH_NS" up
    ip -n "$KD_NETNS" link set lo up
    trap - EXIT
  fi
  cat >"$dir/netns.env" <<EOF
KD_NETNS=$KD_NETNS
KD_EXT_HOST_IP=$host_ip
KD_EXT_NS_IP=$ns_ip
EOF
)

kd_netns_down() (
  set -uo pipefail
  local dir=${1:?usage: kd_netns_down DIR}
  [[ -d $dir ]] || return 0
  dir=$(cd "$dir" && pwd)
  _kd_netns_names "$dir"
  if ip link show "$KD_VETH_HOST" >/dev/null 2>&1; then
    ip link del "$KD_VETH_HOST" 2>/dev/null || true
  fi
  if ip netns list 2>/dev/null | grep -w "$KD_NETNS" >/dev/null; then
    _kd_log "removing netns $KD_NETNS"
    ip netns del "$KD_NETNS" 2>/dev/null || true
  fi
  rm -f "$dir/netns.env"
  return 0
)

# ---------------------------------------------------------------- APIService registration
#
# Tested against kube-apiserver v1.36.3 with a dummy HTTPS extension server
# (serving an APIResourceList at /apis/<g>/<v>); BOTH ways below reach
# Available=True ("all checks passed") and proxy `kubectl get <resource>`:
#
#  * routing=false (KUBEDOJO_AGGREGATOR_ROUTING=false): Service type ExternalName
#    with externalName: localhost, APIService spec.service.port = the extension
#    server's port on 127.0.0.1. No root, no netns. The aggregator dials
#    https://localhost:<port>. With routing=true the same APIService fails:
#    FailedDiscoveryCheck "unsupported service type \"ExternalName\"".
#  * routing=true (the default here): selector-less ClusterIP Service (port 443,
#    name https) + a manual EndpointSlice whose address is the host side of the
#    veth made by kd_netns_up (KD_EXT_HOST_IP) and whose port is the extension
#    server's port; the server binds KD_EXT_HOST_IP. A server started inside the
#    namespace on KD_EXT_NS_IP works the same way. An EndpointSlice with 127.0.0.1
#    is rejected at create time: `endpoints[0].addresses[0]: Invalid value:
#    "127.0.0.1": may not be in the loopback range (127.0.0.0/8, ::1/128)`.
#
# In both cases the TLS ServerName is <service>.<namespace>.svc: with a caBundle
# the serving cert needs that DNS SAN (otherwise: "x509: certificate is valid for
# localhost, not kd-ext.kube-system.svc"); without one, insecureSkipTLSVerify is set.
# The aggregator presents the front-proxy-client cert and sends X-Remote-User /
# X-Remote-Group: availability probe = system:kube-aggregator + system:masters,
# discovery = system:kube-aggregator (no group), OpenAPI = system:aggregator,
# user requests = the user (e.g. admin, [system:masters system:authenticated]).

# kd_register_apiservice DIR GROUP VERSION PORT [CA_BUNDLE_FILE] [SERVICE] [NAMESPACE]
#   Creates Service (+EndpointSlice) and APIService <VERSION>.<GROUP> for an
#   extension server listening on PORT (127.0.0.1 when routing=false,
#   KD_EXT_HOST_IP from netns.env when routing=true).
kd_register_apiservice() (
  set -euo pipefail
  local dir=${1:?usage: kd_register_apiservice DIR GROUP VERSION PORT [CA_BUNDLE_FILE] [SERVICE] [NAMESPACE]}
  local group=${2:?GROUP} version=${3:?VERSION} port=${4:?PORT} cafile=${5:-}
  local svc=${6:-kubedojo-apiserver} ns=${7:-kube-system}
  [[ -f $dir/cluster.env ]] || _kd_die "$dir/cluster.env missing; run: $_KD_E2E_DIR/cluster.sh up $dir"
  # shellcheck disable=SC1091
  . "$dir/cluster.env"
  local tls svcport
  if [[ -n $cafile ]]; then
    tls="caBundle: $(base64 -w0 <"$cafile")"
  else
    tls="insecureSkipTLSVerify: true"
  fi
  if [[ $KD_AGGREGATOR_ROUTING != false && ! -f $dir/netns.env ]]; then
    _kd_die "aggregator routing=true needs an endpoint address: run kd_netns_up $dir first"
  fi
  {
    if [[ $KD_AGGREGATOR_ROUTING == false ]]; then
      svcport=$port
      cat <<EOF
apiVersion: v1
kind: Service
metadata: {name: $svc, namespace: $ns}
spec: {type: ExternalName, externalName: localhost}
EOF
    else
      # shellcheck disable=SC1091
      . "$dir/netns.env"
      svcport=443
      cat <<EOF
apiVersion: v1
kind: Service
metadata: {name: $svc, namespace: $ns}
spec:
  type: ClusterIP
  ports: [{name: https, port: 443, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $svc-e2e
  namespace: $ns
  labels: {kubernetes.io/service-name: $svc}
addressType: IPv4
endpoints: [{addresses: ["$KD_EXT_HOST_IP"], conditions: {ready: true}}]
ports: [{name: https, port: $port, protocol: TCP}]
EOF
    fi
    cat <<EOF
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: $version.$group}
spec:
  group: $group
  version: $version
  groupPriorityMinimum: 1000
  versionPriority: 15
  $tls
  service: {name: $svc, namespace: $ns, port: $svcport}
EOF
  } | "$KD_KUBECTL" --kubeconfig "$KD_KUBECONFIG" apply -f - >&2
)

# kd_wait_apiservice DIR NAME [SECONDS]: wait for Available=True, else print the condition
kd_wait_apiservice() (
  set -uo pipefail
  local dir=${1:?usage: kd_wait_apiservice DIR NAME [SECONDS]} name=${2:?NAME} secs=${3:-60}
  # shellcheck disable=SC1091
  . "$dir/cluster.env"
  if ! "$KD_KUBECTL" --kubeconfig "$KD_KUBECONFIG" wait --for=condition=Available \
    "apiservice/$name" --timeout="${secs}s" >&2; then
    "$KD_KUBECTL" --kubeconfig "$KD_KUBECONFIG" get "apiservice/$name" \
      -o 'jsonpath={.status.conditions[?(@.type=="Available")].message}{"\n"}' >&2
    exit 1
  fi
)

# ---------------------------------------------------------------- main

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -euo pipefail
  case "${1:-}" in
    up) kd_cluster_up "${2:?usage: $0 up DIR}" ;;
    down) kd_cluster_down "${2:?usage: $0 down DIR}" ;;
    netns-up) kd_netns_up "${2:?usage: $0 netns-up DIR}" ;;
    netns-down) kd_netns_down "${2:?usage: $0 netns-down DIR}" ;;
    register-apiservice)
      shift
      kd_register_apiservice "$@"
      ;;
    wait-apiservice)
      shift
      kd_wait_apiservice "$@"
      ;;
    *)
      sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
      exit 2
      ;;
  esac
fi
