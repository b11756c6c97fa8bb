#!/usr/bin/env bash
# Sharded scraping through kube-aggregator with three real replicas (issue 14).
#
# Usage: tests/e2e/ha.sh [--keep]      (root: network namespace; KUBEDOJO_BIN to skip cargo build)
#
# A throwaway kube-apiserver + etcd (cluster.sh), kubelet-sim with NODES nodes, and three
# processes of our server started as pods would be (ServiceAccount token, POD_NAME,
# POD_NAMESPACE, --peer-port, member Leases under manifests/components/sharding's RBAC),
# each on its own address of the test's veth, all three in one EndpointSlice of the
# Service the APIServices point at. Checks:
#   1. kubelet requests per cycle counted by the simulator = R x nodes (not 3 x nodes);
#   2. every replica, queried directly, answers every pod; three member Leases exist;
#   3. an HPA-style polling loop through kube-apiserver (and on each survivor directly)
#      while one replica is SIGKILLed: no failed request (other than kube-apiserver
#      routing to the dead address before the EndpointSlice drops it, counted apart) and
#      no pod missing from any answer for longer than one resolution;
#   4. once the dead replica's Lease expires: back to R x nodes; restarted, it rejoins,
#      the shards rebalance (R x nodes, every replica answers every pod again).
#   5. then, on the same cluster and fleet, the three replicas again with R = 2: 2 x nodes
#      requests per cycle; a SIGKILL during polling leaves no pod missing from any answer
#      at all and the survivors never fall back to scraping (the second owner delivers);
#      2 x nodes after the Lease expired and after the restart.
# Prints `N passed, M failed` last. Environment: KUBEDOJO_BIN, KUBEDOJO_HA_NODES (6),
# KUBEDOJO_HA_PODS_PER_NODE (4), KUBEDOJO_HA_REPLICATION (1; another value runs only that R),
# KUBEDOJO_HA_R2 (1; 0 skips step 5).
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$E2E_DIR/../.." && pwd)
# shellcheck source=cluster.sh
. "$E2E_DIR/cluster.sh"
OBJ="python3 $E2E_DIR/e2e_objects.py"
POLL="python3 $E2E_DIR/ha_poll.py"

KEEP=false
[[ ${1:-} == --keep ]] && KEEP=true

NODES=${KUBEDOJO_HA_NODES:-6}
PODS_PER_NODE=${KUBEDOJO_HA_PODS_PER_NODE:-4}
R=${KUBEDOJO_HA_REPLICATION:-1}
# After the R=1 checks, the same cluster and fleet again with R=2 (KUBEDOJO_HA_R2=0 skips it).
R2=${KUBEDOJO_HA_R2:-1}
((R == 1)) || R2=0
RES=10          # --metric-resolution, seconds (the least serve accepts, as metrics-server)
LEASE=6         # --peer-lease-duration, seconds
SVC=kubedojo-data-api
NS=kubedojo-system
SA=kubedojo-data-api
T0=$SECONDS
PASS=0
FAIL=0
FAILED=()

log() { printf '[ha %3ds] %s\n' "$((SECONDS - T0))" "$*" >&2; }
die() {
  printf '[ha] ERROR: %s\n' "$*" >&2
  exit 1
}

[[ $(id -u) == 0 ]] || die "needs root (network namespace for the EndpointSlice addresses)"
KUBECTL=$("$E2E_DIR/tools.sh" kubectl | tail -n1)
KUBE_APISERVER_BIN=$("$E2E_DIR/tools.sh" kube-apiserver | tail -n1)
ETCD_BIN=$("$E2E_DIR/tools.sh" etcd | tail -n1)
KUBECTL_BIN=$KUBECTL
export KUBE_APISERVER_BIN ETCD_BIN KUBECTL_BIN
if [[ -n ${KUBEDOJO_BIN:-} ]]; then
  BIN=$KUBEDOJO_BIN
else
  log "cargo build --release --locked"
  (cd "$ROOT" && cargo build --release --locked --bin kubedojo-data-api) >&2 || die "cargo build failed"
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/kubedojo-data-api
fi
[[ -x $BIN ]] || die "$BIN is not an executable"

