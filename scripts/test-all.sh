#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: builds the pinned Go test tools
# (cached in ~/.cache/kubedojo), checks formatting and lints, runs every Rust test
# (unit, integration, kubectl against demo) and the real-cluster checks.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n=== %s\n' "$*" >&2; }

# Compiled dependencies are kept outside the checkout, like the Go tools, so a second
# run on the same machine rebuilds only this crate.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kubedojo/cargo-target}"

step "toolchain"
command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
command -v go >/dev/null || { echo "go not found: install Go 1.26+ to build the pinned test tools" >&2; exit 1; }
rustup show active-toolchain >/dev/null 2>&1 || true

step "PostgreSQL server binaries (the DataRecords table source tests start their own server)"
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  if command -v apt-get >/dev/null; then
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
  else
    echo "PostgreSQL server binaries not found: install PostgreSQL 13+ (Debian: apt-get install postgresql)" >&2; exit 1
  fi
fi

step "pinned Go test tools (built once, cached in ${KUBEDOJO_CACHE:-$HOME/.cache/kubedojo})"
# kube-controller-manager drives the real HPA of tests/e2e/hpa.sh
bash tests/e2e/tools.sh kubectl kube-apiserver etcd helm metrics-server kube-controller-manager >/dev/null
bash tests/e2e/tools.sh cert-manager-crds >/dev/null
KUBECTL=$(bash tests/e2e/tools.sh path kubectl)
export KUBECTL

step "a plain clone passes: no test, bench or fuzz input outside the repository"
# Test inputs live in tests/fixtures/ (issue 13 §7); nothing may read the CI machine's
# ../shared (or any absolute path to it), which a plain clone does not have.
if grep -rnE '\.\./shared|/work/shared|shared/data' src tests benches fuzz bench scripts \
    --exclude=test-all.sh; then
    echo "the lines above read files outside the repository; copy them into tests/fixtures/" >&2
    exit 1
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "cargo check --lib --no-default-features (the parsers-only cut fuzz/ builds)"
# Seconds, where a break of this cut would otherwise surface only after the fuzz build.
cargo check --lib --no-default-features --locked

step "cargo test"
cargo test --all-targets --locked

step "fuzzing: every parser from its seed corpus for ${FUZZ_SECONDS:-30}s each (scripts/fuzz.sh)"
# The parsers-only cut of the library (no `server` feature) is what fuzz/ builds.
FUZZ_SECONDS="${FUZZ_SECONDS:-30}" bash scripts/fuzz.sh

step "Helm chart and manifests (lint, template assertions, installs into a real kube-apiserver)"
KUBEDOJO_BIN="$CARGO_TARGET_DIR/debug/kubedojo-data-api" bash tests/chart/run.sh --own-cluster

step "static release binary, as the Dockerfile's build stage makes it"
bash scripts/build-static.sh
STATIC_BIN="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/kubedojo-data-api"

step "real cluster: kube-apiserver + etcd, our server behind kube-aggregator, kubectl checks"
KUBEDOJO_BIN="$STATIC_BIN" bash tests/e2e/run.sh

step "faults through a real kube-apiserver: rolling restart of two replicas under HPA load, a 30 s kube-apiserver outage (tests/e2e/faults.sh)"
KUBEDOJO_BIN="$STATIC_BIN" KD_LOAD="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/kd-load" bash tests/e2e/faults.sh

step "a real HPA (kube-controller-manager) scaling Deployments on our metrics (tests/e2e/hpa.sh)"
KUBEDOJO_BIN="$STATIC_BIN" bash tests/e2e/hpa.sh

step "sharded scraping: three replicas behind kube-aggregator, one SIGKILLed and restarted, with R=1 then R=2 (tests/e2e/ha.sh, ~5 min)"
KUBEDOJO_BIN="$STATIC_BIN" bash tests/e2e/ha.sh

step "the lab's steps word for word with manifests/ (real kube-apiserver, tests/e2e/lab.sh)"
KUBEDOJO_BIN="$STATIC_BIN" bash tests/e2e/lab.sh

step "every CI gate of bench/scale/report.py can fail (doctored copies of a committed run, ~3 s)"
python3 bench/scale/test_gates.py

step "side by side with metrics-server at 100 nodes x 30 pods (fails if we stop being ahead)"
KD_BIN="$STATIC_BIN" KD_LOAD="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/kd-load" bash bench/scale/ci.sh
