#!/usr/bin/env bash
# Instructions per scrape cycle of our server (issue #15): callgrind counts are repeatable on a
# shared, noisy machine where CPU seconds are not, so this is how a CPU-per-cycle change is
# bisected. Same fleet and flags as run.sh (kube-apiserver, kubelet-sim, TLS to kubelets).
#
# Usage:
#   bench/scale/callgrind.sh [--nodes N] [--pods M] [--cycles C] [--resolution 25s] BIN...
#
# The resolution must leave valgrind time (it runs ~50x slower) and stay under the simulated
# kubelets' 30 s idle-connection timeout (hyper's header-read timeout): at 10 s one tick's 100
# scrapes timed out under valgrind (the request timeout is half the resolution), at 40 s every
# kept-alive connection was closed between ticks; either way every scrape reconnected and half
# the count was TLS handshakes. A failed scrape is reported.
#
# For each BIN (a kubedojo-data-api binary, e.g. one built from an older commit): start it under
# `valgrind --tool=callgrind --instr-atstart=no` with run.sh's flags, wait until it serves every
# pod, switch instrumentation on right after a tick ends, let C whole ticks pass (idle: no API
# load), switch it off. Prints one line per binary: `Ir per cycle` (instructions, the tick plus
# everything else the server did meanwhile), and keeps callgrind.out.* in OUT for
# `callgrind_annotate`. It starts its own control plane and kubelet-sim (from --first-address,
# default 127.6.0.1, away from run.sh's 127.3.0.1) and measures instructions, not time: it needs
# no `flock /tmp/kubedojo-cluster.lock`.
set -euo pipefail
NODES=100 RESOLUTION=25s FLEET_TOOL=callgrind FLEET_HELP_LINES=2,24p
# shellcheck source=bench/scale/fleet.sh
source "$(dirname "${BASH_SOURCE[0]}")/fleet.sh" "$@"

n=0
for bin in "${BINS[@]}"; do
  n=$((n + 1))
  PORT=$(_kd_free_port)
  URL=https://127.0.0.1:$PORT
  SERVER_ARGS "$n" "$PORT"
  NO_COLOR=1 KUBEDOJO_LOG=$LOG_FILTER valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out.$n" \
    "$bin" "${SERVER_FLAGS[@]}" \
    </dev/null >"$OUT/server-$n.log" 2>&1 &
  SERVER_PID=$!
  "$KD_LOAD" "${CERT[@]}" wait --url "$URL" --nodes "$EXPECT_NODES" --pods "$EXPECT_PODS" --timeout 900 \
    --pid "$SERVER_PID" >"$OUT/wait-$n.log" 2>&1 || die "$bin never served the fleet ($OUT/server-$n.log)"
  # One more whole tick first (the first rates, connection set-up), then right after a tick ends.
  c=$(ticks)
  while (($(ticks) < c + 2)); do sleep 0.2; done
  c0=$(ticks) l0=$(wc -l <"$OUT/server-$n.log")
  callgrind_control -i on "$SERVER_PID" >/dev/null
  while (($(ticks) < c0 + CYCLES)); do sleep 0.2; done
  callgrind_control -i off "$SERVER_PID" >/dev/null
  c1=$(ticks) l1=$(wc -l <"$OUT/server-$n.log")
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
  f=$OUT/callgrind.out.$n
  # (no early `exit` in awk: callgrind_annotate would die of SIGPIPE and pipefail end the script)
  ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done {gsub(",", "", $1); print $1; done = 1}')
  fails=$(sed -n "$((l0 + 1)),${l1}p" "$OUT/server-$n.log" | grep -c "failed to scrape" || true)
  ((fails == 0)) || log "WARNING: $fails failed scrapes while measuring ($OUT/server-$n.log; timeouts under valgrind? use a longer --resolution): reconnections inflate the count"
  cycles=$((c1 - c0))
  echo "$bin: $((ir / cycles)) Ir per cycle ($cycles cycles, $NODES x $PODS; $f)"
done
