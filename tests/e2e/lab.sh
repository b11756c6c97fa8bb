#!/usr/bin/env bash
# The lab's steps, word for word, with our manifests against a real kube-apiserver (issue 16).
#
# Usage: tests/e2e/lab.sh [--keep] [--dir DIR]
#
# Runs "What a lab user does" of the lab this project began as: cert-manager's CRDs
# installed, `kubectl create namespace kubedojo-system`, `kubectl apply -f` of
# manifests/rbac.yaml, certificate.yaml, deployment.yaml (and service.yaml), the lab's
# two `kubectl wait`s, `kubectl apply -f manifests/apiservice.yaml`, then every command
# of the lab's step 6 and its troubleshooting steps with their expected output, and a
# certificate renewal that the running pods pick up without a restart. Prints
# `N passed, M failed` last; exits non-zero on any failure.
#
# The control plane is etcd + kube-apiserver (tests/e2e/cluster.sh) with cert-manager
# v1.17.4's real CRDs (rendered from its chart in the Go module, tools.sh
# cert-manager-crds), so our Issuer and Certificate are validated by their real schemas.
# cert-manager's controller and cainjector cannot be built from the Go module proxy
# (tests/e2e/README.md says what was tried), so what a kind cluster with cert-manager
# has is played by tests/e2e/lab_sim.py against the real API (its header says exactly
# what): cert-manager's selfSigned issuing with openssl (Secret tls.crt/tls.key/ca.crt,
# Certificate status through the status subresource, re-issuing on Issuing=True) and
# cainjector (cert-manager.io/inject-ca-from into the APIService's caBundle), the
# ReplicaSet controller and scheduler, the kubelet (secret volumes with the kubelet's
# ..data symlink layout, our binary run with the container's args from the Deployment,
# the readinessProbe as written, pod status, /containerLogs so that `kubectl logs` works
# through kube-apiserver), and the endpoints controllers. Pod IPs are extra addresses on
# the host side of cluster.sh's veth.
#
# From inside a cluster, `curl -vk https://kubedojo-data-api.kubedojo-system.svc:443/healthz`
# goes through cluster DNS and kube-proxy; here curl's --connect-to maps that host:port to
# an address of the Service's Endpoints, which is what kube-proxy does.
#
# Needs root (network namespace), openssl, curl, python3, iproute2. Environment:
# KUBEDOJO_BIN (else cargo build --release). Warm run: about 70 s (a third of it is the pods'
# readinessProbe: /readyz waits for the first metrics, two scrapes at --metric-resolution=15s).
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$E2E_DIR/../.." && pwd)
# shellcheck source=cluster.sh
. "$E2E_DIR/cluster.sh"

KEEP=false
DIR=
while (($#)); do
  case "$1" in
    --keep) KEEP=true ;;
    --dir) DIR=${2:?--dir needs a directory} && shift ;;
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

T0=$SECONDS
log() { printf '[lab %3ds] %s\n' "$((SECONDS - T0))" "$*" >&2; }
die() {
  printf '[lab] ERROR: %s\n' "$*" >&2
  exit 1
}

[[ $(id -u) == 0 ]] || die "needs root (network namespace for the pods' addresses)"
for c in openssl curl python3 ip; do command -v "$c" >/dev/null || die "$c is required"; done

log "pinned tools (tests/e2e/tools.sh)"
KUBECTL_BIN=$("$E2E_DIR/tools.sh" kubectl | tail -n1)
KUBE_APISERVER_BIN=$("$E2E_DIR/tools.sh" kube-apiserver | tail -n1)
ETCD_BIN=$("$E2E_DIR/tools.sh" etcd | tail -n1)
CRDS=$("$E2E_DIR/tools.sh" cert-manager-crds | tail -n1)
export KUBE_APISERVER_BIN ETCD_BIN KUBECTL_BIN

if [[ -n ${KUBEDOJO_BIN:-} ]]; then
  BIN=$KUBEDOJO_BIN
else
  log "cargo build --release --locked"
  (cd "$ROOT" && cargo build --release --locked --bin kubedojo-data-api) >&2 || die "cargo build failed"
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/kubedojo-data-api
fi
[[ -x $BIN ]] || die "no server binary at $BIN"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

