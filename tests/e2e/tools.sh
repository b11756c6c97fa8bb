#!/usr/bin/env bash
# Build the pinned Go test tools (kubectl, kube-apiserver, kube-controller-manager,
# etcd, helm, metrics-server) from their Go modules and cache them outside the repo.
#
# Usage:
#   tests/e2e/tools.sh [TOOL...|all]   build what is missing, print the binary path(s) on stdout
#   tests/e2e/tools.sh path TOOL       print the cached binary path (exit 1 if not built yet)
#   tests/e2e/tools.sh version TOOL    print the pinned version of TOOL
#   TOOL is one of: kubectl kube-apiserver kube-controller-manager etcd helm
#   metrics-server metrics-server-legacy (no argument = kubectl kube-apiserver etcd helm)
#   tests/e2e/tools.sh cert-manager-crds
#                                      render cert-manager's CRDs (CERT_MANAGER_VERSION) from
#                                      the chart and CRD templates under deploy/ in its Go
#                                      module with the pinned helm; print the cached YAML's path
#
# Binaries land in ${KUBEDOJO_CACHE:-$HOME/.cache/kubedojo}/bin/<tool>-<version>,
# with a stable symlink bin/<tool> -> <tool>-<version>. A binary that exists and
# reports the expected version is never rebuilt. Versions come only from
# tests/e2e/versions.env.
#
# How: `go install pkg@version` refuses modules whose go.mod has replace
# directives (k8s.io/kubernetes, etcd server), so each tool is built inside a
# throwaway main module under $KUBEDOJO_CACHE/build/<tool>-<version>/ that
#   - requires the upstream module at the pinned version (via `go get pkg@ver`),
#   - copies the upstream `go` directive and `godebug` lines (not inherited from
#     dependencies),
#   - for k8s.io/kubernetes maps every `k8s.io/<x> => ./staging/src/k8s.io/<x>`
#     replace of the upstream go.mod to `k8s.io/<x> => k8s.io/<x> v0.<minor>.<patch>`,
#   - copies any non-local upstream replace verbatim.
# Builds are CGO_ENABLED=0, -trimpath, -ldflags '-s -w -X ...' (version stamping
# as in the upstream Makefiles; the build date is the module's release time, so
# the output is reproducible). Go's build cache (GOCACHE) and module cache are
# used as configured. Builds run under `nice` (KUBEDOJO_BUILD_NICE, default 10)
# and one at a time (flock on the cache dir).
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$E2E_DIR/versions.env"

CACHE_DIR=${KUBEDOJO_CACHE:-$HOME/.cache/kubedojo}
BIN_DIR=$CACHE_DIR/bin
BUILD_DIR=$CACHE_DIR/build
BUILD_NICE=${KUBEDOJO_BUILD_NICE:-10}
ALL_TOOLS=(kubectl kube-apiserver kube-controller-manager etcd helm metrics-server metrics-server-legacy)
DEFAULT_TOOLS=(kubectl kube-apiserver etcd helm)

log() { printf '[tools.sh] %s\n' "$*" >&2; }
die() { printf '[tools.sh] ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
  sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
}

tool_version() {
  case "$1" in
    kubectl | kube-apiserver | kube-controller-manager) echo "$KUBE_VERSION" ;;
    etcd) echo "$ETCD_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
    metrics-server) echo "$METRICS_SERVER_VERSION" ;;
    metrics-server-legacy) echo "$METRICS_SERVER_LEGACY_VERSION" ;;
    *) die "unknown tool '$1' (known: ${ALL_TOOLS[*]})" ;;
  esac
}

# module path, main package path
tool_module() {
  case "$1" in
    kubectl | kube-apiserver | kube-controller-manager) echo k8s.io/kubernetes ;;
    etcd) echo go.etcd.io/etcd/server/v3 ;;
    helm) echo helm.sh/helm/v3 ;;
    metrics-server | metrics-server-legacy) echo sigs.k8s.io/metrics-server ;;
  esac
}
tool_package() {
  case "$1" in
    kubectl) echo k8s.io/kubernetes/cmd/kubectl ;;
    kube-apiserver) echo k8s.io/kubernetes/cmd/kube-apiserver ;;
    kube-controller-manager) echo k8s.io/kubernetes/cmd/kube-controller-manager ;;
    etcd) echo go.etcd.io/etcd/server/v3 ;;
    helm) echo helm.sh/helm/v3/cmd/helm ;;
    metrics-server | metrics-server-legacy) echo sigs.k8s.io/metrics-server/cmd/metrics-server ;;
  esac
}

tool_path() { echo "$BIN_DIR/$1-$(tool_version "$1")"; }