DIR=$(mktemp -d "${TMPDIR:-/tmp}/kubedojo-ha.XXXXXX")
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  [[ -z ${POLL_PID:-} ]] || kill "$POLL_PID" 2>/dev/null
  if ((rc != 0 || FAIL > 0)); then
    for f in replica-0 replica-1 replica-2 kubelet-sim kube-apiserver; do
      [[ -s $DIR/$f.log ]] || continue
      printf '\n----- %s.log (last 60 lines) -----\n' "$f" >&2
      tail -n 60 "$DIR/$f.log" >&2
    done
  fi
  if [[ $KEEP == true ]]; then
    log "--keep: $DIR (stop: $E2E_DIR/cluster.sh down $DIR)"
  else
    kd_cluster_down "$DIR" 2>/dev/null
    rm -rf "$DIR"
  fi
  log "wall time $((SECONDS - T0))s"
  ((PASS + FAIL == 0)) || printf '%d passed, %d failed\n' "$PASS" "$FAIL"
  ((rc == 0 && FAIL > 0)) && rc=1
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

check() {
  local name=$1 rc=0
  shift
  ("$@") >"$DIR/check.out" 2>&1 || rc=$?
  if ((rc == 0)); then
    PASS=$((PASS + 1))
    printf 'PASS  %s\n' "$name" >&2
  else
    FAIL=$((FAIL + 1))
    FAILED+=("$name")
    printf 'FAIL  %s\n' "$name" >&2
  fi
  sed 's/^/        /' "$DIR/check.out" | head -n 40 >&2
}

k() { "$KUBECTL" --kubeconfig "$DIR/admin.kubeconfig" --request-timeout=30s "$@"; }

# ---------------------------------------------------------------- cluster, addresses

kd_cluster_up "$DIR"
kd_netns_up "$DIR"
# shellcheck disable=SC1091
. "$DIR/cluster.env"
# shellcheck disable=SC1091
. "$DIR/netns.env"
_kd_netns_names "$DIR"
# Three addresses on the host end of the test's veth (gone with it at cleanup): the
# EndpointSlice refuses loopback addresses.
BASE=${KD_EXT_HOST_IP%.*}
IPS=("$KD_EXT_HOST_IP" "$BASE.5" "$BASE.6")
for ip in "${IPS[@]:1}"; do ip addr add "$ip/32" dev "$KD_VETH_HOST"; done

log "serving certificate for ${IPS[*]}"
mkdir -p "$DIR/serving"
(
  cd "$DIR/serving"
  _kd_cert serving-ca "/CN=kubedojo-ha-e2e-ca" 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\nsubjectKeyIdentifier=hash'
  _kd_cert tls "/CN=$SVC.$NS.svc" "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\nsubjectAltName=DNS:$SVC.$NS.svc,IP:${IPS[0]},IP:${IPS[1]},IP:${IPS[2]}" serving-ca
)

# ---------------------------------------------------------------- RBAC, identity, fleet

k apply -f "$ROOT/manifests/namespace.yaml" -f "$ROOT/manifests/rbac.yaml" \
  -f "$ROOT/manifests/components/sharding/rbac.yaml" >&2
k -n "$NS" get serviceaccount "$SA" >/dev/null 2>&1 || k -n "$NS" create serviceaccount "$SA" >&2
TOKEN=$(k -n "$NS" create token "$SA" --duration=1h)
printf '%s' "$TOKEN" >"$DIR/sa.token"
cat >"$DIR/server.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster: {server: $KD_APISERVER_URL, certificate-authority-data: $(base64 -w0 <"$KD_CA_CRT")}
users:
- name: sa
  user: {token: $TOKEN}
contexts:
- name: e2e
  context: {cluster: e2e, user: sa}
current-context: e2e
EOF

