#!/usr/bin/env bash
# A/B of heartbeat ingestion between console binaries, for BENCHMARKS.md:
#   bash tests/bench/heartbeat-ab.sh ROUNDS AGENTS BIN_A BIN_B [...]
# Each binary gets its own fleet of AGENTS agents (its own schema), enrolled once and stopped
# cleanly. Then ROUNDS rounds; in each, every binary in turn serves a fresh copy of its fleet:
# 20 s of wrk to warm up (the first heartbeat after a restart changes each agent's row), then 20 s
# measured. Prints per run: heartbeats/s, p99, the console's CPU and its SQLite writer thread's CPU
# (ticks of 10 ms, from /proc), and the group commit's time per agent written (from /metrics).
# ORDER=random makes each request a random agent's, as a real fleet's heartbeats arrive; by default
# wrk walks the agents in enrollment order.
set -euo pipefail
ROUNDS=$1; AGENTS=$2; shift 2
WORK=$(mktemp -d /tmp/hybridsync-ab.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 600); do curl -sf "$1" >/dev/null && return 0; sleep 0.05; done; echo "no answer from $1" >&2; return 1; }
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
sqlite_ticks() { local t=0 f; for f in /proc/"$1"/task/*; do grep -q sqlx-sqlite "$f/comm" && t=$((t + $(awk '{print $14+$15}' "$f/stat"))); done; echo $t; }
LUA=tests/bench/heartbeat.lua
if [ "${ORDER:-}" = random ]; then
  sed 's/  i = i % #creds + 1/  i = math.random(#creds)/' "$LUA" > "$WORK/heartbeat.lua"; LUA="$WORK/heartbeat.lua"
  grep -q 'math.random(#creds)$' "$LUA" || { echo "heartbeat.lua changed: cannot make the random order" >&2; exit 1; }
fi
export INTERVAL_SECONDS=30

n=0
for BIN in "$@"; do
  n=$((n + 1)); DATA="$WORK/fleet-$n"; P=$(port)
  echo 'bench password long enough' | $BIN admin create-user --data-dir "$DATA" --username bench --role global-administrator --password-stdin >/dev/null
  TOKEN=$($BIN admin create-enrollment-token --data-dir "$DATA" --max-uses "$AGENTS")
  $BIN admin create-api-token --data-dir "$DATA" --username bench > "$WORK/api-$n"
  RUST_LOG=warn $BIN serve --listen 127.0.0.1:$P --data-dir "$DATA" --poll-interval 1h >"$WORK/enroll-$n.log" 2>&1 & C=$!; PIDS+=($C)
  wait_http "http://127.0.0.1:$P/healthz"
  $BIN simulate --console "http://127.0.0.1:$P" --enrollment-token "$TOKEN" --agents "$AGENTS" --enroll-only \
    --credentials-out "$WORK/creds-$n" | grep '^enrolled' | sed "s|^|$(basename "$BIN"): |"
  kill -TERM $C; wait $C 2>/dev/null || true
done

for _ in $(seq "$ROUNDS"); do
  n=0
  for BIN in "$@"; do
    n=$((n + 1)); rm -rf "$WORK/run"; cp -r "$WORK/fleet-$n" "$WORK/run"; P=$(port); URL=http://127.0.0.1:$P
    RUST_LOG=warn $BIN serve --listen 127.0.0.1:$P --data-dir "$WORK/run" --poll-interval 1h >"$WORK/run.log" 2>&1 & C=$!; PIDS+=($C)
    wait_http "$URL/healthz"
    CREDS="$WORK/creds-$n" wrk -t2 -c64 -d20s -s "$LUA" "$URL" >/dev/null
    a0=$(ticks $C); s0=$(sqlite_ticks $C)
    CREDS="$WORK/creds-$n" wrk -t2 -c64 -d20s --latency -s "$LUA" "$URL" > "$WORK/wrk.txt"
    a1=$(ticks $C); s1=$(sqlite_ticks $C)
    rate=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt"); p99=$(awk '/^ +99%/ {print $2}' "$WORK/wrk.txt")
    metrics=$(curl -sf -H "authorization: Bearer $(cat "$WORK/api-$n")" "$URL/metrics")
    flush=$(echo "$metrics" | awk '/^hybridsync_state_flush_duration_seconds_sum/ {s=$2} /^hybridsync_state_flushed_agents_total/ {a=$2} END {printf "%.1f", s*1e6/a}')
    echo "$(basename "$BIN"): rate=$rate/s p99=$p99 console=$((a1 - a0)) sqlite=$((s1 - s0)) ticks, cpu/heartbeat=$(python3 -c "print(round(($a1-$a0)*1e4/($rate*20),1))") us, group commit=$flush us/agent"
    kill -TERM $C; wait $C 2>/dev/null || true
  done
done