if [[ -z $DIR ]]; then
  DIR=$(mktemp -d "${TMPDIR:-/tmp}/kubedojo-lab.XXXXXX")
  OWN_DIR=true
else
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  OWN_DIR=false
fi
export KUBECACHEDIR=$DIR/kube-cache
PASS=0
FAIL=0
FAILED=()

print_logs() {
  local f
  for f in "$DIR/lab_sim.log" "$DIR"/kubelet/logs/*.log "$DIR/kube-apiserver.log"; do
    [[ -s $f ]] || continue
    printf '\n----- %s (last 60 lines) -----\n' "$f" >&2
    tail -n 60 "$f" >&2
  done
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if ((rc != 0 && PASS + FAIL == 0)); then
    FAIL=1
    FAILED=("set-up (rc=$rc, see above)")
  fi
  ((rc == 0 && FAIL == 0)) || print_logs
  if [[ $KEEP == true ]]; then
    printf '\n--keep: running in %s\n  export KUBECONFIG=%s/admin.kubeconfig\n  stop: %s/cluster.sh down %s\n' \
      "$DIR" "$DIR" "$E2E_DIR" "$DIR" >&2
  else
    kd_cluster_down "$DIR" 2>/dev/null
    [[ $OWN_DIR != true ]] || rm -rf "$DIR"
  fi
  log "wall time $((SECONDS - T0))s"
  if ((FAIL > 0)); then
    printf 'failed checks:\n' >&2
    printf '  - %s\n' "${FAILED[@]}" >&2
  fi
  printf '%d passed, %d failed\n' "$PASS" "$FAIL"
  ((rc == 0 && FAIL > 0)) && rc=1
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# check NAME CMD...: CMD must return non-zero on failure and say why
check() {
  local name=$1 out rc=0
  shift
  out=$( (
    set +e
    "$@"
  ) 2>&1) || rc=$?
  if ((rc == 0)); then
    PASS=$((PASS + 1))
    printf 'PASS  %s\n' "$name" >&2
  else
    FAIL=$((FAIL + 1))
    FAILED+=("$name")
    printf 'FAIL  %s\n' "$name" >&2
    [[ -z $out ]] || sed 's/^/        /' <<<"$out" | head -n 60 >&2
  fi
}

# expect TEXT NEEDLE...: every NEEDLE (fixed string) occurs in TEXT
expect() {
  local text=$1 n miss=0
  shift
  for n in "$@"; do
    [[ $text == *"$n"* ]] || {
      echo "missing: $n"
      miss=1
    }
  done
  ((miss == 0)) || printf -- '--- got:\n%s\n' "$text"
  return "$miss"
}

# expect_lines TEXT ERE...: every extended regex matches a line of TEXT
expect_lines() {
  local text=$1 re miss=0
  shift
  for re in "$@"; do
    grep -Eq -- "$re" <<<"$text" || {
      echo "no line matches: $re"
      miss=1
    }
  done
  ((miss == 0)) || printf -- '--- got:\n%s\n' "$text"
  return "$miss"
}

# retry SECONDS CMD...
retry() {
  local secs=$1 end out
  shift
  end=$((SECONDS + secs))
  until out=$("$@" 2>&1); do
    if ((SECONDS >= end)); then
      printf 'still failing after %ss:\n%s\n' "$secs" "$out"
      return 1
    fi
    sleep 1
  done
  [[ -z $out ]] || printf '%s\n' "$out"
}

# ---------------------------------------------------------------- the cluster

log "work dir $DIR"
kd_cluster_up "$DIR"
kd_netns_up "$DIR"
# shellcheck disable=SC1091
. "$DIR/cluster.env"
# shellcheck disable=SC1091
. "$DIR/netns.env"
_kd_netns_names "$DIR" # KD_VETH_HOST, KD_NET_OCTET
POD_IPS=(10.251.$KD_NET_OCTET.5 10.251.$KD_NET_OCTET.6)
for ip in "${POD_IPS[@]}"; do ip addr add "$ip/32" dev "$KD_VETH_HOST"; done
export KUBECONFIG=$DIR/admin.kubeconfig
# the lab's `k` and `kubectl`: the pinned kubectl, admin credentials
kubectl() { "$KUBECTL_BIN" --request-timeout=30s "$@"; }
k() { kubectl "$@"; }
ADMIN_USER=$(openssl x509 -in "$KD_ADMIN_CRT" -noout -subject -nameopt multiline | sed -n 's/^ *commonName *= *//p')
NS=kubedojo-system
M=$ROOT/manifests

# 1. cert-manager: its real CRDs (no webhook: the CRD schemas validate); issuing and CA
# injection played by lab_sim.py with openssl
log "1. cert-manager: its CRDs ($CRDS), issuing and injection by lab_sim.py"
kubectl apply --server-side -f "$CRDS" >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/certificates.cert-manager.io crd/issuers.cert-manager.io \
  crd/certificaterequests.cert-manager.io crd/clusterissuers.cert-manager.io crd/orders.acme.cert-manager.io \
  crd/challenges.acme.cert-manager.io >/dev/null
KUBELET_PORT=$(_kd_free_port)
_kd_start "$DIR" lab_sim python3 "$E2E_DIR/lab_sim.py" --dir "$DIR" --bin "$BIN" \
  --node-ip "$KD_EXT_HOST_IP" --kubelet-port "$KUBELET_PORT" --pod-ips "$(
    IFS=,
    echo "${POD_IPS[*]}"
  )"