SIM_FIRST=127.1.$((RANDOM % 200 + 20)).1
log "kubelet-sim: $NODES nodes x $PODS_PER_NODE pods from $SIM_FIRST"
_kd_start "$DIR" kubelet-sim "$BIN" kubelet-sim --nodes "$NODES" --pods-per-node "$PODS_PER_NODE" \
  --first-address "$SIM_FIRST" --port 10250 --objects-out "$DIR/sim-objects.json" \
  --ca-out "$DIR/sim-ca.crt" --token "$TOKEN" --requests-out "$DIR/sim-requests"
for ((i = 0; i < 120; i++)); do
  grep -q "kubelet-sim serving $NODES nodes" "$DIR/kubelet-sim.log" 2>/dev/null && break
  _kd_alive "$DIR/kubelet-sim.pid" || die "kubelet-sim exited"
  sleep 0.25
done
while read -r ns; do
  k get namespace "$ns" >/dev/null 2>&1 || k create namespace "$ns" >&2
done < <($OBJ namespaces "$DIR/sim-objects.json")
$OBJ nodes-list "$DIR/sim-objects.json" | k create -f - >/dev/null
$OBJ pods-list "$DIR/sim-objects.json" | k create -f - >/dev/null
while read -r ns name patch; do
  k -n "$ns" patch pod "$name" --subresource=status --type=merge -p "$patch" >/dev/null
done < <($OBJ pod-status "$DIR/sim-objects.json")
PODS=$((NODES * PODS_PER_NODE))

# ---------------------------------------------------------------- three replicas

PORT=$(_kd_free_port)
PEER_PORT=$(_kd_free_port "$PORT")
start_replica() {
  local i=$1
  POD_NAME=replica-$i POD_NAMESPACE=$NS NO_COLOR=1 _kd_start "$DIR" "replica-$i" "$BIN" \
    --secure-port="$PORT" --bind-address="${IPS[$i]}" \
    --tls-cert-file="$DIR/serving/tls.crt" --tls-private-key-file="$DIR/serving/tls.key" \
    --kubeconfig="$DIR/server.kubeconfig" --kubelet-certificate-authority="$DIR/sim-ca.crt" \
    --kubelet-preferred-address-types=InternalIP --kubelet-use-node-status-port \
    --metric-resolution="${RES}s" --kubelet-request-timeout=2s \
    --peer-port="$PEER_PORT" --peer-advertise-address="${IPS[$i]}" \
    --peer-token-file="$DIR/sa.token" --peer-lease-duration="${LEASE}s" \
    --scrape-replication="$R" --goaway-chance=0.02
}
replica_up() { curl -sS -o /dev/null --max-time 2 --cacert "$DIR/serving/serving-ca.crt" "https://${IPS[$1]}:$PORT/livez"; }
for i in 0 1 2; do start_replica "$i"; done
for i in 0 1 2; do _kd_wait "$DIR" "replica-$i" 30 replica_up "$i"; done
log "replicas on ${IPS[*]}:$PORT (peers :$PEER_PORT), R=$R"

