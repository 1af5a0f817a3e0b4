#!/usr/bin/env bash
# Instructions per heartbeat, counted by valgrind's callgrind, for BENCHMARKS.md:
#   bash tests/bench/heartbeat-instructions.sh BIN [BIN ...]
# A count of instructions does not depend on what else the machine is doing, so it tells apart
# changes of a few per cent that the heartbeat rate's noise hides. For each binary: a console under
# callgrind with 1,000 agents, 5 s of wrk (-t1 -c8) to warm up, then 15 s counted; prints the
# heartbeats in that window and the console's instructions (all threads, user space: the kernel's
# share is not counted) per heartbeat. Needs valgrind, wrk, curl and python3.
set -euo pipefail
AGENTS=${AGENTS:-1000}
WORK=$(mktemp -d /tmp/hybridsync-instructions.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
export INTERVAL_SECONDS=30

for BIN in "$@"; do
  rm -rf "$WORK/data" "$WORK"/callgrind.*; DATA="$WORK/data"; P=$(port); URL=http://127.0.0.1:$P
  echo 'bench password long enough' | $BIN admin create-user --data-dir "$DATA" --username bench --role global-administrator --password-stdin >/dev/null
  TOKEN=$($BIN admin create-enrollment-token --data-dir "$DATA" --max-uses "$AGENTS")
  API=$($BIN admin create-api-token --data-dir "$DATA" --username bench)
  RUST_LOG=warn valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.%p" \
    "$BIN" serve --listen 127.0.0.1:$P --data-dir "$DATA" --poll-interval 1h >"$WORK/console.log" 2>&1 & C=$!; PIDS+=($C)
  metrics() { curl -sf -H "authorization: Bearer $API" "$URL/metrics"; }
  # Ready, not only live: /metrics answers once the fleet is loaded (slowly, under valgrind).
  for _ in $(seq 1200); do metrics >/dev/null && break; sleep 0.1; done
  $BIN simulate --console "$URL" --enrollment-token "$TOKEN" --agents "$AGENTS" --enroll-only \
    --credentials-out "$WORK/creds" >/dev/null
  CREDS="$WORK/creds" wrk -t1 -c8 -d5s -s tests/bench/heartbeat.lua "$URL" >/dev/null
  before=$(metrics | awk '/^hybridsync_heartbeats_received_total/ {print $2}')
  callgrind_control -i on $C >/dev/null
  CREDS="$WORK/creds" wrk -t1 -c8 -d15s -s tests/bench/heartbeat.lua "$URL" >/dev/null
  callgrind_control -i off $C >/dev/null
  after=$(metrics | awk '/^hybridsync_heartbeats_received_total/ {print $2}')
  callgrind_control -d $C >/dev/null
  sleep 1
  # The dump of the counted window is the process's second file (the first is written at exit).
  instructions=$(callgrind_annotate "$WORK/callgrind.$C.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}' | head -1)
  echo "$(basename "$BIN"): heartbeats=$((after - before)) instructions=$instructions per heartbeat=$((instructions / (after - before)))"
  kill -TERM $C; wait $C 2>/dev/null || true
done