# Print the tool's version output; used to check that a binary runs.
run_version() {
  local tool=$1 bin=$2
  case "$tool" in
    kubectl) timeout 30 "$bin" version --client 2>&1 ;;
    kube-apiserver | kube-controller-manager) timeout 30 "$bin" --version 2>&1 ;;
    etcd) timeout 30 "$bin" --version 2>&1 ;;
    helm) timeout 30 "$bin" version 2>&1 ;;
    metrics-server | metrics-server-legacy) timeout 30 "$bin" --version 2>&1 ;;
  esac
}

# Succeeds if $2 runs and reports the pinned version of tool $1.
check_binary() {
  local tool=$1 bin=$2 ver out want
  ver=$(tool_version "$tool")
  [[ -x $bin ]] || return 1
  out=$(run_version "$tool" "$bin") || return 1
  case "$tool" in
    kubectl) want="Client Version: $ver" ;;
    kube-apiserver | kube-controller-manager) want="Kubernetes $ver" ;;
    etcd) want="etcd Version: ${ver#v}" ;;
    helm) want="Version:\"$ver\"" ;;
    metrics-server | metrics-server-legacy) want="$ver" ;;
  esac
  [[ $out == *"$want"* ]] || {
    log "$bin does not report '$want': $out"
    return 1
  }
}

# Field of `go mod download -json` output (one "Key": "value" per line).
json_field() { sed -n "s/^[[:space:]]*\"$1\": \"\(.*\)\",\{0,1\}\$/\1/p"; }

