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
#   - the union (last): one server on the chart's rendered sources config (file + postgres +
#     computed): kubectl get dr -A / -l / --chunk-size across the three, a composite list
#     resourceVersion, one kubectl -w seeing a psql INSERT/DELETE and a file edit, a row
#     hidden by the file's record never shown (about 17 s of the total);
#   - manifests/components/postgres-query: its Role applied, a server on its sources config
#     reads and watches the definitions ConfigMap with its own ServiceAccount token; kubectl
#     gets the query records through the aggregator, a ConfigMap edit adds one.
# Adds about 55 s to run.sh (54 s measured on the shared 2-core machine); the postgres-query
# part about 10 s more (measured at load average 10-14, debug binary).

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
      l=$(grep -m1 -E "$1" "$out")
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
  pg_back() { k get dr -n "$PG_NS" --no-headers | grep '^r1 ' >/dev/null; }
  retry 20 pg_back || rc=1
  return $rc
}
check "postgres: database stopped -> 503 ServiceUnavailable + Retry-After through the aggregator, kubectl top keeps working; back without a restart" check_pg_down

# ---------------------------------------------------------------- the union
# The table combined with a file source and the computed records in one --sources-config
# (issue 10 §2/§4, issue 11): the config is the chart's own (helm template of
# configmap-sources.yaml with sources.postgres.enabled and records.existingConfigMap),
# its mount paths pointed at local files. One server replaces the two replicas (their
# in-memory parts have different epochs: a client moving between them relists).
UNION_NS=union-e2e
UNION_T0=$SECONDS
union_records() {
  cat <<EOF
- metadata: {name: from-file, namespace: $UNION_NS, labels: {app: web}}
  spec: {source: file, data: {v: "$1"}}
- metadata: {name: shadow, namespace: $UNION_NS}
  spec: {source: file, data: {v: file-wins}}
EOF
}
pg_union_setup() {
  local helm
  helm=$("$E2E_DIR/tools.sh" path helm | tail -n1) || return 1
  "$helm" template kd "$ROOT/charts/kubedojo-data-api" --show-only templates/configmap-sources.yaml \
    --set sources.postgres.enabled=true --set sources.postgres.existingSecret=pg-dsn \
    --set sources.postgres.schema=e2e --set records.existingConfigMap=union-records >"$PGDIR/chart-sources.yaml" || return 1
  python3 - "$PGDIR/chart-sources.yaml" "$PGDIR" >"$PGDIR/sources.yaml" <<'EOF' || return 1
import sys, yaml
text = yaml.safe_load(open(sys.argv[1]))["data"]["sources.yaml"]
kinds = [s["kind"] for s in yaml.safe_load(text)["sources"]]
assert kinds == ["file", "postgres", "computed"], kinds
print(text.replace("/etc/kubedojo-data-api/postgres/dsn", sys.argv[2] + "/dsn")
          .replace("/etc/kubedojo-data-api/records/records.yaml", sys.argv[2] + "/records.yaml"))
EOF
  union_records 1 >"$PGDIR/records.yaml"
  _kd_stop "$DIR" kd-pg-a
  _kd_stop "$DIR" kd-pg-b
  local args=()
  for a in "${SERVER_ARGS[@]}"; do [[ $a == --secure-port=* ]] || args+=("$a"); done
  NO_COLOR=1 _kd_start "$DIR" kd-union "$BIN" --secure-port="$PG_PORT_A" --sources-config="$PGDIR/sources.yaml" \
    --records-refresh-interval=1s "${args[@]}"
  # shellcheck disable=SC2317 # called by _kd_wait
  union_up() { curl -sS -o /dev/null --max-time 2 --cacert "$DIR/serving/serving-ca.crt" "https://$KD_EXT_HOST_IP:$PG_PORT_A/livez"; }
  _kd_wait "$DIR" kd-union 30 union_up || return 1
  k -n "$SVC_NS" delete endpointslice "$SVC-e2e-b" >/dev/null || return 1
  k get namespace "$UNION_NS" >/dev/null 2>&1 || k create namespace "$UNION_NS" >/dev/null || return 1
  pg_sql "INSERT INTO $PG_TABLE (namespace, name, labels, data) VALUES
    ('$UNION_NS', 'row-1', '{\"app\":\"web\"}', '{\"v\":\"1\"}'), ('$UNION_NS', 'row-2', '{}', '{\"v\":\"2\"}'),
    ('$UNION_NS', 'shadow', '{}', '{\"v\":\"row-hidden\"}')" >/dev/null || return 1
  union_listed() { [[ $(k get dr -n "$UNION_NS" -o name | wc -l) == 4 ]]; }
  retry 30 union_listed
}
check "union: the chart's sources config (file + postgres + computed) served by one server" pg_union_setup

