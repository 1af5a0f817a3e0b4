#!/usr/bin/env bash
# Fleet benchmarks for BENCHMARKS.md. Run from the repository root after `cargo build --release`:
#   bash tests/bench/fleet.sh [AGENTS] [SECONDS]
# Everything runs on loopback on this machine: the console, the fleet simulator (load generator) and
# the baseline (a minimal axum JSON handler, `hybridsync bench-baseline`). Prints one line per figure.
set -euo pipefail
BIN=${BIN:-target/release/hybridsync}
AGENTS=${1:-100000}
SECONDS_RUN=${2:-60}
INTERVAL=${INTERVAL:-2s}
WORK=$(mktemp -d /tmp/hybridsync-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
hwm_mib() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
wait_http() { for _ in $(seq 300); do curl -sf "$1" >/dev/null && return 0; sleep 0.05; done; echo "no answer from $1" >&2; return 1; }

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "agents=$AGENTS heartbeat-interval=$INTERVAL run=${SECONDS_RUN}s"

WRK_THREADS=${WRK_THREADS:-2}; WRK_CONNECTIONS=${WRK_CONNECTIONS:-64}
LUA=tests/bench/heartbeat.lua
# Agents declare the default 30 s interval, so the fleet stays healthy while wrk cycles through it.
export INTERVAL_SECONDS=${INTERVAL_SECONDS:-30}
wrk_summary() { # requests/s and latency percentiles from wrk --latency output
  awk '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx/ {bad=$NF} /requests in/ {n=$1}
       END {printf "requests=%s rate=%s/s p50=%s p99=%s non-2xx=%s\n", n, rps, p50, p99, (bad==""?0:bad)}' "$1"
}

# --- baseline: minimal axum JSON handler, same load generator, same request bodies -----------------
BPORT=$(port)
$BIN bench-baseline --listen 127.0.0.1:$BPORT >"$WORK/baseline.log" 2>&1 & BASE=$!; PIDS+=($BASE)
wait_http_post() { for _ in $(seq 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done; }
wait_http_post "http://127.0.0.1:$BPORT/"
$BIN simulate --console http://127.0.0.1:$BPORT --no-enroll --enroll-only --agents "$AGENTS" \
  --credentials-out "$WORK/fake-creds" >/dev/null
CREDS="$WORK/fake-creds" wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${SECONDS_RUN}s" --latency -s "$LUA" \
  "http://127.0.0.1:$BPORT" >"$WORK/wrk-baseline.txt"
echo "baseline (wrk -t$WRK_THREADS -c$WRK_CONNECTIONS, ${SECONDS_RUN}s): $(wrk_summary "$WORK/wrk-baseline.txt")"
kill "$BASE"

# --- console: enroll the fleet, then sustained heartbeats from wrk --------------------------------
DATA="$WORK/console"; CPORT=$(port); URL=http://127.0.0.1:$CPORT
echo 'bench password long enough' | $BIN admin create-user --data-dir "$DATA" --username bench --role global-administrator --password-stdin >/dev/null
TOKEN=$($BIN admin create-enrollment-token --data-dir "$DATA" --max-uses "$AGENTS")
API=$($BIN admin create-api-token --data-dir "$DATA" --username bench)
RUST_LOG=warn $BIN serve --listen 127.0.0.1:$CPORT --data-dir "$DATA" --poll-interval 1h >"$WORK/console.log" 2>&1 & CONSOLE=$!; PIDS+=($CONSOLE)
wait_http "$URL/healthz"
$BIN simulate --console "$URL" --enrollment-token "$TOKEN" --agents "$AGENTS" --enroll-only \
  --credentials-out "$WORK/creds" | grep '^enrolled'
echo "console memory after enrollment: rss=$(rss_mib $CONSOLE) MiB"
CREDS="$WORK/creds" wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${SECONDS_RUN}s" --latency -s "$LUA" \
  "$URL" >"$WORK/wrk-console.txt"
echo "console heartbeats (wrk -t$WRK_THREADS -c$WRK_CONNECTIONS, ${SECONDS_RUN}s): $(wrk_summary "$WORK/wrk-console.txt")"
echo "console memory at $AGENTS agents: rss=$(rss_mib $CONSOLE) MiB peak=$(hwm_mib $CONSOLE) MiB"
curl -sf -H "authorization: Bearer $API" "$URL/metrics" \
  | grep -E '^hybridsync_(heartbeats_received_total|state_flush_duration_seconds_(sum|count|bucket\{le="(0.1|0.25|0.5|1)"\})|state_flushed_agents_total)' | sed 's/^/  /'

# --- pages and API at this fleet size: server time per request -----------------------------------
JAR="$WORK/jar"
CSRF=$(curl -sf -c "$JAR" "$URL/login" | sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' | head -1)
curl -sf -b "$JAR" -c "$JAR" -o /dev/null -d "username=bench&password=bench+password+long+enough&csrf=$CSRF&next=/" "$URL/login"
for page in / /agents "/agents?status=all&sort=health" /agents/table "/api/v1/agents?limit=50"; do
  for _ in $(seq 300); do
    curl -s -o /dev/null -b "$JAR" -H "authorization: Bearer $API" -w '%{time_starttransfer}\n' "$URL$page"
  done | python3 -c "import sys;v=sorted(float(x)*1000 for x in sys.stdin);n=len(v);print(f'page $page: n={n} p50={v[n//2]:.2f}ms p99={v[int(n*0.99)-1]:.2f}ms max={v[-1]:.2f}ms')"
done

# --- restart at this fleet size: time to /healthz and to a full Agents API answer ---------------
# The clean stop writes the fleet snapshot, so the first restart reads it; the second restart runs
# after removing the snapshot file, so it reads the agent table (as after a crash).
kill -TERM "$CONSOLE"; wait "$CONSOLE" 2>/dev/null || true
restart() {
python3 - "$BIN" "$DATA" "$CPORT" "$API" "$1" <<'PY'
import subprocess, sys, time, urllib.request
binary, data, port, api, label = sys.argv[1:]
url = f"http://127.0.0.1:{port}"
start = time.monotonic()
p = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data, "--poll-interval", "1h"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
healthz = ready = None
while ready is None and time.monotonic() - start < 30:
    try:
        if healthz is None:
            urllib.request.urlopen(url + "/healthz", timeout=1); healthz = time.monotonic() - start
        req = urllib.request.Request(url + "/api/v1/agents?limit=1", headers={"authorization": "Bearer " + api})
        urllib.request.urlopen(req, timeout=1); ready = time.monotonic() - start
    except Exception:
        time.sleep(0.002)
req = urllib.request.Request(url + "/metrics", headers={"authorization": "Bearer " + api})
load = [l for l in urllib.request.urlopen(req).read().decode().splitlines() if l.startswith("hybridsync_fleet_load_seconds")]
time.sleep(2)
def status():
    try:
        return {l.split(":")[0]: int(l.split()[1]) for l in open(f"/proc/{p.pid}/status") if l.startswith(("VmRSS", "VmHWM"))}
    except (OSError, IndexError):
        return None
idle = status()
# The clean stop writes the snapshot again: its peak is read until the process is gone.
p.terminate()
stopping = idle
while p.poll() is None:
    stopping = status() or stopping
    time.sleep(0.005)
print(f"start ({label}): /healthz after {healthz*1000:.0f} ms, agents API ready after {ready*1000:.0f} ms (process spawn included); {load[0] if load else ''}; idle rss={idle['VmRSS']/1024:.1f} MiB peak={idle['VmHWM']/1024:.1f} MiB; peak when stopped={stopping['VmHWM']/1024:.1f} MiB")
PY
}
restart "clean restart"
rm -f "$DATA/fleet.snapshot"
restart "snapshot removed"

# --- restart after a downtime: heartbeats resume, or the whole fleet stays silent ---------------
# Both starts come longer after the agents' last heartbeats than --inactive-after. An agent last
# heard from before a start is judged silent only once it had --unhealthy-after to check in: with
# wrk heartbeating every agent within that time nothing changes; with no heartbeats every agent
# turns unhealthy and inactive at the same moment (100,000 rows and 200,000 events in one commit).
events() { python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from agent_event").fetchone()[0])' "$DATA/hybridsync.sqlite3"; }
THRESHOLDS=(--unhealthy-after 20s --inactive-after 25s)
LAST_BEAT=$(stat -c %Y "$WORK/wrk-console.txt")
sleep $(( LAST_BEAT + 30 - $(date +%s) > 0 ? LAST_BEAT + 30 - $(date +%s) : 0 ))
BEFORE=$(events)
$BIN serve --listen 127.0.0.1:$CPORT --data-dir "$DATA" --poll-interval 1h "${THRESHOLDS[@]}" >"$WORK/console-a.log" 2>&1 & CONSOLE=$!; PIDS+=($CONSOLE)
wait_http "$URL/healthz"
CREDS="$WORK/creds" wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d15s --latency -s "$LUA" "$URL" >"$WORK/wrk-downtime.txt"
sleep 1
echo "restart after a downtime, heartbeats resume (wrk 15s): $(wrk_summary "$WORK/wrk-downtime.txt") events recorded=$(( $(events) - BEFORE )) rss=$(rss_mib $CONSOLE) MiB peak=$(hwm_mib $CONSOLE) MiB"
kill -TERM "$CONSOLE"; wait "$CONSOLE" 2>/dev/null || true
LAST_BEAT=$(stat -c %Y "$WORK/wrk-downtime.txt")
sleep $(( LAST_BEAT + 30 - $(date +%s) > 0 ? LAST_BEAT + 30 - $(date +%s) : 0 ))
RUST_LOG=warn,hybridsync::fleet=debug $BIN serve --listen 127.0.0.1:$CPORT --data-dir "$DATA" --poll-interval 1h "${THRESHOLDS[@]}" >"$WORK/console-b.log" 2>&1 & CONSOLE=$!; PIDS+=($CONSOLE)
wait_http "$URL/healthz"
# The sweep yields between chunks of agents, so the change may span more than one commit: sum them.
flushed() { awk '/agent state flushed/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] += kv[2]; if (kv[1] == "elapsed_ms" && kv[2] > m) m = kv[2] } n++ }
  END { printf "rows=%d events=%d in %d commits, %d ms in all, longest %d ms\n", v["rows"], v["events"], n, v["elapsed_ms"], m }' "$WORK/console-b.log"; }
for _ in $(seq 120); do flushed | grep -q "^rows=$AGENTS " && break; sleep 0.5; done
echo "restart after a downtime, no heartbeats: the fleet-wide change wrote $(flushed); rss=$(rss_mib $CONSOLE) MiB peak=$(hwm_mib $CONSOLE) MiB"
kill -TERM "$CONSOLE"; wait "$CONSOLE" 2>/dev/null || true