k apply -f "$ROOT/manifests/service.yaml" >&2
PORT_NAME=$(k -n "$NS" get service "$SVC" -o 'jsonpath={.spec.ports[0].name}')
endpointslice() { # ADDRESS READY ...
  local eps="" a
  while (($#)); do
    eps+="- addresses: [\"$1\"]"$'\n'"  conditions: {ready: $2}"$'\n'
    shift 2
  done
  cat <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $SVC-ha
  namespace: $NS
  labels: {kubernetes.io/service-name: $SVC, endpointslice.kubernetes.io/managed-by: kubedojo-e2e}
addressType: IPv4
endpoints:
$eps
ports:
- {name: "$PORT_NAME", port: $PORT, protocol: TCP}
EOF
}
endpointslice "${IPS[0]}" true "${IPS[1]}" true "${IPS[2]}" true | k apply -f - >&2
k apply -f "$ROOT/manifests/apiservice.yaml" -f "$ROOT/manifests/components/metrics-server-takeover/apiservice.yaml" >&2
CA_BUNDLE=$(base64 -w0 <"$DIR/serving/serving-ca.crt")
for a in v1alpha1.data.kubedojo.io v1beta1.metrics.k8s.io; do
  k patch apiservice "$a" --type=merge -p "{\"spec\":{\"caBundle\":\"$CA_BUNDLE\",\"insecureSkipTLSVerify\":false}}" >&2
done
kd_wait_apiservice "$DIR" v1beta1.metrics.k8s.io 60
log "set-up done"

# ---------------------------------------------------------------- helpers

requests() { cat "$DIR/sim-requests" 2>/dev/null || echo 0; }
# requests_per_cycle CYCLES: kubelet requests over CYCLES whole cycles, divided by CYCLES,
# sampled 3/4 into a cycle (ticks are wall-clock aligned; scrapes start at 0, peer fetches
# and fallback scrapes end by 3/4).
align() { # sleep until 3/4 into the current cycle
  local now wait ns=$((RES * 1000000000))
  now=$(date +%s%N)
  wait=$(((ns * 3 / 4 - now % ns + ns) % ns))
  sleep "$((wait / 1000000000)).$(printf '%09d' $((wait % 1000000000)))"
}
requests_per_cycle() {
  local n=$1 a b
  align
  a=$(requests)
  sleep $((RES * n))
  b=$(requests)
  echo $(((b - a) / n))
}
direct_pods() { # I: pods replica I serves (queried directly, admin certificate)
  curl -sS --max-time 5 --cacert "$DIR/serving/serving-ca.crt" --cert "$KD_PKI/admin.crt" --key "$KD_PKI/admin.key" \
    "https://${IPS[$1]}:$PORT/apis/metrics.k8s.io/v1beta1/pods" |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("items", [])))'
}
all_replicas_full() {
  local i n
  for i in "$@"; do
    n=$(direct_pods "$i" 2>/dev/null || echo 0)
    [[ $n == "$PODS" ]] || { echo "replica-$i serves $n of $PODS pods"; return 1; }
  done
}
wait_full() {
  local end=$((SECONDS + $1))
  shift
  until all_replicas_full "$@" >"$DIR/full.out"; do
    ((SECONDS < end)) || { cat "$DIR/full.out"; return 1; }
    sleep 1
  done
}
expect_per_cycle() { # WANT: one whole cycle (wall-clock aligned ticks: exactly one tick's requests)
  local got
  got=$(requests_per_cycle 1)
  echo "kubelet requests per cycle: $got (R x nodes = $1; replicas x nodes = $((3 * NODES)))"
  [[ $got == "$1" ]]
}

# ================================================================ checks

check "every replica, queried directly, answers every one of the $PODS pods" wait_full 30 0 1 2
check "kubelet requests per cycle = R x nodes ($((R * NODES))), not 3 x nodes" expect_per_cycle $((R * NODES))
leases() { k -n "$NS" get leases -l app.kubernetes.io/component=kubedojo-ha-member -o name | sort | tr '\n' ' '; }
lease_count() {
  local out
  out=$(k -n "$NS" get leases -l app.kubernetes.io/component=kubedojo-ha-member -o name | sort | tr '\n' ' ')
  echo "member Leases: $out"
  [[ $(wc -w <<<"$out") == "$1" ]]
}
check "three member Leases in $NS" lease_count 3
top_all() {
  local n
  n=$(k top pod -A --no-headers | wc -l)
  echo "kubectl top pod -A: $n pods"
  [[ $n == "$PODS" ]]
}
check "through kube-apiserver: kubectl top pod -A lists every pod" top_all