check_union_lists() {
  local rc=0 all chunked one rv n
  # computed records appear after the first scrape
  union_computed() { k get dr -A -l data.kubedojo.io/source=metrics -o name | grep . >/dev/null; }
  retry 40 union_computed || echo "no computed records yet"
  all=$(k get dr -A -o 'custom-columns=NS:.metadata.namespace,NAME:.metadata.name,V:.spec.data.v,SRC:.metadata.labels.data\.kubedojo\.io/source' --no-headers) || return 1
  python3 - "$all" "$UNION_NS" <<'EOF' || rc=1
import sys
rows = [l.split() for l in sys.argv[1].splitlines()]
ns = sys.argv[2]
mine = {(r[1], r[2]) for r in rows if r[0] == ns}
assert mine == {("from-file", "1"), ("row-1", "1"), ("row-2", "2"), ("shadow", "file-wins")}, mine
assert any(r[0] == "pg-e2e" for r in rows), "the table's earlier rows"
computed = [r for r in rows if r[3] == "metrics"]
assert computed, "computed records (data.kubedojo.io/source=metrics)"
print(f"kubectl get dr -A: {len(rows)} records ({len(computed)} computed, the file's, the table's); the file wins 'shadow'")
EOF
  one=$(k get dr -n "$UNION_NS" -l app=web -o name | tr '\n' ' ')
  [[ $one == "datarecord.data.kubedojo.io/from-file datarecord.data.kubedojo.io/row-1 " ]] || {
    echo "-l app=web: $one"
    rc=1
  }
  all=$(k get dr -A -o name) || return 1
  for n in 1 2 3; do
    chunked=$(k get dr -A -o name --chunk-size=$n) || return 1
    [[ $chunked == "$all" ]] || {
      echo "--chunk-size=$n differs from one list"
      diff <(echo "$all") <(echo "$chunked")
      rc=1
    }
  done
  rv=$(k get --raw "/apis/data.kubedojo.io/v1alpha1/datarecords?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["resourceVersion"])')
  [[ $rv =~ ^[0-9a-f]{12}\.[0-9]+_p[0-9]+$ ]] || {
    echo "list resourceVersion is not composite: $rv"
    rc=1
  }
  echo "chunk sizes 1-3 list the same $(wc -l <<<"$all") records; list resourceVersion $rv"
  return $rc
}
check "union: kubectl get dr -A, -l, --chunk-size across the file, the table and the computed records" check_union_lists

check_union_watch() {
  local rc=0
  # (a global: retry has a local `out` of its own)
  UNION_OUT=$DIR/union-watch.out
  : >"$UNION_OUT"
  k get dr -n "$UNION_NS" -w --output-watch-events -o 'jsonpath={.type} {.object.metadata.name} {.object.spec.data.v}{"\n"}' >"$UNION_OUT" 2>&1 &
  local watcher=$!
  union_seen() { grep -Eq "$1" "$UNION_OUT"; }
  retry 20 union_seen "^ADDED +shadow +file-wins" || rc=1
  pg_sql "INSERT INTO $PG_TABLE (namespace, name, data) VALUES ('$UNION_NS', 'watched', '{\"v\":\"w\"}')" >/dev/null || rc=1
  retry 20 union_seen "^ADDED +watched +w" || { echo "no ADDED for the psql INSERT"; rc=1; }
  union_records 2 >"$PGDIR/records.yaml"
  retry 20 union_seen "^MODIFIED +from-file +2" || { echo "no MODIFIED for the file edit"; rc=1; }
  pg_sql "DELETE FROM $PG_TABLE WHERE namespace = '$UNION_NS' AND name = 'shadow'" >/dev/null || rc=1
  pg_sql "DELETE FROM $PG_TABLE WHERE namespace = '$UNION_NS' AND name = 'row-2'" >/dev/null || rc=1
  retry 20 union_seen "^DELETED +row-2" || { echo "no DELETED for the psql DELETE"; rc=1; }
  if grep -Eq "shadow +row-hidden|DELETED +shadow" "$UNION_OUT"; then
    echo "the hidden row showed in the watch"
    rc=1
  fi
  kill_tree "$watcher" 2>/dev/null || true
  echo "kubectl -w: $(grep -c . "$UNION_OUT") lines (initial list, a psql INSERT, a file edit, a psql DELETE)"
  ((rc == 0)) || { echo "--- kubectl -w output:"; cat "$UNION_OUT"; }
  return $rc
}
check "union: one kubectl get dr -w sees a psql INSERT/DELETE and a file edit; a hidden row never shows" check_union_watch

# ---------------------------------------------------------------- query records
# manifests/components/postgres-query as the server runs it: its Role and RoleBinding
# applied (nothing else lets our ServiceAccount read ConfigMaps in kubedojo-system), its
# sources config with the DSN path pointed at the local file, the definitions in the
# ConfigMap kubedojo-data-api-queries. The server reads and watches that ConfigMap with
# its own token through kube-apiserver; kubectl reads the records through the aggregator.
UNION_S=$((SECONDS - UNION_T0))
QUERY_T0=$SECONDS
QUERY_CM=kubedojo-data-api-queries
query_defs() {
  printf '%s\n' "- {namespace: $PG_NS, name: pg-port, ttl: 2s, query: \"SELECT name, setting FROM pg_settings WHERE name = 'port'\"}"
  [[ -z ${1:-} ]] || printf '%s\n' "- {namespace: $PG_NS, name: pg-one, shape: row, query: \"SELECT 1 AS one\"}"
}
check_query_component() {
  local rc=0 comp=$ROOT/manifests/components/postgres-query
  k apply -f "$comp/rbac.yaml" >/dev/null || return 1
  query_defs >"$PGDIR/queries.yaml"
  k -n "$SVC_NS" create configmap "$QUERY_CM" --from-file=records.yaml="$PGDIR/queries.yaml" >/dev/null || return 1
  python3 - "$comp/sources.yaml" "$PGDIR" >"$PGDIR/query-sources.yaml" <<'EOF' || return 1
import sys, yaml
text = yaml.safe_load(open(sys.argv[1]))["data"]["sources.yaml"]
assert "/etc/kubedojo-data-api/postgres/dsn" in text, text
print(text.replace("/etc/kubedojo-data-api/postgres/dsn", sys.argv[2] + "/dsn"))
EOF
  _kd_stop "$DIR" kd-union
  local args=()
  for a in "${SERVER_ARGS[@]}"; do [[ $a == --secure-port=* ]] || args+=("$a"); done
  NO_COLOR=1 _kd_start "$DIR" kd-query "$BIN" --secure-port="$PG_PORT_A" --sources-config="$PGDIR/query-sources.yaml" "${args[@]}"
  # shellcheck disable=SC2317 # called by retry
  query_port() { [[ $(k get dr -n "$PG_NS" pg-port -o 'jsonpath={.spec.data.port}') == 5432 ]]; }
  retry 30 query_port || { echo "no pg-port record with port=5432"; rc=1; }
  # an edit of the ConfigMap adds a record without a restart (the watch the Role allows)
  query_defs more >"$PGDIR/queries.yaml"
  k -n "$SVC_NS" create configmap "$QUERY_CM" --from-file=records.yaml="$PGDIR/queries.yaml" \
    --dry-run=client -o yaml | k apply -f - >/dev/null 2>&1 || rc=1
  # shellcheck disable=SC2317 # called by retry
  query_edit() { [[ $(k get dr -n "$PG_NS" pg-one -o 'jsonpath={.spec.data.one}') == 1 ]]; }
  retry 30 query_edit || { echo "the ConfigMap edit did not add pg-one"; rc=1; }
  if grep -i "forbidden" "$DIR/kd-query.log"; then
    echo "the server was refused something with the component's Role"
    rc=1
  fi
  ((rc == 0)) || tail -n 30 "$DIR/kd-query.log"
  echo "query records through the aggregator from the component's sources config and Role"
  return $rc
}
check "postgres-query component: its Role lets the server read and watch the definitions ConfigMap; kubectl gets the query records, a ConfigMap edit adds one" check_query_component

_kd_stop "$DIR" kd-query
_kd_stop "$DIR" kd-union
_kd_stop "$DIR" kd-pg-a
_kd_stop "$DIR" kd-pg-b
pg_stop
log "postgres checks: $((SECONDS - PG_T0))s (the union's: ${UNION_S}s, the postgres-query component's: $((SECONDS - QUERY_T0))s); psql to kubectl -w: $(tr '\n' ' ' <"$DIR/pg-watch-delays" 2>/dev/null || true); informer: $(cat "$DIR/pg-informer.json.summary" 2>/dev/null || true)"
