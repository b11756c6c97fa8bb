# DataRecords from a real PostgreSQL table through the real kube-aggregator (issue 11 §3).
# Sourced by tests/e2e/run.sh last (uses its check, k, retry, _kd_start/_kd_stop/_kd_wait,
# SERVER_ARGS, BIN, DIR, SVC, SVC_NS, SVC_PORT_NAME, KD_EXT_HOST_IP, KD_PKI, SIM, SIM_ARGS).
#
# Starts PostgreSQL (Debian's postgresql package: initdb in $DIR/pg, a Unix socket only),
# replaces our one in-memory server with TWO replicas serving the table source
# (--postgres-dsn-file, --postgres-migrate) behind the same Service (one EndpointSlice
# each), then checks with kubectl and psql:
#   - `kubectl get dr -n pg-e2e -w` sees an INSERT, an UPDATE and a DELETE made with psql,
#     each within one second of psql starting;
#   - both replicas serve the same resourceVersions (list and watch, asked directly);
#   - a list+watch client (dr_informer.py: client-go's reflector loop over kubectl) keeps
#     watching while both replicas restart one after the other and writes go on; it ends
#     with exactly the table's state, resuming from its last resourceVersion (no relist);
#   - the database stopped: DataRecords answer a 503 ServiceUnavailable Status with
#     Retry-After through the aggregator, `kubectl top node` keeps working, the
#     APIServices stay Available; the database back: lists work again, no restart.
# Adds about 50 s to run.sh (47 s measured on the shared 2-core machine).

PG_T0=$SECONDS
PG_BIN=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n1)
PG_NS=pg-e2e
PG_TABLE=e2e.datarecords
PGDIR=$DIR/pg
# initdb and postgres refuse to run as root: they run as nobody in a directory it owns.
if [[ $(id -u) == 0 ]]; then
  AS_PG=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)
else
  AS_PG=(env)
fi
PG_DSN="host=$PGDIR port=5432 user=postgres dbname=postgres"