_kd_wait "$DIR" lab_sim 30 kubectl get node lab-worker

# 2.-5. the lab's steps as written
log "2. kubectl create namespace kubedojo-system"
kubectl create namespace kubedojo-system >&2
log "3. kubectl apply -f manifests/rbac.yaml, certificate.yaml, deployment.yaml (+ service.yaml)"
cd "$ROOT"
kubectl apply -f manifests/rbac.yaml >&2
kubectl apply -f manifests/certificate.yaml >&2
kubectl apply -f manifests/deployment.yaml >&2
kubectl apply -f manifests/service.yaml >&2
log "4. kubectl wait (certificate, pods)"
check "kubectl wait --for=condition=Ready certificate -n kubedojo-system kubedojo-data-api-cert" \
  kubectl wait --for=condition=Ready certificate -n kubedojo-system kubedojo-data-api-cert
check_issued() {
  local out want got d=$DIR/issued
  mkdir -p "$d"
  # what lab_sim.py's issuer wrote, as cert-manager's selfSigned issuer would: a TLS Secret
  # issued for this Certificate, whose certificate is what the stored Certificate asks for
  out=$(kubectl get secret -n "$NS" kubedojo-data-api-tls -o 'jsonpath={.type} {.metadata.annotations.cert-manager\.io/certificate-name}') || return 1
  [[ $out == "kubernetes.io/tls kubedojo-data-api-cert" ]] || {
    echo "Secret kubedojo-data-api-tls: $out"
    return 1
  }
  for f in tls.crt tls.key ca.crt; do
    kubectl get secret -n "$NS" kubedojo-data-api-tls -o "jsonpath={.data.${f//./\\.}}" | base64 -d >"$d/$f" || return 1
    [[ -s $d/$f ]] || {
      echo "Secret kubedojo-data-api-tls has no $f"
      return 1
    }
  done
  want=$(kubectl get certificate -n "$NS" kubedojo-data-api-cert -o 'jsonpath={range .spec.dnsNames[*]}DNS:{@}{"\n"}{end}' | sort)
  got=$(openssl x509 -in "$d/tls.crt" -noout -ext subjectAltName | tail -n +2 | tr ',' '\n' | sed 's/^ *//' | sort)
  [[ $got == "$want" ]] || {
    printf 'SANs: want\n%s\ngot\n%s\n' "$want" "$got"
    return 1
  }
  openssl pkey -in "$d/tls.key" -noout -text | grep 'NIST CURVE: P-256' >/dev/null || {
    echo "tls.key is not ECDSA P-256 (spec.privateKey)"
    return 1
  }
  [[ $(openssl pkey -in "$d/tls.key" -pubout) == "$(openssl x509 -in "$d/tls.crt" -noout -pubkey)" ]] || {
    echo "tls.key does not belong to tls.crt"
    return 1
  }
  openssl x509 -in "$d/tls.crt" -noout -ext extendedKeyUsage | grep 'TLS Web Server Authentication' >/dev/null || {
    echo "tls.crt lacks extendedKeyUsage serverAuth (spec.usages)"
    return 1
  }
  cmp -s "$d/tls.crt" "$d/ca.crt" || {
    echo "ca.crt is not the self-signed certificate itself"
    return 1
  }
}
check "the issued Secret kubedojo-data-api-tls: kubernetes.io/tls, tls.crt for spec.dnsNames with an ECDSA P-256 tls.key, serverAuth, ca.crt" check_issued
check_schema() {
  local out rc=0
  # cert-manager's real CRD schema (not a stand-in) rejects a Certificate it does not know
  out=$(sed 's/- server auth/- serving/' manifests/certificate.yaml | kubectl apply --dry-run=server -f - 2>&1) || rc=$?
  [[ $rc != 0 && $out == *'spec.usages[0]: Unsupported value: "serving"'* ]] || {
    echo "rc=$rc: $out"
    return 1
  }
}
check "cert-manager's CRD schema validates certificate.yaml: a bad usage is rejected by kube-apiserver" check_schema
# as on kind, the pods exist a moment after the Deployment (kubectl wait -l needs them to)
_kd_wait "$DIR" lab_sim 20 bash -c "[[ -n \$(\"$KUBECTL_BIN\" get pod -n $NS -l app=kubedojo-data-api -o name) ]]"
check "kubectl wait --for=condition=Ready pod -n kubedojo-system -l app=kubedojo-data-api (both replicas)" bash -c '
  out=$("$0" wait --for=condition=Ready pod -n kubedojo-system -l app=kubedojo-data-api) || exit 1
  echo "$out"; [[ $(grep -c "condition met" <<<"$out") == 2 ]]' "$KUBECTL_BIN"
