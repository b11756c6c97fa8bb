#!/usr/bin/env bash
# The PostgreSQL table source at 1,000,000 rows (issue #11 §4). Not in CI.
#
# Usage:
#   bench/postgres/run.sh [--namespaces 10000] [--per-namespace 100] [--samples 1000]
#                         [--watchers 1000] [--changes 20] [--throughput-changes 20000]
#                         [--sql-samples 1000] [--offset-budget 120s] [--out DIR] [--keep]
#                         [--scenarios get,labels,pages,sql,kubectl,watch,throughput]
#                         [--kubectl-timeout 300]
#
# --scenarios runs only the named measurements (each writes its own OUT/<name>.json, so
# a run split into several invocations on one OUT fills it completely). kubectl is bounded
# by --kubectl-timeout seconds (kubectl keeps every row of a chunked `get -A` in memory
# for its table: at 1M rows it took > 7 min and 4 GB); a timeout is recorded, not fatal.
#
# 1. PostgreSQL (Debian's package) initdb'd in a temporary directory under /tmp, Unix socket
#    only, default durability (fsync and synchronous_commit on), shared_buffers 1GB.
# 2. Our server (release build) with --postgres-migrate creates the schema, then stops.
# 3. namespaces × per-namespace records loaded with COPY (kd-pgbench rows | psql COPY FROM
#    STDIN, triggers off: a bulk load bypasses the change log as a restore does; every row
#    has resourceVersion 1), then VACUUM ANALYZE.
# 4. Our server again (`kubedojo-data-api demo --postgres-dsn-file`, one simulated node),
#    and, under `flock /tmp/kubedojo-cluster.lock`, kd-pgbench (src/bin/kd-pgbench):
#    get, label-selected list, every page of full `-A` lists with limit=500 (RSS sampled),
#    the first / middle / last pages repeated, keyset vs OFFSET in SQL, `kubectl get dr -A
#    --chunk-size=500` once (when kubectl is built), 1,000-watcher fan-out, listener
#    throughput.
# 5. OUT/results.json and OUT/results.md (bench/postgres/report.py), OUT/machine.json; the
#    database directory is removed (unless --keep).
#
# Environment: KD_BIN, KD_PGBENCH (default: built in release), KUBEDOJO_PG_BIN (PostgreSQL
# binaries; default the newest /usr/lib/postgresql/*/bin), KD_NO_LOCK=1 (skip the flock).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
NAMESPACES=10000 PER_NS=100 SAMPLES=1000 WATCHERS=1000 CHANGES=20 TP_CHANGES=20000 SQL_SAMPLES=1000
OUT= KEEP=false PASSES=1 OFFSET_BUDGET=120s
SCENARIOS=get,labels,pages,sql,kubectl,watch,throughput KUBECTL_TIMEOUT=300
while [[ $# -gt 0 ]]; do
  case "$1" in
    --namespaces) NAMESPACES=$2; shift 2 ;;
    --per-namespace) PER_NS=$2; shift 2 ;;
    --samples) SAMPLES=$2; shift 2 ;;
    --passes) PASSES=$2; shift 2 ;;
    --watchers) WATCHERS=$2; shift 2 ;;
    --changes) CHANGES=$2; shift 2 ;;
    --throughput-changes) TP_CHANGES=$2; shift 2 ;;
    --sql-samples) SQL_SAMPLES=$2; shift 2 ;;
    --offset-budget) OFFSET_BUDGET=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --keep) KEEP=true; shift ;;
    --scenarios) SCENARIOS=$2; shift 2 ;;
    --kubectl-timeout) KUBECTL_TIMEOUT=$2; shift 2 ;;
    -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
