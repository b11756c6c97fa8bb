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
bin=target/$target/release/kubedojo-data-api

RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target x86_64-unknown-linux-gnu --bin kubedojo-data-api

info=$(file -L "$bin")
echo "$info"
case $info in
  *"statically linked"* | *"static-pie linked"*) ;;
  *) echo "build-static.sh: $bin is not statically linked" >&2; exit 1 ;;
esac
if ldd_out=$(ldd "$bin" 2>&1); then
  echo "build-static.sh: ldd lists shared libraries:" >&2
  echo "$ldd_out" >&2
  exit 1
fi
echo "ldd: $ldd_out"
"$bin" --version
size=$(stat -c %s "$bin")
echo "static binary: $bin ($size bytes, $((size / 1024 / 1024)) MiB)"