log "5. kubectl apply -f manifests/apiservice.yaml"
kubectl apply -f manifests/apiservice.yaml >&2
log "set-up done in $((SECONDS - T0))s"

# ---------------------------------------------------------------- 6. the lab's commands

# The records the server is expected to serve: its built-in seed (src/records/seed.yaml).
SEED_JSON=$(python3 - "$ROOT/src/records/seed.yaml" <<'EOF'
import json, sys
try:
    import yaml
except ImportError:
    import subprocess
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "pyyaml"], check=True)
    import yaml
print(json.dumps(yaml.safe_load(open(sys.argv[1]))))
EOF
)
seed() { python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(eval(sys.argv[2]))" "$SEED_JSON" "$1"; }

check_available() {
  local out
  out=$(k get apiservice v1alpha1.data.kubedojo.io) || return 1
  echo "$out"
  awk 'NR == 2 && $1 == "v1alpha1.data.kubedojo.io" && $2 == "kubedojo-system/kubedojo-data-api" && $3 == "True" { ok = 1 } END { exit !ok }' <<<"$out"
}
check "k get apiservice v1alpha1.data.kubedojo.io: Available True (caBundle injected from the Certificate)" retry 60 check_available

check_api_resources() {
  local out
  out=$(k api-resources | grep data.kubedojo) || return 1
  grep -Eq '^datarecords +dr +data\.kubedojo\.io/v1alpha1 +true +DataRecord$' <<<"$out" || {
    echo "got: $out"
    return 1
  }
}
check "k api-resources | grep data.kubedojo: datarecords dr data.kubedojo.io/v1alpha1 true DataRecord" retry 30 check_api_resources

WANT_ALL=$(seed '"\n".join(sorted(r["metadata"]["namespace"] + " " + r["metadata"]["name"] for r in d))')
WANT_DEFAULT=$(seed '"\n".join(sorted(r["metadata"]["name"] for r in d if r["metadata"]["namespace"] == "default"))')
# Records computed from metrics (label data.kubedojo.io/source=metrics) are served beside the
# seed; the comparisons leave them out.
list_all() {
  local out names
  out=$(k get "$1" -A) || return 1
  names=$(k get "$1" -A -l '!data.kubedojo.io/source' --no-headers | awk '{ print $1, $2 }' | sort)
  [[ $(head -n1 <<<"$out") == NAMESPACE* && $names == "$WANT_ALL" ]] || {
    printf 'want:\n%s\ngot:\n%s\n' "$WANT_ALL" "$out"
    return 1
  }
}
check "k get datarecords -A: every seed record" list_all datarecords
check "k get dr -A (the short name): every seed record" list_all dr
check_get_default() {
  local out
  out=$(k get dr -n default) || return 1
  [[ $(k get dr -n default -l '!data.kubedojo.io/source' --no-headers | awk '{ print $1 }' | sort) == "$WANT_DEFAULT" ]] || {
    printf 'want:\n%s\ngot:\n%s\n' "$WANT_DEFAULT" "$out"
    return 1
  }
}
check "k get dr -n default: only default's records" check_get_default

# compare_record NAMESPACE NAME YAML: the object equals the seed record (apiVersion, kind,
# name, namespace, labels, uid when the seed fixes it, spec, status fields of the seed)
compare_record() {
  python3 - "$SEED_JSON" "$@" <<'EOF'
import json, sys, yaml
seed = json.loads(sys.argv[1])
ns, name, text = sys.argv[2], sys.argv[3], sys.argv[4]
got = yaml.safe_load(text)
if got.get("kind") == "List":
    assert len(got["items"]) == 1, f"{len(got['items'])} items"
    got = got["items"][0]
want = next(r for r in seed if r["metadata"]["name"] == name and r["metadata"]["namespace"] == ns)
errs = []
for k in ("apiVersion", "kind", "spec"):
    if got.get(k) != want.get(k, "DataRecord" if k == "kind" else "data.kubedojo.io/v1alpha1"):
        errs.append(f"{k}: want {want.get(k)!r} got {got.get(k)!r}")
# resourceVersion: the server's own (opaque to clients), only required to be there
for k in ("name", "namespace", "labels", "uid"):
    if k in want["metadata"] and got["metadata"].get(k) != want["metadata"][k]:
        errs.append(f"metadata.{k}: want {want['metadata'][k]!r} got {got['metadata'].get(k)!r}")
for k in ("uid", "resourceVersion", "creationTimestamp"):
    if not got["metadata"].get(k):
        errs.append(f"metadata.{k} missing")
for k, v in (want.get("status") or {}).items():
    if (got.get("status") or {}).get(k) != v:
        errs.append(f"status.{k}: want {v!r} got {(got.get('status') or {}).get(k)!r}")
if errs:
    print("\n".join(errs)); print("--- got:"); print(text); sys.exit(1)
EOF
}
check_monitoring_yaml() {
  local out
  out=$(k get dr -n monitoring -o yaml) || return 1
  compare_record monitoring metrics-config "$out"
}
check "k get dr -n monitoring -o yaml: metrics-config as seeded" check_monitoring_yaml
check_user_config_yaml() {
  local out
  out=$(k get dr user-config -n default -o yaml) || return 1
  compare_record default user-config "$out"
}
check "k get dr user-config -n default -o yaml: the full object" check_user_config_yaml

check_raw_discovery() {
  local out
  out=$(k get --raw /apis/data.kubedojo.io/v1alpha1 | python3 -m json.tool) || return 1
  python3 -c '
import json, sys
d = json.loads(sys.argv[1])
assert d["kind"] == "APIResourceList" and d["groupVersion"] == "data.kubedojo.io/v1alpha1", d
r = [x for x in d["resources"] if x["name"] == "datarecords"]
assert r and r[0]["namespaced"] is True and r[0]["kind"] == "DataRecord" and "dr" in r[0].get("shortNames", []), r
assert {"get", "list"} <= set(r[0]["verbs"]), r
' "$out" || {
    echo "$out"
    return 1
  }
}
check "k get --raw /apis/data.kubedojo.io/v1alpha1 | python3 -m json.tool: APIResourceList with datarecords (dr)" check_raw_discovery
check_raw_list() {
  local out
  out=$(k get --raw /apis/data.kubedojo.io/v1alpha1/namespaces/default/datarecords | python3 -m json.tool) || return 1
  python3 -c '
import json, sys
d = json.loads(sys.argv[1])
assert d["kind"] == "DataRecordList" and d["apiVersion"] == "data.kubedojo.io/v1alpha1", d
assert d["metadata"].get("resourceVersion"), d["metadata"]
names = sorted(i["metadata"]["name"] for i in d["items"])
assert names == sys.argv[2].split(), names
' "$out" "$WANT_DEFAULT" || {
    echo "$out"
    return 1
  }
}
check "k get --raw .../namespaces/default/datarecords | python3 -m json.tool: DataRecordList of default's records" check_raw_list
check_jsonpath() {
  local out want
  out=$(k get datarecords -n default user-config -o jsonpath='{.spec.data}') || return 1
  want=$(seed 'json.dumps(next(r for r in d if r["metadata"]["name"] == "user-config")["spec"]["data"], sort_keys=True)')
  [[ $(python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1]), sort_keys=True))' "$out") == "$want" ]] || {
    printf 'want %s\ngot  %s\n' "$want" "$out"
    return 1
  }
}
check "k get datarecords -n default user-config -o jsonpath='{.spec.data}'" check_jsonpath
check_describe() {
  local out src
  out=$(k describe dr user-config -n default) || return 1
  src=$(seed 'next(r for r in d if r["metadata"]["name"] == "user-config")["spec"]["source"]')
  expect_lines "$out" '^Name: +user-config$' '^Namespace: +default$' '^API Version: +data\.kubedojo\.io/v1alpha1$' \
    '^Kind: +DataRecord$' '^Spec:$' "^ +Source: +$src\$"
}
check "k describe dr user-config -n default" check_describe

