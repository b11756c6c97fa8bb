#!/usr/bin/env bash
# CI hook for issue #7: the 100 nodes × 30 pods comparison with metrics-server v0.8.0.
# Exits non-zero unless our server is ahead (ours/metrics-server < 1 for peak and steady
# resident memory and CPU seconds per scrape cycle) with zero request errors; prints
# `N passed, M failed` last. Wall time ~3-4 min warm (both orders, 10 s resolution).
# Output: target/scale/ci-<timestamp>/ (results.md, results.json, logs). Extra arguments are
# passed to run.sh (e.g. --rounds 1).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
exec bash "$ROOT/bench/scale/run.sh" --nodes 100 --pods 30 --containers 2 --resolution 10s \
  --idle-cycles 2 --load-seconds 10 --hpa-rate 20 --top-pods-rate 1 --top-nodes-rate 1 \
  --rounds 2 --out "$ROOT/target/scale/ci-$(date -u +%Y%m%dT%H%M%SZ)" --check "$@"