pg_sql() { "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -d "$PG_DSN" -c "$1"; }
pg_start() {
  _kd_start "$DIR" postgres "${AS_PG[@]}" "$PG_BIN/postgres" -D "$PGDIR/data" -k "$PGDIR" -p 5432 \
    -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off
  _kd_wait "$DIR" postgres 30 pg_sql 'SELECT 1'
}
# fast shutdown (SIGINT): clients are disconnected at once
pg_stop() {
  local pid i
  [[ -f $DIR/postgres.pid ]] || return 0
  pid=$(cat "$DIR/postgres.pid")
  kill -INT "$pid" 2>/dev/null || true
  for ((i = 0; i < 80; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  rm -f "$DIR/postgres.pid"
}

# replica NAME PORT: our server with the table source, as run.sh started the first one
PG_SERVER_ARGS=()
for a in "${SERVER_ARGS[@]}"; do [[ $a == --secure-port=* ]] || PG_SERVER_ARGS+=("$a"); done
PG_SERVER_ARGS+=(--postgres-dsn-file="$PGDIR/dsn" --postgres-schema=e2e --postgres-migrate
  --postgres-connect-timeout=2s --postgres-statement-timeout=2s)
replica_start() {
  NO_COLOR=1 _kd_start "$DIR" "$1" "$BIN" --secure-port="$2" "${PG_SERVER_ARGS[@]}"
  # shellcheck disable=SC2317 # called by _kd_wait
  replica_up() { curl -sS -o /dev/null --max-time 2 --cacert "$DIR/serving/serving-ca.crt" "https://$KD_EXT_HOST_IP:$1/livez"; }
  _kd_wait "$DIR" "$1" 30 replica_up "$2"
}
# replica_get PORT PATH: GET straight to one replica as admin (front-proxy certificate)
replica_get() {
  curl -sS --fail-with-body --max-time 10 --cacert "$DIR/serving/serving-ca.crt" \
    --cert "$KD_PKI/front-proxy-client.crt" --key "$KD_PKI/front-proxy-client.key" \
    -H 'X-Remote-User: e2e-admin' -H 'X-Remote-Group: system:masters' \
    "https://$KD_EXT_HOST_IP:$1$2"
}
endpoint_slice() {
  cat <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $SVC-e2e-$1
  namespace: $SVC_NS
  labels:
    kubernetes.io/service-name: $SVC
    endpointslice.kubernetes.io/managed-by: kubedojo-e2e
addressType: IPv4
endpoints:
- addresses: ["$KD_EXT_HOST_IP"]
  conditions: {ready: true}
ports:
- {name: "$SVC_PORT_NAME", port: $2, protocol: TCP}
EOF
}

# (checks run in subshells: what later checks need is set here)
PG_PORT_A=$(_kd_free_port "$PORT")
PG_PORT_B=$(_kd_free_port "$PORT" "$PG_PORT_A")

pg_setup() {
  [[ -n $PG_BIN && -x $PG_BIN/postgres ]] || {
    echo "PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)"
    return 1
  }
  mkdir -p "$PGDIR"
  chmod o+x "$DIR"
  [[ $(id -u) != 0 ]] || chown nobody:nogroup "$PGDIR"
  "${AS_PG[@]}" "$PG_BIN/initdb" -D "$PGDIR/data" -A trust -U postgres --no-sync -E UTF8 --locale=C >"$PGDIR/initdb.log" 2>&1 || {
    cat "$PGDIR/initdb.log"
    return 1
  }
  printf '%s\n' "$PG_DSN" >"$PGDIR/dsn"
  pg_start || return 1
  # the first in-memory server goes; kubelet-sim comes back (run.sh stopped it) for kubectl top
  _kd_stop "$DIR" kubedojo-data-api
  if [[ $SIM == true ]] && ! _kd_alive "$DIR/kubelet-sim.pid"; then
    _kd_start "$DIR" kubelet-sim "$BIN" kubelet-sim "${SIM_ARGS[@]}"
  fi
  replica_start kd-pg-a "$PG_PORT_A" || return 1
  replica_start kd-pg-b "$PG_PORT_B" || return 1
  pg_sql "SELECT count(*) FROM $PG_TABLE" >/dev/null || return 1
  k -n "$SVC_NS" delete endpointslice "$SVC-e2e" >/dev/null || return 1
  { endpoint_slice a "$PG_PORT_A" && echo --- && endpoint_slice b "$PG_PORT_B"; } | k apply -f - >/dev/null || return 1
  k get namespace "$PG_NS" >/dev/null 2>&1 || k create namespace "$PG_NS" >/dev/null || return 1
  # both replicas answer through the aggregator (the list is the table's: empty)
  pg_list_empty() {
    local out
    out=$(k get dr -n "$PG_NS" -o name) && [[ -z $out ]]
  }
  retry 30 pg_list_empty
}
check "postgres: PostgreSQL started, two replicas with --postgres-dsn-file/--postgres-migrate behind the Service" pg_setup

# now: seconds since the epoch with nanoseconds
now() { date +%s.%N; }

check_pg_kubectl_watch() {
  local out=$DIR/pg-watch.out t0 ev line
  : >"$out"
  # each line of kubectl's output, stamped with the time it arrived
  (k get dr -n "$PG_NS" -w --output-watch-events --no-headers 2>&1 |
    while IFS= read -r line; do printf '%s %s\n' "$(now)" "$line"; done >"$out") &
  local watcher=$!
  sleep 2 # the watch is established (it prints nothing: the namespace is empty)
  # wait_line PATTERN T0: the arrival time of the first line matching PATTERN, minus T0
  wait_line() {
    local i l
    for ((i = 0; i < 100; i++)); do
      l=$(grep -E "$1" "$out" | head -n1)
      if [[ -n $l ]]; then
        python3 -c 'import sys; print(f"{float(sys.argv[1]) - float(sys.argv[2]):.3f}")' "${l%% *}" "$2"
        return 0
      fi
      sleep 0.05
    done
    return 1
  }
  local rc=0 d
  for ev in " ADDED +watched( |$)" " MODIFIED +watched( |$)" " DELETED +watched( |$)"; do
    t0=$(now)
    case $ev in
      " ADDED"*) pg_sql "INSERT INTO $PG_TABLE (namespace, name, data) VALUES ('$PG_NS', 'watched', '{\"v\":\"1\"}')" ;;
      " MODIFIED"*) pg_sql "UPDATE $PG_TABLE SET data = '{\"v\":\"2\"}' WHERE namespace = '$PG_NS' AND name = 'watched'" ;;
      " DELETED"*) pg_sql "DELETE FROM $PG_TABLE WHERE namespace = '$PG_NS' AND name = 'watched'" ;;
    esac
    if ! d=$(wait_line "$ev" "$t0"); then
      echo "kubectl -w did not show '$ev' within 5 s"
      rc=1
      continue
    fi
    echo "${ev%% +*}: ${d}s" | tee -a "$DIR/pg-watch-delays"
    python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) < 1.0 else 1)' "$d" || {
      echo "'$ev' took ${d}s (more than 1 s)"
      rc=1
    }
  done
  kill_tree "$watcher" 2>/dev/null || true
  ((rc == 0)) || { echo "--- kubectl -w output:"; cat "$out"; }
  return $rc
}
check "postgres: kubectl get dr -w sees a psql INSERT, UPDATE and DELETE, each within 1 s" check_pg_kubectl_watch