check_notfound() {
  local out rc=0 body
  out=$(k get dr nope -n default 2>&1) || rc=$?
  [[ $rc != 0 && $out == 'Error from server (NotFound): datarecords.data.kubedojo.io "nope" not found' ]] || {
    echo "rc=$rc: $out"
    return 1
  }
  # the body kube-apiserver passes on from our server: a metav1.Status
  body=$(curl -sS --cacert "$KD_CA_CRT" --cert "$KD_ADMIN_CRT" --key "$KD_ADMIN_KEY" -w '\n%{http_code}' \
    "$KD_APISERVER_URL/apis/data.kubedojo.io/v1alpha1/namespaces/default/datarecords/nope") || return 1
  python3 -c '
import json, sys
text, code = sys.argv[1].rsplit("\n", 1)
s = json.loads(text)
assert code == "404", code
assert (s["kind"], s["apiVersion"], s["status"], s["reason"], s["code"]) == ("Status", "v1", "Failure", "NotFound", 404), s
assert s["details"] == {"name": "nope", "group": "data.kubedojo.io", "kind": "datarecords"}, s["details"]
assert s["message"] == "datarecords.data.kubedojo.io \"nope\" not found", s["message"]
' "$body" || {
    echo "$body"
    return 1
  }
}
check "a record that does not exist: 404 with a metav1.Status (NotFound) body" check_notfound

