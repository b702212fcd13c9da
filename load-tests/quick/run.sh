#!/usr/bin/env bash
# Quick side-by-side: hubplane (demo hub) against bare uvicorn apps, server on core 0,
# driver on core 1. Loopback only; each run lasts SECONDS. Full benchmarks: issue 7.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_PER_RUN=${SECONDS_PER_RUN:-4}
VENV=.venv
BENCH=load-tests/.venvs/quick
[ -x "$BENCH/bin/python" ] || { python3 -m venv "$BENCH"; "$BENCH/bin/pip" install -q picows uvloop; }
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
taskset -c 0 $VENV/bin/hubplane serve --port 8800 --log-level warning & pids+=($!)
(cd load-tests/quick && taskset -c 0 ../../$VENV/bin/uvicorn bare_apps:echo --port 8801 --log-level warning \
  --loop uvloop --http httptools --ws websockets-sansio --ws-ping-interval 0) & pids+=($!)
(cd load-tests/quick && taskset -c 0 ../../$VENV/bin/uvicorn bare_apps:broadcast --port 8802 --log-level warning \
  --loop uvloop --http httptools --ws websockets-sansio --ws-ping-interval 0) & pids+=($!)
sleep 3
D="taskset -c 1 $BENCH/bin/python load-tests/quick/drive.py"
for _ in 1 2; do
  $D echo ws://127.0.0.1:8801/ bare 50 "$SECONDS_PER_RUN"
  $D echo ws://127.0.0.1:8800/hubs/demo hub 50 "$SECONDS_PER_RUN"
  $D broadcast ws://127.0.0.1:8802/ bare 500 "$SECONDS_PER_RUN"
  $D broadcast ws://127.0.0.1:8800/hubs/demo hub 500 "$SECONDS_PER_RUN"
done
