#!/usr/bin/env bash
# Fuzzes every parser that reads outside input (issue 13 §6) for a bounded time and fails on
# the first crash, panic, hang (> 10 s for one input) or broken invariant:
#   decode          kubelet /metrics/resource text (src/scrape/decode.rs)
#   label_selector  labelSelector (src/api/label_selector.rs), parse -> print -> parse
#   field_selector  fieldSelector (src/api/field_selector.rs), parse -> print -> parse
#   request_info    path + query -> RequestInfo and ListOptions (src/api/request_info.rs,
#                   query.rs, list_options.rs): authorization and handler see the same selectors
#   negotiate       Accept headers (src/api/negotiate.rs)
#   front_proxy     X-Remote-User/Group/Extra- headers (src/auth/front_proxy.rs)
#   records_file    the records file loader (src/records/file.rs), load -> write -> load
#
# Each target starts from its committed seed corpus (fuzz/corpus/<target>/, real inputs) and
# runs for FUZZ_SECONDS (default 60). New inputs go to a temporary directory, so the checkout is
# left as it was; a crashing input is saved under fuzz/artifacts/<target>/ and printed.
#
# Usage: bash scripts/fuzz.sh [target...]      (all targets when none is named)
# Needs: cargo-fuzz (installed into $KUBEDOJO_CACHE/cargo-fuzz when missing) and a C++
# compiler (libFuzzer is built from source by libfuzzer-sys). Runs on the stable toolchain with
# `-s none`: the code is safe Rust, so what the fuzzer can find is panics (overflow checks and
# debug assertions are on), hangs and broken invariants; AddressSanitizer (nightly only) would
# add nothing but time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECS="${FUZZ_SECONDS:-60}"
CACHE="${KUBEDOJO_CACHE:-$HOME/.cache/kubedojo}"
CARGO_FUZZ_VERSION=0.13.2
ALL=(decode label_selector field_selector request_info negotiate front_proxy records_file)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")

# The instrumented build has its own flags, so it gets its own directory (every dependency is
# built once with coverage instrumentation, then only this crate is rebuilt). fuzz/ uses the
# library without its `server` feature: only the parsers and their ~120 crates (no kube,
# hyper, reqwest, tokio-postgres), so a cold build is a few minutes, not 8.
FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$CACHE/cargo-target}/fuzz}"

CARGO_FUZZ="$CACHE/cargo-fuzz/bin/cargo-fuzz"
if ! "$CARGO_FUZZ" --version 2>/dev/null | grep " $CARGO_FUZZ_VERSION\$" >/dev/null; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION into $CACHE/cargo-fuzz" >&2
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$CACHE/cargo-fuzz"
fi
command -v c++ >/dev/null || {
  echo "no C++ compiler: libfuzzer-sys builds libFuzzer from source (Debian: apt-get install g++)" >&2
  exit 1
}

# Options go before the target and corpus arguments (everything after `--` is libFuzzer's).
fuzz() {
  local cmd=$1
  shift
  "$CARGO_FUZZ" "$cmd" --fuzz-dir fuzz --sanitizer none --target-dir "$FUZZ_TARGET_DIR" "$@"
}

start=$(date +%s)
echo "building ${#TARGETS[@]} fuzz targets (release, coverage-instrumented) in $FUZZ_TARGET_DIR" >&2
if [ ${#TARGETS[@]} -eq ${#ALL[@]} ]; then
  fuzz build # every target in one cargo invocation
else
  for t in "${TARGETS[@]}"; do
    fuzz build "$t"
  done
fi
built=$(date +%s)

work=$(mktemp -d /tmp/kubedojo-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
summary=()
failed=()
for t in "${TARGETS[@]}"; do
  [ -d "fuzz/corpus/$t" ] || { echo "no seed corpus fuzz/corpus/$t" >&2; exit 1; }
  mkdir -p "$work/$t" "fuzz/artifacts/$t"
  log="$work/$t.log"
  echo "--- fuzzing $t for ${SECS}s" >&2
  rc=0
  fuzz run "$t" "$work/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ "$rc" -ne 0 ]; then
    tail -n 60 "$log" >&2
    failed+=("$t")
    summary+=("$(printf '%-15s FAILED (rc=%s) after %s executions; input saved in fuzz/artifacts/%s/' "$t" "$rc" "${runs:-?}" "$t")")
  else
    summary+=("$(printf '%-15s %12s executions in %ss, no crash' "$t" "${runs:-?}" "$SECS")")
  fi
done
end=$(date +%s)

echo >&2
echo "fuzz summary (build $((built - start))s, runs $((end - built))s):" >&2
printf '  %s\n' "${summary[@]}" >&2
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]} (reproduce: cargo fuzz run <target> <artifact> -s none --fuzz-dir fuzz)" >&2
  exit 1
fi