own_scrapes() { # I: kubelet requests replica I has made (its /metrics)
  curl -sS --max-time 5 --cacert "$DIR/serving/serving-ca.crt" --cert "$KD_PKI/admin.crt" --key "$KD_PKI/admin.key" \
    "https://${IPS[$1]}:$PORT/metrics" |
    awk '/^metrics_server_kubelet_request_duration_seconds_count/ {s += $2} END {printf "%d\n", s}'
}
self_counter() { # I NAME: a counter of replica I's /metrics
  curl -sS --max-time 5 --cacert "$DIR/serving/serving-ca.crt" --cert "$KD_PKI/admin.crt" --key "$KD_PKI/admin.key" \
    "https://${IPS[$1]}:$PORT/metrics" | awk -v n="$2" '$1 == n {v = $2} END {printf "%d\n", v}'
}
# shares: kubelet requests of each replica over one cycle, into SHARE[0..2] (and printed)
shares() {
  local a=() b=() i
  align
  for i in 0 1 2; do a[i]=$(own_scrapes "$i"); done
  sleep "$RES"
  for i in 0 1 2; do b[i]=$(own_scrapes "$i"); done
  for i in 0 1 2; do SHARE[i]=$((b[i] - a[i])); done
  echo "kubelet requests in one cycle by replica 0, 1, 2: ${SHARE[*]}"
}
SHARE=()
own_shards() {
  shares >"$DIR/shares.out"
  cat "$DIR/shares.out"
  local total=$((SHARE[0] + SHARE[1] + SHARE[2]))
  ((total == R * NODES))
}
check "each replica scrapes its own rendezvous shard (the shares add up to R x nodes)" own_shards
read -r -a SHARE_BEFORE <<<"$(sed 's/.*: //' "$DIR/shares.out")"

# kill_during_poll VICTIM MAX_GAP: HPA-style polling (through kube-apiserver every 0.25 s, and
# each survivor directly) while replica VICTIM is SIGKILLed; MAX_GAP is the longest a pod may be
# missing from a URL's answers (one resolution for R = 1, 0 for R = 2: never missing at all).
kill_during_poll() {
  local victim=$1 max_gap=$2 i
  VICTIM=$victim
  SURVIVORS=()
  for i in 0 1 2; do ((i == VICTIM)) || SURVIVORS+=("$i"); done
  log "R=$R: polling while replica-$VICTIM (${SHARE_BEFORE[VICTIM]} nodes) is SIGKILLed"
  rm -f "$DIR/poll.jsonl"
  $POLL poll "$DIR/poll.jsonl" "$POLL_SECS" 0.25 "$API_URL" "$DIR/poll-ca.crt" "$KD_PKI/admin.crt" "$KD_PKI/admin.key" \
    "https://${IPS[${SURVIVORS[0]}]}:$PORT/apis/metrics.k8s.io/v1beta1/pods" \
    "https://${IPS[${SURVIVORS[1]}]}:$PORT/apis/metrics.k8s.io/v1beta1/pods" &
  POLL_PID=$!
  sleep "$RES"
  KILL_AT=$(date +%s.%N)
  kill -KILL "$(cat "$DIR/replica-$VICTIM.pid")"
  # What the kubelet and the EndpointSlice controller do after a container dies: the
  # endpoint turns not ready (here as soon as the process is gone).
  while kill -0 "$(cat "$DIR/replica-$VICTIM.pid")" 2>/dev/null; do sleep 0.05; done
  local ready=(true true true)
  ready[VICTIM]=false
  endpointslice "${IPS[0]}" "${ready[0]}" "${IPS[1]}" "${ready[1]}" "${IPS[2]}" "${ready[2]}" | k apply -f - >/dev/null
  GONE_AT=$(date +%s.%N)
  log "replica-$VICTIM killed; its endpoint not ready after $(python3 -c "print(round($GONE_AT - $KILL_AT, 2))")s"
  wait "$POLL_PID" || true
  POLL_PID=
  local what="no pod missing longer than one resolution (${RES}s)"
  [[ $max_gap == 0 ]] && what="no pod missing from any answer at all"
  check "R=$R, SIGKILL during polling: no request failed, $what" \
    $POLL analyse "$DIR/poll.jsonl" "$max_gap" "$PODS" --dead-window "$KILL_AT" "$GONE_AT" --dead-address "${IPS[$VICTIM]}"
}
# restart_victim: start the killed replica again and put it back into the EndpointSlice
restart_victim() {
  log "restarting replica-$VICTIM"
  start_replica "$VICTIM"
  _kd_wait "$DIR" "replica-$VICTIM" 30 replica_up "$VICTIM"
  endpointslice "${IPS[0]}" true "${IPS[1]}" true "${IPS[2]}" true | k apply -f - >/dev/null
}
API_URL="$KD_APISERVER_URL/apis/metrics.k8s.io/v1beta1/pods"
POLL_SECS=$((RES * 2 + LEASE + 2))
# kube-apiserver's CA and the replicas' serving CA: one bundle for both kinds of poller.
cat "$KD_CA_CRT" "$DIR/serving/serving-ca.crt" >"$DIR/poll-ca.crt"

