# DataRecords through the real kube-aggregator (issue 10): the lab's seed values, the
# records computed from metrics, and a restart in the middle of a watch. Sourced by
# tests/e2e/run.sh after the other checks (uses its check, k, retry, _kd_start/_kd_stop,
# SERVER_ARGS, BIN, DIR, server_up).

DR_API=/apis/data.kubedojo.io/v1alpha1

check_lab_user_config_data() {
  local out
  out=$(k get dr user-config -n default -o 'jsonpath={.spec.data}') || return 1
  $OBJ check-json-equal '{"max_connections":"100","timeout_ms":"5000","log_level":"info"}' "$out"
}
check "records: kubectl get dr user-config -n default -o jsonpath='{.spec.data}' gives the lab's three keys" check_lab_user_config_data

check_lab_stale() {
  local status uid
  status=$(k get dr metrics-config -n monitoring -o 'jsonpath={.status.syncStatus}') || return 1
  uid=$(k get dr metrics-config -n monitoring -o 'jsonpath={.metadata.uid}') || return 1
  [[ $status == Stale && $uid == a1b2c3d4-0001-0001-0001-000000000003 ]] || {
    echo "metrics-config: syncStatus=$status uid=$uid"
    return 1
  }
}
check "records: metrics-config is Stale with the lab's uid" check_lab_stale

check_computed_present() {
  local out
  out=$(k get dr -A -l data.kubedojo.io/source=metrics --no-headers -o custom-columns=NS:.metadata.namespace,NAME:.metadata.name) || return 1
  grep -q '^kubedojo-metrics \+node-headroom-' <<<"$out" || {
    printf 'no node-headroom record among the computed ones:\n%s\n' "$out"
    return 1
  }
}
check "records: computed node-headroom records are served (label data.kubedojo.io/source=metrics)" retry 30 check_computed_present

# A restart in the middle of a watch: the old resourceVersion gets 410 Expired (an ERROR
# event, as kube-apiserver's watch cache sends it) through the aggregator, and a relist
# gets a new version that a watch accepts.
check_restart_mid_watch() {
  local rv new_rv out
  rv=$(k get --raw "$DR_API/namespaces/default/datarecords" | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["resourceVersion"])') || return 1
  # the watch works before the restart (times out after 2 s with no event: nothing changes)
  out=$(k get --raw "$DR_API/namespaces/default/datarecords?watch=1&resourceVersion=$rv&timeoutSeconds=2") || {
    echo "watch from $rv before the restart failed: $out"
    return 1
  }
  [[ $out != *'"ERROR"'* ]] || {
    echo "watch from $rv before the restart: $out"
    return 1
  }
  _kd_stop "$DIR" kubedojo-data-api
  NO_COLOR=1 _kd_start "$DIR" kubedojo-data-api "$BIN" "${SERVER_ARGS[@]}"
  _kd_wait "$DIR" kubedojo-data-api 30 server_up || return 1
  out=$(retry 30 k get --raw "$DR_API/namespaces/default/datarecords?watch=1&resourceVersion=$rv&timeoutSeconds=5") || {
    echo "resumed watch: $out"
    return 1
  }
  python3 -c '
import json, sys
events = [json.loads(l) for l in sys.argv[1].splitlines() if l.strip().startswith("{")]
assert len(events) == 1, events
e = events[0]
assert e["type"] == "ERROR", e
s = e["object"]
assert (s["kind"], s["code"], s["reason"]) == ("Status", 410, "Expired"), s
assert s["message"].startswith("too old resource version: " + sys.argv[2]), s
' "$out" "$rv" || {
    printf 'resumed watch with %s after the restart:\n%s\n' "$rv" "$out"
    return 1
  }
  # the client relists: a new version, which a watch accepts
  new_rv=$(k get --raw "$DR_API/namespaces/default/datarecords" | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["resourceVersion"])') || return 1
  [[ $new_rv != "$rv" ]] || {
    echo "the relist after a restart returned the old version $rv"
    return 1
  }
  out=$(k get --raw "$DR_API/namespaces/default/datarecords?watch=1&resourceVersion=$new_rv&timeoutSeconds=2") || return 1
  [[ $out != *'"ERROR"'* ]] || {
    echo "watch from the relisted $new_rv: $out"
    return 1
  }
  # kubectl itself relists and watches
  k get dr -n default --watch --request-timeout=3s -l '!data.kubedojo.io/source' >"$DIR/dr-watch.out" 2>&1 || true
  grep -q user-config "$DIR/dr-watch.out" || {
    echo "kubectl get dr -w after the restart:"
    cat "$DIR/dr-watch.out"
    return 1
  }
}
check "records: a watch resumed after a server restart gets 410 Expired through the aggregator; the relist and a new watch work" check_restart_mid_watch