# Write the throwaway module for tool $1 into dir $2 (emptied first).
make_module() {
  local tool=$1 dir=$2 mod ver dl gomod
  mod=$(tool_module "$tool")
  ver=$(tool_version "$tool")
  rm -rf "$dir"
  mkdir -p "$dir"
  cd "$dir"
  log "$tool: resolving $mod@$ver"
  dl=$(go mod download -json "$mod@$ver") ||
    die "$tool: 'go mod download $mod@$ver' failed (GOPROXY=$(go env GOPROXY)); is the version in versions.env right?"
  gomod=$(json_field GoMod <<<"$dl")
  [[ -f $gomod ]] || die "$tool: no go.mod for $mod@$ver in the module cache"
  MOD_INFO=$(json_field Info <<<"$dl")

  go mod init "kubedojo.invalid/tools/$tool" >/dev/null 2>&1 || die "$tool: go mod init failed in $dir"

  local gover edits=()
  gover=$(awk '$1 == "go" && NF == 2 { print $2; exit }' "$gomod")
  [[ -n $gover ]] && edits+=("-go=$gover")
  # godebug lines: `godebug k=v` or a `godebug ( ... )` block
  local gd
  while read -r gd; do
    [[ -n $gd ]] && edits+=("-godebug=$gd")
  done < <(awk '
    /^godebug[[:space:]]*\(/ { b = 1; next }
    b && /^\)/ { b = 0; next }
    b && NF { print $1; next }
    /^godebug[[:space:]]+[^(]/ { print $2 }' "$gomod")

  # replace directives as "old [oldver] => new [newver]"
  local line old new newver nstaging=0
  while IFS= read -r line; do
    [[ -n $line ]] || continue
    old=${line%%=>*}
    new=${line#*=>}
    read -r -a lhs <<<"$old"
    read -r -a rhs <<<"$new"
    new=${rhs[0]}
    newver=${rhs[1]:-}
    if [[ $new == ./staging/src/* && $mod == k8s.io/kubernetes ]]; then
      # k8s.io/<x> => ./staging/src/k8s.io/<x>  ==>  k8s.io/<x> => k8s.io/<x> v0.<minor>.<patch>
      edits+=("-replace=${lhs[0]}=${lhs[0]}@v0.${ver#v1.}")
      nstaging=$((nstaging + 1))
    elif [[ $new == .* || $new == /* ]]; then
      : # other local replaces (etcd's sibling modules) are pinned by upstream's require lines
    else
      local l=${lhs[0]}
      [[ -n ${lhs[1]:-} ]] && l+="@${lhs[1]}"
      edits+=("-replace=$l=$new${newver:+@$newver}")
    fi
  done < <(awk '
    /^replace[[:space:]]*\(/ { r = 1; next }
    r && /^\)/ { r = 0; next }
    r && /=>/ { sub(/\/\/.*/, ""); print; next }
    /^replace[[:space:]]+[^(]/ { sub(/^replace[[:space:]]+/, ""); sub(/\/\/.*/, ""); print }' "$gomod")

  if [[ $mod == k8s.io/kubernetes ]]; then
    ((nstaging > 0)) || die "$tool: found no staging replaces in $gomod"
    log "$tool: mapped $nstaging staging modules to v0.${ver#v1.}"
  fi
  ((${#edits[@]} == 0)) || go mod edit "${edits[@]}" || die "$tool: go mod edit failed"

  log "$tool: go get $(tool_package "$tool")@$ver"
  go get "$(tool_package "$tool")@$ver" >"$dir/go-get.log" 2>&1 || {
    cat "$dir/go-get.log" >&2
    die "$tool: go get $(tool_package "$tool")@$ver failed"
  }
}

release_date() {
  local t
  t=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$MOD_INFO" 2>/dev/null || true)
  if [[ -n $t ]] && date -u -d "$t" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null; then return; fi
  date -u +%Y-%m-%dT%H:%M:%SZ
}

tool_ldflags() {
  local tool=$1 ver bdate
  ver=$(tool_version "$tool")
  bdate=$(release_date)
  local f=(-s -w)
  case "$tool" in
    kubectl | kube-apiserver | kube-controller-manager)
      # mirrors hack/lib/version.sh kube::version::ldflags
      local major minor p
      major=${ver#v}
      major=${major%%.*}
      minor=${ver#v*.}
      minor=${minor%%.*}
      for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        f+=(-X "$p.gitVersion=$ver" -X "$p.gitMajor=$major" -X "$p.gitMinor=$minor"
          -X "$p.gitCommit=" -X "$p.gitTreeState=clean" -X "$p.buildDate=$bdate")
      done
      ;;
    etcd) ;; # etcd's version is a constant in go.etcd.io/etcd/api/v3/version
    helm)
      # mirrors helm's Makefile (k8s version constants from the client-go in the build list)
      local cg cmaj cmin
      cg=$(go list -m -f '{{.Version}}' k8s.io/client-go) || die "helm: cannot find k8s.io/client-go version"
      cg=${cg#v}
      cmaj=$((${cg%%.*} + 1))
      cmin=${cg#*.}
      cmin=${cmin%%.*}
      f+=(-X "helm.sh/helm/v3/internal/version.version=$ver"
        -X "helm.sh/helm/v3/internal/version.metadata="
        -X "helm.sh/helm/v3/internal/version.gitCommit="
        -X "helm.sh/helm/v3/internal/version.gitTreeState=clean"
        -X "helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$cmaj"
        -X "helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$cmin"
        -X "helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$cmaj"
        -X "helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$cmin")
      ;;
    metrics-server | metrics-server-legacy)
      # mirrors metrics-server's Makefile
      f+=(-X "k8s.io/client-go/pkg/version.gitVersion=$ver"
        -X "k8s.io/client-go/pkg/version.gitCommit="
        -X "k8s.io/client-go/pkg/version.buildDate=$bdate")
      ;;
  esac
  echo "${f[*]}"
}

build_tool() {
  local tool=$1 bin ver dir tmp start
  ver=$(tool_version "$tool")
  bin=$(tool_path "$tool")
  if check_binary "$tool" "$bin" 2>/dev/null; then
    ln -sfn "$(basename "$bin")" "$BIN_DIR/$tool"
    log "$tool $ver: cached at $bin"
    echo "$bin"
    return
  fi
  command -v go >/dev/null || die "go is not installed (needed to build $tool $ver)"
  mkdir -p "$BIN_DIR" "$BUILD_DIR"

  # one build at a time per cache dir (and no half-written binaries)
  exec {lockfd}>"$CACHE_DIR/.build.lock"
  if ! flock -n "$lockfd"; then
    log "waiting for another tools.sh build to finish ($CACHE_DIR/.build.lock)"
    flock "$lockfd"
  fi
  if check_binary "$tool" "$bin" 2>/dev/null; then # built meanwhile
    exec {lockfd}>&-
    log "$tool $ver: built meanwhile by another tools.sh, $bin"
    ln -sfn "$(basename "$bin")" "$BIN_DIR/$tool"
    echo "$bin"
    return
  fi

  start=$(date +%s)
  dir=$BUILD_DIR/$tool-$ver
  (
    make_module "$tool" "$dir"
    tmp="$bin.tmp.$$"
    trap 'rm -f "$tmp"' EXIT
    log "$tool: go build $(tool_package "$tool") (this takes minutes on a cold build cache)"
    CGO_ENABLED=0 nice -n "$BUILD_NICE" go build -trimpath -ldflags "$(tool_ldflags "$tool")" \
      -o "$tmp" "$(tool_package "$tool")" >&2 || die "$tool: go build failed (module in $dir)"
    check_binary "$tool" "$tmp" || die "$tool: built binary does not run or reports a wrong version"
    mv -f "$tmp" "$bin"
  )
  exec {lockfd}>&-
  ln -sfn "$(basename "$bin")" "$BIN_DIR/$tool"
  log "$tool $ver: built $bin in $(($(date +%s) - start))s"
  echo "$bin"
}

# cert-manager's CustomResourceDefinitions, exactly as its Helm chart installs them
# (crds.enabled=true): the module github.com/cert-manager/cert-manager carries the
# chart (deploy/charts/cert-manager: values.yaml, templates/_helpers.tpl,
# Chart.template.yaml) and the CRD templates (deploy/crds/crd-*.yaml, which the
# release tooling copies into the chart's templates/). We assemble that chart and
# `helm template` only the CRDs. Its controller and cainjector are NOT built: their
# mains live in sub-modules (cmd/controller = module .../controller-binary,
# cmd/cainjector = .../cainjector-binary) that `replace` the main module with ../../
# and are not published on the Go module proxy (404 for every path and version), and
# the main module's zip leaves cmd/ out. Cached as $CACHE_DIR/cert-manager/crds-<ver>.yaml.
cert_manager_crds() {
  local ver=$CERT_MANAGER_VERSION mod=github.com/cert-manager/cert-manager out dl src helm tmp n
  out=$CACHE_DIR/cert-manager/crds-$ver.yaml
  if [[ -s $out ]] && (($(grep -c '^kind: CustomResourceDefinition' "$out") == 6)); then
    log "cert-manager $ver CRDs: cached at $out"
    echo "$out"
    return
  fi
  command -v go >/dev/null || die "go is not installed (needed to download $mod@$ver)"
  helm=$(build_tool helm | tail -n1)
  log "cert-manager CRDs: resolving $mod@$ver"
  dl=$(cd "${TMPDIR:-/tmp}" && GOFLAGS=-mod=mod go mod download -json "$mod@$ver") || die "go mod download $mod@$ver failed"
  src=$(json_field Dir <<<"$dl")
  [[ -d $src/deploy/crds && -d $src/deploy/charts/cert-manager ]] || die "$mod@$ver has no deploy/crds or deploy/charts/cert-manager"
  mkdir -p "$CACHE_DIR/cert-manager"
  tmp=$(mktemp -d "$CACHE_DIR/cert-manager/render.XXXXXX")
  mkdir -p "$tmp/cert-manager/templates"
  sed -e "s/^version: v0.0.0/version: $ver/" -e "s/^appVersion: v0.0.0/appVersion: $ver/" \
    -e 's/{{IS_PRERELEASE}}/false/' "$src/deploy/charts/cert-manager/Chart.template.yaml" >"$tmp/cert-manager/Chart.yaml"
  cp "$src/deploy/charts/cert-manager/values.yaml" "$tmp/cert-manager/"
  cp "$src/deploy/charts/cert-manager/templates/_helpers.tpl" "$tmp/cert-manager/templates/"
  cp "$src"/deploy/crds/crd-*.yaml "$tmp/cert-manager/templates/"
  chmod -R u+w "$tmp"
  "$helm" template cert-manager "$tmp/cert-manager" --namespace cert-manager --set crds.enabled=true \
    >"$tmp/crds.yaml" || die "helm template of cert-manager $ver's CRDs failed (chart in $tmp)"
  n=$(grep -c '^kind: CustomResourceDefinition' "$tmp/crds.yaml" || true)
  ((n == 6)) || die "expected 6 CRDs from cert-manager $ver, rendered $n ($tmp/crds.yaml)"
  mv -f "$tmp/crds.yaml" "$out"
  rm -rf "$tmp"
  log "cert-manager $ver CRDs: rendered $out"
  echo "$out"
}

main() {
  local cmd=${1:-}
  case "$cmd" in
    cert-manager-crds)
      cert_manager_crds
      return 0
      ;;
    -h | --help | help)
      usage
      return 0
      ;;
    path)
      [[ $# -eq 2 ]] || die "usage: $0 path TOOL"
      local p v
      v=$(tool_version "$2")
      p=$(tool_path "$2")
      [[ -x $p ]] || die "$2 $v is not built yet; run: $0 $2"
      echo "$p"
      return 0
      ;;
    version)
      [[ $# -eq 2 ]] || die "usage: $0 version TOOL"
      tool_version "$2"
      return 0
      ;;
  esac
  local tools=("$@") t
  if ((${#tools[@]} == 0)); then
    tools=("${DEFAULT_TOOLS[@]}")
  elif [[ ${tools[*]} == all ]]; then
    tools=("${ALL_TOOLS[@]}")
  fi
  for t in "${tools[@]}"; do tool_version "$t" >/dev/null; done # validate first
  for t in "${tools[@]}"; do build_tool "$t"; done
}

main "$@"
