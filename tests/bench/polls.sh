#!/usr/bin/env bash
# Health-poll benchmark for BENCHMARKS.md: the console polls AGENTS simulated agents; the first round
# opens new connections, later rounds reuse the connections of the first KEEPALIVE agents (default:
# all) and open new ones for the rest. Prints each round's time, the console's resident memory
# after the last, and the CPU time per poll of the console and of the simulator (the agents' side)
# over the rounds after the first. Run from the repository root after `cargo build --release`:
#   bash tests/bench/polls.sh [AGENTS] [ROUNDS] [KEEPALIVE]
# The agents heartbeat every 30 s (the default) unless HEARTBEAT=5s or the like says otherwise.
# Rounds run every 8 s, or 3 times their length after the previous one ends when that is later
# (polls take at most a quarter of the console's time).
set -euo pipefail
BIN=${BIN:-target/release/hybridsync}
AGENTS=${1:-10000}
ROUNDS=${2:-4}
KEEPALIVE=${3:-$AGENTS}
WORK=$(mktemp -d /tmp/hybridsync-polls.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

DATA="$WORK/console"; CPORT=$(port); URL=http://127.0.0.1:$CPORT
TOKEN=$($BIN admin create-enrollment-token --data-dir "$DATA" --max-uses "$AGENTS")
RUST_LOG=warn,hybridsync::fleet::poll=debug $BIN serve --listen 127.0.0.1:$CPORT --data-dir "$DATA" \
  --poll-interval 8s --poll-concurrency 256 --poll-keepalive "$KEEPALIVE" >"$WORK/console.log" 2>&1 & PIDS+=($!)
CONSOLE=$!
for _ in $(seq 100); do curl -sf "$URL/healthz" >/dev/null && break; sleep 0.05; done
$BIN simulate --console "$URL" --enrollment-token "$TOKEN" --agents "$AGENTS" --heartbeat-interval "${HEARTBEAT:-30s}" \
  --report-every 60s >"$WORK/sim.log" 2>&1 & PIDS+=($!)
SIM=$!
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# Wait for ROUNDS full rounds over every agent. CPU is counted from the end of the first full round
# to the end of the last (rounds start at least 8 s apart, so a sample every 0.5 s misses none).
c0=; s0=
for _ in $(seq 600); do
  done_rounds=$(grep -c "agents=$AGENTS" "$WORK/console.log" || true)
  if [ -z "$c0" ] && [ "$done_rounds" -ge 1 ]; then c0=$(ticks $CONSOLE); s0=$(ticks $SIM); fi
  [ "$done_rounds" -ge "$ROUNDS" ] && break
  sleep 0.5
done
c1=$(ticks $CONSOLE); s1=$(ticks $SIM)
echo "poll rounds over $AGENTS agents, $KEEPALIVE kept between rounds (the first round on new connections):"
grep "agents=$AGENTS" "$WORK/console.log" | sed -n 's/.*agents=\([0-9]*\) elapsed_ms=\([0-9]*\).*/  \1 agents in \2 ms/p'
echo "console resident memory after the last round: $(( $(awk '/VmRSS/ {print $2}' /proc/$CONSOLE/status) / 1024 )) MiB"
if [ "$ROUNDS" -gt 1 ] && [ -n "$c0" ]; then
  polls=$(( (ROUNDS - 1) * AGENTS ))  # ticks are 10 ms; the agents' heartbeats are counted in too
  echo "CPU per poll after the first round: console $(( (c1 - c0) * 10000 / polls )) us, simulator $(( (s1 - s0) * 10000 / polls )) us"
fi
# A round longer than a quarter of --poll-interval (8 s here) holds the next one back; say so.
grep -o "a health poll round took.*" "$WORK/console.log" | head -1 | sed 's/^/console: /' || true
