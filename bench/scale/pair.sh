#!/usr/bin/env bash
# Shared by golden.sh, first_metric.sh and watchers.sh (sourced, not run): our server and
# metrics-server side by side on one kubelet-sim fleet behind one kube-apiserver, on two
# loopback ports (or ours alone: PAIR_SERVERS=ours).
#
# The caller sets ROOT, E2E, OUT, KEEP, NODES, PODS, CONTAINERS, RESOLUTION, RES_S and defines
# log/die; optionally PAIR_SERVERS ("ours ms" by default) and OURS_EXTRA (more flags for ours);
# then calls, in order:
#   pair_binaries [EXTRA_BIN...]     KD_BIN, KD_LOAD, MS_BIN (built or cached), all executable
#   pair_cluster_up                  control plane in $OUT/cluster; ADMIN_KC, CERT, PIDS; the
#                                    EXIT trap stops everything it and the caller started
#   pair_fleet ADDR READY SIMARG...  kubelet-sim from ADDR (ready when its log matches READY),
#                                    its objects created in kube-apiserver; EXPECT_NODES/PODS
#   pair_servers [PORT_AFTER]        both servers (same flags, --v=1) on PORT[ours], PORT[ms],
#                                    waited for until each serves the whole fleet; SPID[ours],
#                                    SPID[ms] their process ids
PAIR_SERVERS=${PAIR_SERVERS:-ours ms}
[[ -n ${OURS_EXTRA+x} ]] || OURS_EXTRA=()

pair_binaries() {
  if [[ -z ${KD_BIN:-} || -z ${KD_LOAD:-} ]]; then
    (cd "$ROOT" && cargo build --release --locked --bin kubedojo-data-api --bin kd-load >&2)
  fi
  local target_dir=${CARGO_TARGET_DIR:-$ROOT/target} b
  KD_BIN=${KD_BIN:-$target_dir/release/kubedojo-data-api}
  KD_LOAD=${KD_LOAD:-$target_dir/release/kd-load}
  if [[ " $PAIR_SERVERS " == *" ms "* ]]; then
    MS_BIN=${METRICS_SERVER_BIN:-$("$E2E/tools.sh" path metrics-server | tail -n1)}
  else
    MS_BIN=$KD_BIN
  fi
  for b in "$KD_BIN" "$KD_LOAD" "$MS_BIN" "$@"; do [[ -x $b ]] || die "not an executable: $b"; done
}

_pair_cleanup() {
  local rc=$? p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  kd_cluster_down "$CL" >/dev/null 2>&1 || true
  [[ $KEEP == true ]] || rm -rf "$CL" "$OUT"/certs-*
  exit $rc
}

pair_cluster_up() {
  # shellcheck source=tests/e2e/cluster.sh
  source "$E2E/cluster.sh"
  CL=$OUT/cluster
  PIDS=()
  trap _pair_cleanup EXIT
  KUBEDOJO_AGGREGATOR_ROUTING=false kd_cluster_up "$CL" >"$OUT/cluster-up.log" 2>&1 ||
    die "control plane: $(tail -5 "$OUT/cluster-up.log")"
  # shellcheck disable=SC1091
  source "$CL/cluster.env"
  ADMIN_KC=$CL/admin.kubeconfig
  CERT=(--cert "$CL/pki/admin.crt" --key "$CL/pki/admin.key")
}

pair_fleet() {
  local addr=$1 ready=$2 i
  shift 2
  "$KD_BIN" kubelet-sim --nodes "$NODES" --pods-per-node "$PODS" --containers-per-pod "$CONTAINERS" \
    --namespaces 3 --first-address "$addr" --port 10250 --idle-percent 0 --deployment-pods 3-8 \
    "$@" --objects-out "$OUT/objects.json" --ca-out "$OUT/sim-ca.crt" \
    </dev/null >"$OUT/kubelet-sim.log" 2>&1 &
  PIDS+=($!)
  local sim=$!
  for ((i = 0; i < 120; i++)); do
    grep -q "$ready" "$OUT/kubelet-sim.log" 2>/dev/null && break
    kill -0 "$sim" 2>/dev/null || die "kubelet-sim exited: $(tail -5 "$OUT/kubelet-sim.log")"
    sleep 0.5
  done
  "$KD_LOAD" "${CERT[@]}" create --apiserver "$KD_APISERVER_URL" --objects "$OUT/objects.json" \
    --concurrency 16 >"$OUT/create.log" 2>&1 || die "creating objects: $(tail -3 "$OUT/create.log")"
  "$KD_LOAD" targets --objects "$OUT/objects.json" >"$OUT/targets.json"
  read -r EXPECT_NODES EXPECT_PODS < <(python3 -c '
import json, sys
t = json.load(open(sys.argv[1]))
print(t["nodes"], t["pods"])' "$OUT/targets.json")
}

pair_servers() {
  declare -gA PORT SPID
  PORT[ours]=$(_kd_free_port "$@")
  PORT[ms]=$(_kd_free_port "${PORT[ours]}")
  local s args
  for s in $PAIR_SERVERS; do
    mkdir -p "$OUT/certs-$s"
    args=(--secure-port="${PORT[$s]}" --bind-address=127.0.0.1 --cert-dir="$OUT/certs-$s"
      --kubeconfig="$ADMIN_KC" --authentication-kubeconfig="$ADMIN_KC" --authorization-kubeconfig="$ADMIN_KC"
      --kubelet-certificate-authority="$OUT/sim-ca.crt" --kubelet-use-node-status-port
      --kubelet-preferred-address-types=InternalIP --metric-resolution="$RESOLUTION"
      --kubelet-request-timeout="$((RES_S / 2))s" --v=1)
    if [[ $s == ours ]]; then
      NO_COLOR=1 "$KD_BIN" "${args[@]}" "${OURS_EXTRA[@]}" </dev/null >"$OUT/$s.log" 2>&1 &
    else
      "$MS_BIN" "${args[@]}" </dev/null >"$OUT/$s.log" 2>&1 &
    fi
    PIDS+=($!)
    SPID[$s]=$!
  done
  for s in $PAIR_SERVERS; do
    "$KD_LOAD" "${CERT[@]}" wait --url "https://127.0.0.1:${PORT[$s]}" --nodes "$EXPECT_NODES" \
      --pods "$EXPECT_PODS" --timeout 120 >"$OUT/$s.wait.log" 2>&1 ||
      die "$s never served the whole fleet: $(tail -3 "$OUT/$s.wait.log") (log: $OUT/$s.log)"
  done
}
