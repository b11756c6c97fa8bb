#!/usr/bin/env bash
# Build the statically linked release binary exactly as the Dockerfile's build stage
# does, on a machine without Docker, and check that it is static.
#
#   scripts/build-static.sh            build, check, print path and size
#
# Output: target/x86_64-unknown-linux-gnu/release/kubedojo-data-api. Heavy: a full
# release build of every dependency (its own target dir, as RUSTFLAGS differ).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

target=x86_64-unknown-linux-gnu
bin=${CARGO_TARGET_DIR:-target}/$target/release/kubedojo-data-api

RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target x86_64-unknown-linux-gnu --bin kubedojo-data-api --bin kd-load

info=$(file -L "$bin")
echo "$info"
case $info in
  *"statically linked"* | *"static-pie linked"*) ;;
  *) echo "build-static.sh: $bin is not statically linked" >&2; exit 1 ;;
esac
# glibc's ldd prints "statically linked" for a static-pie (exit 0) and "not a
# dynamic executable" for a non-PIE static binary (exit 1); anything else lists libraries.
ldd_out=$(ldd "$bin" 2>&1 || true)
echo "ldd: $ldd_out"
case $ldd_out in
  *"=>"*) echo "build-static.sh: ldd lists shared libraries" >&2; exit 1 ;;
  *"statically linked"* | *"not a dynamic executable"*) ;;
  *) echo "build-static.sh: unexpected ldd output" >&2; exit 1 ;;
esac
# What the image ships: stripped (the release profile keeps line tables for backtraces).
stripped=$bin.stripped
cp "$bin" "$stripped"
strip "$stripped"
"$stripped" --version
size=$(stat -c %s "$bin")
ssize=$(stat -c %s "$stripped")
echo "static binary: $bin ($size bytes, $((size / 1024 / 1024)) MiB)"
echo "stripped (as in the image): $stripped ($ssize bytes, $((ssize / 1024 / 1024)) MiB)"