# kubectl logs -l: through kube-apiserver to the (simulated) kubelet's /containerLogs
check_logs() {
  local out
  out=$(k logs -n kubedojo-system -l app=kubedojo-data-api --tail=-1) || return 1
  grep -E 'request' <<<"$out" | grep -E "user=\"?$ADMIN_USER\"?" | grep -E 'groups=[^ ]*system:masters' |
    grep 'path=/apis/data.kubedojo.io/v1alpha1/namespaces/default/datarecords/user-config' >/dev/null || {
    echo "no request line for user-config with user=$ADMIN_USER groups=...system:masters...; got:"
    grep request <<<"$out" | tail -n 8
    return 1
  }
}
check "k logs -n kubedojo-system -l app=kubedojo-data-api: each request with the user's name and groups" check_logs
check_logs_follow() {
  local f=$DIR/logs-follow.out pid marker="lab-follow-$RANDOM$RANDOM"
  k logs -n kubedojo-system -l app=kubedojo-data-api -f >"$f" 2>&1 &
  pid=$!
  sleep 2
  k get dr "$marker" -n default >/dev/null 2>&1 || true
  for _ in $(seq 1 20); do
    grep -q "$marker" "$f" && break
    sleep 0.5
  done
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  grep "$marker" "$f" | grep -E "user=\"?$ADMIN_USER\"?" >/dev/null || {
    echo "kubectl logs -f did not show the request for $marker:"
    tail -n 5 "$f"
    return 1
  }
}
check "k logs -n kubedojo-system -l app=kubedojo-data-api -f: a new request shows up with its user" check_logs_follow

