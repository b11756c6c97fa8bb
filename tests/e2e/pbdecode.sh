#!/usr/bin/env bash
# Build kd-pbdecode (tests/tools/pbdecode/main.go, our own program) against the real Go types:
# k8s.io/metrics and k8s.io/apimachinery at the staging version of KUBE_VERSION
# (tests/e2e/versions.env), in a throwaway module under $KUBEDOJO_CACHE/build, as tools.sh
# builds the upstream tools. Prints the binary path; a binary newer than main.go is reused.
#
# Usage: tests/e2e/pbdecode.sh            build if needed, print the path
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$E2E_DIR/versions.env"
SRC=$E2E_DIR/../tools/pbdecode/main.go
CACHE_DIR=${KUBEDOJO_CACHE:-$HOME/.cache/kubedojo}
STAGING=v0.${KUBE_VERSION#v1.}
DIR=$CACHE_DIR/build/kd-pbdecode-$STAGING
BIN=$CACHE_DIR/bin/kd-pbdecode-$STAGING

command -v go >/dev/null || { echo "pbdecode.sh: go is not installed" >&2; exit 1; }
mkdir -p "$CACHE_DIR/bin" "$DIR"
exec {lockfd}>"$DIR.lock"
flock "$lockfd"
if [[ -x $BIN && $BIN -nt $SRC ]] && cmp -s "$SRC" "$DIR/main.go"; then
  echo "$BIN"
  exit 0
fi
cp "$SRC" "$DIR/main.go"
cd "$DIR"
if [[ ! -f go.mod ]]; then
  go mod init kubedojo.invalid/tools/kd-pbdecode >/dev/null 2>&1
fi
{
  go get "k8s.io/metrics@$STAGING" "k8s.io/apimachinery@$STAGING" &&
    go mod tidy
} >"$DIR/go-get.log" 2>&1 || { cat "$DIR/go-get.log" >&2; echo "pbdecode.sh: go get failed" >&2; exit 1; }
CGO_ENABLED=0 nice -n "${KUBEDOJO_BUILD_NICE:-10}" go build -trimpath -o "$BIN.tmp" . >&2
mv "$BIN.tmp" "$BIN"
echo "$BIN"
