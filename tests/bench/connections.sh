#!/usr/bin/env bash
# Clients that keep their connections (BENCHMARKS.md, "Connections"). Run from the repository root
# after `cargo build --release`:
#   bash tests/bench/connections.sh [CLIENT_PROCESSES] [CONNECTIONS_EACH] [HOLD_SECONDS]
# Starts a console on an empty data directory, then CLIENT_PROCESSES processes each open
# CONNECTIONS_EACH connections, send one request on each and keep them. Prints the console's memory
# and open files while they are held and after HOLD_SECONDS, and whether a new client (curl
# /healthz) is still answered. Needs python3 and curl.
set -euo pipefail
BIN=${BIN:-target/release/hybridsync}
PROCS=${1:-2}; EACH=${2:-10000}; HOLD=${3:-10}
WORK=$(mktemp -d /tmp/hybridsync-conns.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
mem() { awk '/VmRSS/ {r=$2} /VmHWM/ {h=$2} END {printf "rss=%.1f MiB peak=%.1f MiB", r/1024, h/1024}' "/proc/$1/status"; }
files() { ls "/proc/$1/fd" | wc -l; }

echo "open-file limit: $(ulimit -n) (soft) / $(ulimit -Hn) (hard)"
PORT=$(port)
$BIN serve --listen 127.0.0.1:$PORT --data-dir "$WORK/data" --poll-interval 1h >"$WORK/console.log" 2>&1 & CONSOLE=$!; PIDS+=($CONSOLE)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
echo "console at rest: $(mem $CONSOLE) files=$(files $CONSOLE)"
grep -o 'max_connections=[0-9]*' "$WORK/console.log" | head -1 || true
for i in $(seq "$PROCS"); do
  python3 tests/bench/hold_connections.py 127.0.0.1 "$PORT" "$EACH" "$HOLD" >"$WORK/hold-$i.log" 2>&1 & PIDS+=($!)
done
# Sample while the clients open their connections and hold them.
end=$((SECONDS + 60)); peak_files=0
while [ $SECONDS -lt $end ] && ! grep -q "^opened" "$WORK/hold-$PROCS.log" 2>/dev/null; do
  f=$(files $CONSOLE); [ "$f" -gt "$peak_files" ] && peak_files=$f; sleep 0.2
done
sleep 1
echo "while held: $(mem $CONSOLE) files now=$(files $CONSOLE) peak=$peak_files"
cat "$WORK"/hold-*.log | grep '^opened'
if t=$(curl -sf -m 10 -o /dev/null -w '%{time_total}' "http://127.0.0.1:$PORT/healthz"); then
  echo "a new client is answered in $t s"
else
  echo "a new client is NOT answered within 10 s"
fi
sleep "$HOLD"
echo "after ${HOLD}s: $(mem $CONSOLE) files=$(files $CONSOLE)"
wait "${PIDS[@]:1}" 2>/dev/null || true
cat "$WORK"/hold-*.log | grep '^closed'
grep -c 'Too many open files' "$WORK/console.log" | sed 's/^/accept errors (too many open files): /' || true