check_pg_replicas_agree() {
  local a b rv
  pg_sql "INSERT INTO $PG_TABLE (namespace, name, labels, data) VALUES
    ('$PG_NS', 'r1', '{\"app\":\"web\"}', '{\"v\":\"1\"}'), ('$PG_NS', 'r2', '{}', '{\"v\":\"2\"}')" || return 1
  a=$(replica_get "$PG_PORT_A" "/apis/data.kubedojo.io/v1alpha1/namespaces/$PG_NS/datarecords") || { echo "replica a: $a"; return 1; }
  b=$(replica_get "$PG_PORT_B" "/apis/data.kubedojo.io/v1alpha1/namespaces/$PG_NS/datarecords") || { echo "replica b: $b"; return 1; }
  python3 - "$a" "$b" <<'EOF' || return 1
import json, sys
a, b = (json.loads(x) for x in sys.argv[1:3])
view = lambda l: (l["metadata"]["resourceVersion"], [(i["metadata"]["name"], i["metadata"]["resourceVersion"], i["metadata"]["uid"]) for i in l["items"]])
assert view(a) == view(b), (view(a), view(b))
assert len(a["items"]) == 2, a
print("both replicas: list resourceVersion", a["metadata"]["resourceVersion"], "items", view(a)[1])
EOF
  rv=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["metadata"]["resourceVersion"])' "$a")
  pg_sql "UPDATE $PG_TABLE SET labels = '{}' WHERE namespace = '$PG_NS' AND name = 'r1'; DELETE FROM $PG_TABLE WHERE namespace = '$PG_NS' AND name = 'r2'" || return 1
  # the same watch from the same version on each replica: the same events
  local path="/apis/data.kubedojo.io/v1alpha1/namespaces/$PG_NS/datarecords?watch=1&resourceVersion=$rv&timeoutSeconds=2"
  a=$(replica_get "$PG_PORT_A" "$path") || return 1
  b=$(replica_get "$PG_PORT_B" "$path") || return 1
  python3 - "$a" "$b" <<'EOF'
import json, sys
ev = lambda s: [(e["type"], e["object"]["metadata"]["name"], e["object"]["metadata"]["resourceVersion"]) for e in map(json.loads, s.splitlines()) if e["type"] != "BOOKMARK"]
a, b = ev(sys.argv[1]), ev(sys.argv[2])
assert a == b, (a, b)
assert [t for t, _, _ in a] == ["MODIFIED", "DELETED"], a
print("both replicas' watch events:", a)
EOF
}
check "postgres: two replicas serve the same resourceVersions (list and watch)" check_pg_replicas_agree