RECORDS=$((NAMESPACES * PER_NS))
OUT=${OUT:-$ROOT/target/pgbench/$RECORDS-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log() { printf '[pgbench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ -z ${KD_BIN:-} || -z ${KD_PGBENCH:-} ]]; then
  log "building release binaries (kubedojo-data-api, kd-pgbench)"
  (cd "$ROOT" && nice cargo build --release --locked --bin kubedojo-data-api --bin kd-pgbench >&2)
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
KD_BIN=${KD_BIN:-$TARGET_DIR/release/kubedojo-data-api}
KD_PGBENCH=${KD_PGBENCH:-$TARGET_DIR/release/kd-pgbench}
PG_BIN=${KUBEDOJO_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}
[[ -x $PG_BIN/postgres ]] || die "PostgreSQL server binaries not found (apt-get install -y postgresql, or set KUBEDOJO_PG_BIN)"
python3 "$ROOT/bench/scale/machine.py" "$OUT/machine.json" "$KD_BIN"
"$PG_BIN/postgres" --version >"$OUT/postgres-version.txt"

# --- PostgreSQL in /tmp (initdb and postgres refuse root: run them as nobody) ---
PGDIR=$(mktemp -d /tmp/kubedojo-pgbench.XXXXXX)
as_pg() { if [[ $(id -u) == 0 ]]; then setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"; else "$@"; fi; }
# In a background subshell: exec, so $! is postgres itself (SIGINT = fast shutdown).
exec_as_pg() { if [[ $(id -u) == 0 ]]; then exec setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"; else exec "$@"; fi; }
[[ $(id -u) == 0 ]] && chown nobody:nogroup "$PGDIR"
PGPORT=$((30000 + $$ % 20000))
DSN="host=$PGDIR port=$PGPORT user=postgres dbname=postgres"
PG_PID= KD_PID=
cleanup() {
  [[ -n $KD_PID ]] && kill "$KD_PID" 2>/dev/null && wait "$KD_PID" 2>/dev/null || true
  if [[ -n $PG_PID ]]; then kill -INT "$PG_PID" 2>/dev/null || true; wait "$PG_PID" 2>/dev/null || true; fi
  if [[ $KEEP == true ]]; then log "kept $PGDIR"; else rm -rf "$PGDIR"; fi
}
trap cleanup EXIT
log "initdb in $PGDIR"
as_pg "$PG_BIN/initdb" -D "$PGDIR/data" -A trust -U postgres -E UTF8 --locale=C >"$OUT/initdb.log" 2>&1 \
  || die "initdb failed: $(cat "$OUT/initdb.log")"
exec_as_pg "$PG_BIN/postgres" -D "$PGDIR/data" -k "$PGDIR" -p "$PGPORT" -c listen_addresses= \
  -c shared_buffers=1GB -c max_connections=300 -c max_wal_size=4GB -c checkpoint_timeout=30min \
  </dev/null >"$OUT/postgres.log" 2>&1 &
PG_PID=$!
psql_() { "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -d "$DSN" "$@"; }
for _ in $(seq 300); do psql_ -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
psql_ -c 'SELECT 1' >/dev/null || die "postgres did not start: $(cat "$OUT/postgres.log")"
printf '%s' "$DSN" >"$PGDIR/dsn"

# --- our server ---
TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_server() { # extra flags...
  PORT=$(free_port)
  NO_COLOR=1 "$KD_BIN" demo --secure-port "$PORT" --token "$TOKEN" --nodes 1 --pods-per-node 1 \
    --write-kubeconfig "$OUT/kubeconfig" --postgres-dsn-file "$PGDIR/dsn" "$@" \
    </dev/null >>"$OUT/server.log" 2>&1 &
  KD_PID=$!
  URL=https://127.0.0.1:$PORT
  for _ in $(seq 600); do
    if curl -sfk -H "Authorization: Bearer $TOKEN" "$URL/apis/data.kubedojo.io/v1alpha1/datarecords?limit=1" >/dev/null 2>&1; then
      return 0
    fi
    kill -0 "$KD_PID" 2>/dev/null || die "server exited: $(tail -n 20 "$OUT/server.log")"
    sleep 0.1
  done
  die "server did not answer within 60 s: $(tail -n 20 "$OUT/server.log")"
}
stop_server() { kill "$KD_PID"; wait "$KD_PID" 2>/dev/null || true; KD_PID=; }

log "schema (kubedojo-data-api demo --postgres-migrate)"
start_server --postgres-migrate
stop_server

log "loading $RECORDS records in $NAMESPACES namespaces with COPY"
T=$SECONDS
nice "$KD_PGBENCH" rows --namespaces "$NAMESPACES" --per-namespace "$PER_NS" \
  | nice "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$DSN" -c 'SET session_replication_role = replica' \
      -c 'COPY kubedojo.datarecords (namespace, name, labels, data, resource_version) FROM STDIN'
LOAD_S=$((SECONDS - T))
T=$SECONDS
psql_ -c 'VACUUM (ANALYZE) kubedojo.datarecords' -c 'CHECKPOINT'
VACUUM_S=$((SECONDS - T))
[[ $(psql_ -c 'SELECT count(*) FROM kubedojo.datarecords') == "$RECORDS" ]] || die "row count after COPY"
psql_ -F $'\t' -c "SELECT json_build_object('rows', (SELECT count(*) FROM kubedojo.datarecords),
  'namespaces', (SELECT count(DISTINCT namespace) FROM kubedojo.datarecords),
  'table_bytes', pg_table_size('kubedojo.datarecords'),
  'primary_key_bytes', pg_relation_size('kubedojo.datarecords_pkey'),
  'labels_gin_bytes', pg_relation_size('kubedojo.datarecords_labels'),
  'copy_seconds', $LOAD_S, 'vacuum_analyze_seconds', $VACUUM_S,
  'sample_row', (SELECT to_jsonb(d) FROM kubedojo.datarecords d LIMIT 1))" >"$OUT/table.json"
log "loaded in ${LOAD_S}s (+${VACUUM_S}s VACUUM ANALYZE): $(head -c 200 "$OUT/table.json")"

start_server
log "server pid $KD_PID on $URL"
export KD_PGBENCH_TOKEN=$TOKEN
SHAPE=(--namespaces "$NAMESPACES" --per-namespace "$PER_NS")
want() { [[ ,$SCENARIOS, == *,$1,* ]]; }
measure() {
  if want get; then
    log "get ($SAMPLES)"
    "$KD_PGBENCH" get --url "$URL" "${SHAPE[@]}" --samples "$SAMPLES" >"$OUT/get.json"
  fi
  if want labels; then
    log "label-selected list ($SAMPLES)"
    "$KD_PGBENCH" labels --url "$URL" "${SHAPE[@]}" --samples "$SAMPLES" >"$OUT/labels.json"
  fi
  if want pages; then
    log "full -A lists, limit=500 ($PASSES pass(es), RSS sampled), then first/middle/last pages × $SAMPLES"
    "$KD_PGBENCH" pages --url "$URL" "${SHAPE[@]}" --limit 500 --passes "$PASSES" --samples "$SAMPLES" --pid "$KD_PID" >"$OUT/pages.json"
  fi
  if want sql; then
    log "keyset vs OFFSET in SQL ($SQL_SAMPLES per depth)"
    "$KD_PGBENCH" sql-paging --dsn "$DSN" --limit 500 --samples "$SQL_SAMPLES" --offset-budget "$OFFSET_BUDGET" >"$OUT/sql-paging.json"
  fi
  KUBECTL=${KUBECTL:-$(timeout 10 bash "$ROOT/tests/e2e/tools.sh" path kubectl 2>/dev/null | tail -n1 || true)}
  if want kubectl && [[ -x $KUBECTL ]]; then
    log "kubectl get dr -A --chunk-size=500 (once, at most ${KUBECTL_TIMEOUT}s)"
    local t0 t1 n rc=0
    t0=$(date +%s.%N)
    n=$(timeout "$KUBECTL_TIMEOUT" "$KUBECTL" --kubeconfig "$OUT/kubeconfig" get dr -A --chunk-size=500 --no-headers | wc -l) || rc=$?
    t1=$(date +%s.%N)
    printf '{"kubectl": "%s", "rows": %s, "seconds": %s, "exit": %s, "timed_out": %s}\n' \
      "$("$KUBECTL" version --client 2>/dev/null | head -n1)" "$n" \
      "$(python3 -c "print(round($t1 - $t0, 2))")" "$rc" "$([[ $rc == 124 ]] && echo true || echo false)" >"$OUT/kubectl.json"
  fi
  if want watch; then
    log "watch fan-out ($WATCHERS watchers × $CHANGES changes)"
    "$KD_PGBENCH" watch --url "$URL" --dsn "$DSN" --watchers "$WATCHERS" --changes "$CHANGES" >"$OUT/watch.json"
  fi
  if want throughput; then
    log "listener throughput ($TP_CHANGES single-row commits, then one bulk commit)"
    "$KD_PGBENCH" throughput --url "$URL" --dsn "$DSN" --changes "$TP_CHANGES" >"$OUT/throughput.json"
  fi
}
if [[ ${KD_NO_LOCK:-} == 1 ]]; then
  measure
else
  log "waiting for /tmp/kubedojo-cluster.lock"
  exec 9>/tmp/kubedojo-cluster.lock
  flock 9
  printf '%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >"$OUT/loadavg-at-measure.txt"
  measure
  flock -u 9
fi
grep -c '"level":"WARN"\|WARN' "$OUT/server.log" >"$OUT/server-warnings.txt" || true
stop_server
python3 "$ROOT/bench/postgres/report.py" "$OUT"
log "results: $OUT/results.md"
