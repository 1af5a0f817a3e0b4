#!/usr/bin/env bash
# Instructions per health poll on a kept connection, counted by valgrind's callgrind, for
# BENCHMARKS.md:  bash tests/bench/poll-instructions.sh BIN [BIN ...]
# For each binary: a console under callgrind polling 1,000 simulated agents every 3 s (every
# connection kept), counted over three whole rounds once two rounds have opened every connection. The simulated
# agents heartbeat every 10 s meanwhile; the script prints the heartbeats and polls counted, so the
# heartbeats' share can be taken off with tests/bench/heartbeat-instructions.sh's figure. A count
# of instructions does not depend on what else the machine does. Needs valgrind, curl, python3.
set -euo pipefail
AGENTS=${AGENTS:-1000}
WORK=$(mktemp -d /tmp/hybridsync-poll-instructions.XXXXXX); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
for BIN in "$@"; do
  rm -rf "$WORK/data" "$WORK"/callgrind.*; DATA="$WORK/data"; P=$(port); URL=http://127.0.0.1:$P
  echo 'bench password long enough' | $BIN admin create-user --data-dir "$DATA" --username bench --role global-administrator --password-stdin >/dev/null
  TOKEN=$($BIN admin create-enrollment-token --data-dir "$DATA" --max-uses "$AGENTS")
  API=$($BIN admin create-api-token --data-dir "$DATA" --username bench)
  RUST_LOG=warn,hybridsync::fleet::poll=debug valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.%p" \
    "$BIN" serve --listen 127.0.0.1:$P --data-dir "$DATA" --poll-interval 3s --poll-keepalive $AGENTS --poll-timeout 30s >"$WORK/console.log" 2>&1 & C=$!; PIDS+=($C)
  metrics() { curl -sf -H "authorization: Bearer $API" "$URL/metrics"; }
  for _ in $(seq 1200); do metrics >/dev/null && break; sleep 0.1; done
  $BIN simulate --console "$URL" --enrollment-token "$TOKEN" --agents "$AGENTS" --heartbeat-interval 10s --report-every 60s >"$WORK/sim.log" 2>&1 & S=$!; PIDS+=($S)
  polls() { metrics | grep -F 'hybridsync_polls_total{result="ok"}' | awk '{print $2}'; }
  rounds() { grep -c "agents=$AGENTS" "$WORK/console.log" || true; }
  # Counted from the end of the second full round (every connection open by then) to the end of the
  # fifth: whole rounds only.
  for _ in $(seq 1200); do [ "$(rounds)" -ge 2 ] && break; sleep 0.1; done
  hb0=$(metrics | awk '/^hybridsync_heartbeats_received_total/ {print $2}'); before=$(polls)
  callgrind_control -i on $C >/dev/null
  for _ in $(seq 3000); do [ "$(rounds)" -ge 5 ] && break; sleep 0.1; done
  callgrind_control -i off $C >/dev/null
  after=$(polls); hb1=$(metrics | awk '/^hybridsync_heartbeats_received_total/ {print $2}')
  callgrind_control -d $C >/dev/null; sleep 1
  ins=$(callgrind_annotate "$WORK/callgrind.$C.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}' | head -1)
  polled=$((after - before))
  [ "$polled" -gt 0 ] || { echo "$(basename "$BIN"): no poll in the counted window (see $WORK/console.log)" >&2; exit 1; }
  echo "$(basename "$BIN"): heartbeats=$((hb1 - hb0)) polls=$polled instructions=$ins per poll (heartbeats included)=$((ins / polled))"
  kill -TERM $S $C; wait $S $C 2>/dev/null || true
done