# ---------------------------------------------------------------- the lab's troubleshooting steps

check_describe_apiservice() {
  local out
  out=$(k describe apiservice v1alpha1.data.kubedojo.io) || return 1
  expect_lines "$out" '^ +Group Priority Minimum: +1000$' '^ +Version Priority: +15$' '^ +Ca Bundle: +[A-Za-z0-9+/=]{100,}$' \
    '^ +Name: +kubedojo-data-api$' '^ +Namespace: +kubedojo-system$' '^ +Port: +443$' \
    'cert-manager\.io/inject-ca-from: kubedojo-system/kubedojo-data-api-cert' || return 1
  # insecureSkipTLSVerify: false is the default, so the stored object leaves it out
  ! grep -Eq 'Insecure Skip TLS Verify: +true' <<<"$out" || {
    echo "insecureSkipTLSVerify is true"
    return 1
  }
  # a condition prints as Last Transition Time, Message, Reason, Status, Type
  grep -B4 -E '^ +Type: +Available$' <<<"$out" | grep -Eq '^ +Status: +True$' || {
    echo "no Available True condition in:"
    echo "$out"
    return 1
  }
}
check "k describe apiservice v1alpha1.data.kubedojo.io: priorities, Service, Available True" check_describe_apiservice

check_endpoints() {
  local out ip
  out=$(k get endpoints -n kubedojo-system kubedojo-data-api 2>/dev/null) || return 1
  echo "$out"
  for ip in "${POD_IPS[@]}"; do [[ $out == *"$ip:10250"* ]] || return 1; done
}
check "k get endpoints -n kubedojo-system kubedojo-data-api: both pods at :10250" check_endpoints

SVC_HOST=kubedojo-data-api.kubedojo-system.svc
EP=$(k get endpoints -n "$NS" kubedojo-data-api -o 'jsonpath={.subsets[0].addresses[0].ip}:{.subsets[0].ports[0].port}' 2>/dev/null || true)
check_curl_healthz() {
  local out code
  out=$(curl -vk --connect-to "$SVC_HOST:443:$EP" "https://$SVC_HOST:443/healthz" 2>&1) || {
    echo "$out"
    return 1
  }
  code=$(sed -n 's/^< HTTP\/[0-9.]* \([0-9]*\).*/\1/p' <<<"$out" | tail -n1)
  [[ $code == 200 && $(tail -n1 <<<"$out") == ok* ]] || {
    echo "$out"
    return 1
  }
}
check "curl -vk https://kubedojo-data-api.kubedojo-system.svc:443/healthz: 200 without credentials" check_curl_healthz

secret_pem() { k get secret -n "$NS" kubedojo-data-api-tls -o "jsonpath={.data.$1}" | base64 -d; }
check_valid_cert() {
  local out
  secret_pem 'ca\.crt' >"$DIR/lab-ca.crt" || return 1
  # (curl --cacert cannot: OpenSSL's curl refuses the empty issuer name of cert-manager's
  # selfSigned certificate without a subject; kube-aggregator's Go TLS accepts it)
  openssl s_client -connect "$EP" -servername "$SVC_HOST" </dev/null 2>/dev/null | openssl x509 >"$DIR/served.crt" || return 1
  out=$(openssl verify -CAfile "$DIR/lab-ca.crt" -purpose sslserver -verify_hostname "$SVC_HOST" "$DIR/served.crt" 2>&1) || {
    echo "$out"
    return 1
  }
  [[ $(k get apiservice v1alpha1.data.kubedojo.io -o 'jsonpath={.spec.caBundle}' | base64 -d) == "$(cat "$DIR/lab-ca.crt")" ]] || {
    echo "APIService caBundle is not the Certificate's ca.crt"
    return 1
  }
}
check "the served certificate verifies against the Certificate's ca.crt for the Service name; caBundle = ca.crt" check_valid_cert

