#!/usr/bin/env bash
# CI hook (issues #7, #15): the 100 nodes × 30 pods comparison with metrics-server v0.9.0
# (`run.sh --scenario ci`: 2 rounds, one per order, 20 s of recorded load per server and
# round, every response checked against the fleet). Exits non-zero unless the gates of
# report.py hold: ours/metrics-server peak and steady RSS <= 0.5, CPU seconds per scrape cycle
# <= 0.4, HPA p50 latency <= 1.4 and full pod list p50 <= 0.6 of metrics-server's; zero errors
# and every scheduled request answered with the whole fleet, for both servers (a broken
# baseline fails the run). Prints `N passed, M failed` last. `python3 bench/scale/test_gates.py`
# shows each of these gates failing on a doctored copy of a committed run.
# Before it, bench/scale/golden.sh (issue 12 §1, ~45 s): both servers on one 20 × 10 fleet,
# their protobuf answers decoded by the real Go types and compared field by field.
# Output: target/scale/ci-<timestamp>/ (results.md, results.json, logs; golden/). Extra
# arguments are passed to run.sh (e.g. --rounds 1).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=$ROOT/target/scale/ci-$(date -u +%Y%m%dT%H%M%SZ)
bash "$ROOT/bench/scale/golden.sh" --out "$OUT/golden"
exec bash "$ROOT/bench/scale/run.sh" --scenario ci --out "$OUT" --check "$@"