# ---- SIGKILL the replica with the largest shard during HPA-style polling
BIG=0
for i in 1 2; do ((SHARE_BEFORE[i] > SHARE_BEFORE[BIG])) && BIG=$i; done
kill_during_poll "$BIG" "$RES"

# ---- the dead member's Lease has expired by now (LEASE + renew period)
check "after the dead replica's Lease expired: requests per cycle back to R x nodes" expect_per_cycle $((R * NODES))
check "the two survivors answer every pod" wait_full 10 "${SURVIVORS[@]}"

# ---- bring it back
restart_victim
check "restarted: every replica answers every pod again" wait_full 30 0 1 2
# The others see the new Lease within a renewal period (LEASE / 3); let that cycle pass.
sleep "$RES"
check "rebalanced: requests per cycle = R x nodes with three members" expect_per_cycle $((R * NODES))
rejoined() {
  shares
  # Rendezvous over the same three members: the restarted one owns exactly its old shard.
  echo "replica-$VICTIM: ${SHARE_BEFORE[VICTIM]} nodes before the kill, ${SHARE[VICTIM]} after its restart"
  ((SHARE[VICTIM] == SHARE_BEFORE[VICTIM] && SHARE[VICTIM] > 0))
}
check "the restarted replica scrapes its old shard again (same members, same rendezvous owners)" rejoined

# ================================================================ R = 2, same cluster and fleet
# The three replicas stop gracefully (their Leases go with them) and start again with
# --scrape-replication=2: each node has two owners, so a SIGKILL costs nothing at all.
((R2 == 1)) || exit 0
log "R=2: restarting the three replicas with --scrape-replication=2"
for i in 0 1 2; do _kd_stop "$DIR" "replica-$i"; done
R=2
for i in 0 1 2; do start_replica "$i"; done
for i in 0 1 2; do _kd_wait "$DIR" "replica-$i" 30 replica_up "$i"; done
check "R=2: every replica answers every pod" wait_full 30 0 1 2
check "R=2: kubelet requests per cycle = 2 x nodes ($((2 * NODES))), not 3 x nodes" expect_per_cycle $((2 * NODES))
fallbacks() { # total kubedojo_peer_fallback_scrapes of the listed replicas
  local i n=0
  for i in "$@"; do n=$((n + $(self_counter "$i" kubedojo_peer_fallback_scrapes_total))); done
  echo "$n"
}
check "R=2: each node in two replicas' shards (the shares add up to 2 x nodes)" own_shards
read -r -a SHARE_BEFORE <<<"$(sed 's/.*: //' "$DIR/shares.out")"
BIG=0
for i in 1 2; do ((SHARE_BEFORE[i] > SHARE_BEFORE[BIG])) && BIG=$i; done
FALLBACK_BEFORE=$(fallbacks 0 1 2)
kill_during_poll "$BIG" 0
no_fallback() {
  local after
  after=$(fallbacks "${SURVIVORS[@]}")
  echo "fallback scrapes of the survivors: $FALLBACK_BEFORE before the kill (all three), $after after it"
  ((after <= FALLBACK_BEFORE))
}
check "R=2: the survivors never scraped a node for want of an owner (the second owner delivered)" no_fallback
check "R=2, the dead replica's Lease expired: requests per cycle = 2 x nodes (two members, each scrapes all)" \
  expect_per_cycle $((2 * NODES))
restart_victim
check "R=2, restarted: every replica answers every pod again" wait_full 30 0 1 2
sleep "$RES"
check "R=2, rebalanced: requests per cycle = 2 x nodes with three members" expect_per_cycle $((2 * NODES))