# ---------------------------------------------------------------- renewal without a restart

served_serial() { openssl s_client -connect "$1" -servername "$SVC_HOST" </dev/null 2>/dev/null | openssl x509 -noout -serial; }
check_renewal() {
  local pids_before pids_after want ip ok rev
  pids_before=$(k get pod -n "$NS" -l app=kubedojo-data-api -o 'jsonpath={range .items[*]}{.status.containerStatuses[0].containerID}{" "}{end}')
  rev=$(k get certificate -n "$NS" kubedojo-data-api-cert -o 'jsonpath={.status.revision}')
  # what `cmctl renew` does: condition Issuing=True on the Certificate
  k patch certificate -n "$NS" kubedojo-data-api-cert --subresource=status --type=merge -p \
    "{\"status\":{\"conditions\":[{\"type\":\"Issuing\",\"status\":\"True\",\"reason\":\"ManuallyTriggered\",\"message\":\"lab.sh\",\"lastTransitionTime\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\"}]}}" >/dev/null || return 1
  retry 30 bash -c "[[ \$(\"$KUBECTL_BIN\" get certificate -n $NS kubedojo-data-api-cert -o 'jsonpath={.status.revision}') == $((rev + 1)) ]]" || return 1
  k wait --for=condition=Ready certificate -n "$NS" kubedojo-data-api-cert --timeout=30s >/dev/null || return 1
  want=$(secret_pem 'tls\.crt' | openssl x509 -noout -serial)
  for ip in "${POD_IPS[@]}"; do
    ok=
    for _ in $(seq 1 40); do
      [[ $(served_serial "$ip:10250") == "$want" ]] && ok=1 && break
      sleep 0.5
    done
    [[ -n $ok ]] || {
      echo "pod at $ip still serves $(served_serial "$ip:10250"), the renewed Secret has $want"
      return 1
    }
  done
  pids_after=$(k get pod -n "$NS" -l app=kubedojo-data-api -o 'jsonpath={range .items[*]}{.status.containerStatuses[0].containerID}{" "}{end}')
  [[ $pids_after == "$pids_before" ]] || {
    echo "containers changed: $pids_before -> $pids_after"
    return 1
  }
  secret_pem 'ca\.crt' >"$DIR/lab-ca2.crt"
  cmp -s "$DIR/lab-ca.crt" "$DIR/lab-ca2.crt" && {
    echo "ca.crt did not change (selfSigned + rotationPolicy Always must give a new one)"
    return 1
  }
  retry 30 bash -c "[[ \$(\"$KUBECTL_BIN\" get apiservice v1alpha1.data.kubedojo.io -o 'jsonpath={.spec.caBundle}' | base64 -d) == \"\$(cat $DIR/lab-ca2.crt)\" ]]" || {
    echo "the renewed ca.crt did not reach the APIService caBundle (lab_sim.py cainjector)"
    return 1
  }
  retry 60 check_available >/dev/null || return 1
  retry 30 k get dr user-config -n default >/dev/null
}
check "renewal (cmctl renew's Issuing=True): new Secret, both pods serve it without a restart, caBundle updated, still Available" check_renewal

# the lab's ServiceNotFound lesson: without the Service, describe says why; back with it
check_service_not_found() {
  kubectl delete -f manifests/service.yaml >/dev/null || return 1
  retry 30 bash -c '"$0" describe apiservice v1alpha1.data.kubedojo.io | grep -B4 -E "^ +Type: +Available$" |
    grep -E "^ +Reason: +ServiceNotFound$" >/dev/null' "$KUBECTL_BIN" || {
    k describe apiservice v1alpha1.data.kubedojo.io | sed -n '/^Status:/,$p'
    kubectl apply -f manifests/service.yaml >/dev/null
    return 1
  }
  kubectl apply -f manifests/service.yaml >/dev/null || return 1
  retry 60 check_available >/dev/null
}
check "k describe apiservice without the Service: Available False, ServiceNotFound; Available again after re-applying service.yaml" check_service_not_found