check_pg_informer_across_restarts() {
  local state=$DIR/pg-informer.json i rc=0
  rm -f "$state"
  python3 "$E2E_DIR/dr_informer.py" "$KUBECTL" "$DIR/admin.kubeconfig" \
    "/apis/data.kubedojo.io/v1alpha1/namespaces/$PG_NS/datarecords" "$state" >"$DIR/pg-informer.log" 2>&1 &
  local informer=$!
  for ((i = 0; i < 40; i++)); do [[ -s $state ]] && break; sleep 0.25; done
  # writes before, during and after each replica's restart
  write_batch() {
    pg_sql "INSERT INTO $PG_TABLE (namespace, name, data) VALUES ('$PG_NS', 'i$1', '{\"v\":\"$1\"}');
      UPDATE $PG_TABLE SET data = '{\"v\":\"u$1\"}' WHERE namespace = '$PG_NS' AND name = 'r1';
      DELETE FROM $PG_TABLE WHERE namespace = '$PG_NS' AND name = 'i$(($1 - 2))'" >/dev/null
  }
  write_batch 1 && write_batch 2 || rc=1
  local n=3 r port
  for r in a b; do
    port=$PG_PORT_A
    [[ $r == b ]] && port=$PG_PORT_B
    _kd_stop "$DIR" "kd-pg-$r"
    write_batch $n && write_batch $((n + 1)) || rc=1
    replica_start "kd-pg-$r" "$port" || rc=1
    write_batch $((n + 2)) || rc=1
    n=$((n + 3))
  done
  local want
  want=$(pg_sql "SELECT coalesce(jsonb_object_agg(namespace || '/' || name, data), '{}') FROM $PG_TABLE WHERE namespace = '$PG_NS'")
  # the informer catches up with the table
  informer_done() {
    python3 - "$state" "$want" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
want = json.loads(sys.argv[2])
if s["items"] != want:
    print("informer:", s["items"], "\ntable:   ", want)
    sys.exit(1)
EOF
  }
  retry 20 informer_done || rc=1
  kill "$informer" 2>/dev/null || true
  wait "$informer" 2>/dev/null || true
  python3 - "$state" <<'EOF' || rc=1
import json, sys
s = json.load(open(sys.argv[1]))
print(f"informer: {s['events']} events, {s['rewatches']} re-watches, {s['relists']} list(s), last resourceVersion {s['rv']}")
assert not s["errors"], s["errors"]
assert s["rewatches"] >= 1, "the watch was never cut by a restart"
assert s["relists"] == 1, "the informer had to relist: the resourceVersion did not survive the restarts"
open(sys.argv[1] + ".summary", "w").write(f"{s['events']} events, {s['rewatches']} re-watches, {s['relists']} list")
EOF
  ((rc == 0)) || { echo "--- informer log:"; tail -n 40 "$DIR/pg-informer.log"; }
  return $rc
}
check "postgres: a list+watch informer ends with the table's state across restarts of both replicas (no relist)" check_pg_informer_across_restarts

check_pg_down() {
  local code rc=0 hdr=$DIR/pg-down.hdr body=$DIR/pg-down.json
  # metrics are served by the replicas (they scrape kubelet-sim) before the database goes
  retry 40 k top node --no-headers >/dev/null || return 1
  pg_stop
  code=$(curl -sS -o "$body" -D "$hdr" -w '%{http_code}' --max-time 15 --cacert "$KD_CA_CRT" \
    --cert "$KD_ADMIN_CRT" --key "$KD_ADMIN_KEY" \
    "$KD_APISERVER_URL/apis/data.kubedojo.io/v1alpha1/namespaces/$PG_NS/datarecords") || code=000
  python3 - "$code" "$body" <<'EOF' || rc=1
import json, sys
code, body = sys.argv[1], open(sys.argv[2]).read()
s = json.loads(body)
assert code == "503", (code, body)
assert (s["kind"], s["code"], s["reason"]) == ("Status", 503, "ServiceUnavailable"), s
assert "database" in s["message"], s
print("database down: HTTP 503", s["reason"], "-", s["message"])
EOF
  grep -qi '^retry-after: *[0-9]' "$hdr" || {
    echo "no Retry-After header through the aggregator:"
    cat "$hdr"
    rc=1
  }
  # kubectl shows the error, not an empty list
  local out
  if out=$(k get dr -n "$PG_NS" 2>&1); then
    echo "kubectl get dr succeeded with the database down: $out"
    rc=1
  fi
  k top node --no-headers >"$DIR/pg-top.txt" 2>&1 || {
    echo "kubectl top node failed while the database is down:"
    cat "$DIR/pg-top.txt"
    rc=1
  }
  for a in "${APISERVICES[@]}"; do
    apiservice_available "$a" || {
      echo "apiservice/$a not Available while the database is down"
      rc=1
    }
  done
  pg_start || return 1
  pg_back() { k get dr -n "$PG_NS" --no-headers | grep -q '^r1 '; }
  retry 20 pg_back || rc=1
  return $rc
}
check "postgres: database stopped -> 503 ServiceUnavailable + Retry-After through the aggregator, kubectl top keeps working; back without a restart" check_pg_down

_kd_stop "$DIR" kd-pg-a
_kd_stop "$DIR" kd-pg-b
pg_stop
log "postgres checks: $((SECONDS - PG_T0))s; psql to kubectl -w: $(tr '\n' ' ' <"$DIR/pg-watch-delays" 2>/dev/null || true); informer: $(cat "$DIR/pg-informer.json.summary" 2>/dev/null || true)"
