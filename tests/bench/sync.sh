#!/usr/bin/env bash
# Sync benchmark for BENCHMARKS.md: the first full sync of an OpenLDAP directory of N users (seeded
# offline with slapadd), then a delta cycle after CHANGED users were modified. Run from the
# repository root after `cargo build --release`:
#   bash tests/bench/sync.sh [N] [CHANGED]
# Console, agent and slapd run on loopback on this machine. Prints one line per figure.
set -euo pipefail
BIN=${BIN:-target/release/hybridsync}
N=${1:-150000}
CHANGED=${2:-100}
WORK=$(mktemp -d /tmp/hybridsync-syncbench.XXXXXX)
PIDS=()
SLAPD_DIR_RUN=""
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$SLAPD_DIR_RUN" ] && bash tests/testbeds/slapd.sh stop "$SLAPD_DIR_RUN" 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
hwm_mib() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
now_ms() { date +%s%3N; }
SUFFIX=dc=example,dc=test

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
echo "users=$N changed=$CHANGED"

# --- directory: N inetOrgPerson users under ou=people, loaded offline ------------------------------
python3 - "$N" "$SUFFIX" >"$WORK/bulk.ldif" <<'PY'
import sys
n, suffix = int(sys.argv[1]), sys.argv[2]
w = sys.stdout.write
w(f"dn: {suffix}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\no: example\ndc: example\n\n")
w(f"dn: ou=people,{suffix}\nobjectClass: organizationalUnit\nou: people\n\n")
for i in range(n):
    w(f"dn: uid=user{i:06d},ou=people,{suffix}\nobjectClass: inetOrgPerson\nuid: user{i:06d}\n"
      f"cn: User {i:06d}\nsn: {i:06d}\ngivenName: User\ndisplayName: User {i:06d}\n"
      f"mail: user{i:06d}@example.test\ntitle: Engineer\ndepartmentNumber: {i % 50}\n"
      f"telephoneNumber: +1 555 {i % 10000:04d}\n\n")
PY
t0=$(now_ms)
SLAPD_DIR_RUN=$(SLAPD_BULK_LDIF="$WORK/bulk.ldif" SLAPD_ADMIN_PW=bench-admin \
  bash tests/testbeds/slapd.sh start "$(port)" "$(port)" 2>/dev/null | tail -1)
# shellcheck disable=SC1091
. "$SLAPD_DIR_RUN/env"
echo "slapadd + start of $N users: $(( $(now_ms) - t0 )) ms"

# --- console and agent -----------------------------------------------------------------------------
DATA="$WORK/console"; CPORT=$(port); URL=http://127.0.0.1:$CPORT
echo 'bench password long enough' | $BIN admin create-user --data-dir "$DATA" --username bench --role global-administrator --password-stdin >/dev/null
TOKEN=$($BIN admin create-enrollment-token --data-dir "$DATA" --max-uses 1)
API=$($BIN admin create-api-token --data-dir "$DATA" --username bench)
RUST_LOG=${BENCH_LOG:-warn} $BIN serve --listen 127.0.0.1:$CPORT --data-dir "$DATA" >"$WORK/console.log" 2>&1 & CONSOLE=$!; PIDS+=($CONSOLE)
for _ in $(seq 300); do curl -sf "$URL/healthz" >/dev/null && break; sleep 0.05; done
AGENT_DIR="$WORK/agent"
$BIN agent install --console "$URL" --enrollment-token "$TOKEN" --data-dir "$AGENT_DIR" --machine-name bench-agent >/dev/null
echo "$LDAP_ADMIN_PASSWORD" | $BIN agent add-directory --data-dir "$AGENT_DIR" --domain example.test \
  --ldap-url "$LDAPS_URI" --ca-cert "$LDAP_CA_CERT" --admin "$LDAP_ADMIN_DN" --admin-password-file - \
  --service-account create >/dev/null
RUST_LOG=${BENCH_LOG:-warn} $BIN agent run --data-dir "$AGENT_DIR" --heartbeat-interval 1s >"$WORK/agent.log" 2>&1 & AGENT=$!; PIDS+=($AGENT)

api() { curl -sf -H "authorization: Bearer $API" -H 'content-type: application/json' "$@"; }
ID=""
for _ in $(seq 100); do
  ID=$(api -X POST "$URL/api/v1/configurations" -d '{"domain":"example.test"}' 2>/dev/null \
    | python3 -c 'import sys,json; print(json.load(sys.stdin)["id"])' 2>/dev/null) && [ -n "$ID" ] && break
  sleep 0.2
done
[ -n "$ID" ] || { echo "the agent never reported example.test" >&2; exit 1; }
# The threshold would (rightly) stop nothing here; a long interval keeps cycles to the ones asked for.
api -X PATCH "$URL/api/v1/configurations/$ID" -d '{"interval_seconds": 86400}' >/dev/null

# Starts a cycle with OP and waits for it to end, in one process polling every 10 ms, so the wall
# time is the console's and the agent's, not the cost of starting curl and python per poll. Prints
# wall_ms state duration_ms imported created updated kind deleted.
run_op() {
  python3 - "$URL/api/v1/configurations/$ID" "$1" "$API" <<'PY'
import json, sys, time, urllib.request
base, op, token = sys.argv[1:4]
def call(url, method="GET"):
    req = urllib.request.Request(url, method=method, headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)
before = (call(base).get("last_cycle") or {}).get("id")
t0 = time.monotonic()
call(f"{base}/{op}", "POST")
while True:
    c = call(base).get("last_cycle") or {}
    if c.get("id") and c["id"] != before and c.get("state") != "running":
        break
    time.sleep(0.01)
wall = round((time.monotonic() - t0) * 1000)
if c.get("error"):
    print("cycle error:", c["error"], file=sys.stderr)
print(wall, *(c.get(k, "") for k in ("state", "duration_ms", "imported", "created", "updated", "kind", "deleted")))
PY
}

# --- first full sync ---------------------------------------------------------------------------------
read -r wall state dur imported created updated kind deleted <<<"$(run_op enable)"
echo "first sync ($kind, $state): wall=${wall} ms cycle=${dur} ms imported=$imported created=$created rate=$(( imported * 1000 / (dur > 0 ? dur : 1) )) objects/s"
echo "memory after first sync: console peak=$(hwm_mib $CONSOLE) MiB agent peak=$(hwm_mib $AGENT) MiB"

# --- delta: CHANGED users modified --------------------------------------------------------------------
python3 - "$CHANGED" "$SUFFIX" "$N" >"$WORK/changes.ldif" <<'PY'
import sys
n, suffix, total = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(n):
    print(f"dn: uid=user{i * 997 % total:06d},ou=people,{suffix}\nchangetype: modify\nreplace: title\ntitle: Principal Engineer\n")
PY
ldapmodify -x -H "$LDAP_URI" -D "$LDAP_ADMIN_DN" -w "$LDAP_ADMIN_PASSWORD" -f "$WORK/changes.ldif" >/dev/null
read -r wall state dur imported created updated kind deleted <<<"$(run_op sync-now)"
echo "delta cycle ($kind, $state) after $CHANGED changes: wall=${wall} ms cycle=${dur} ms imported=$imported updated=$updated"

# --- delta: CHANGED more changes, a tenth of them deletions --------------------------------------------
python3 - "$CHANGED" "$SUFFIX" "$N" >"$WORK/changes2.ldif" <<'PY'
import sys
n, suffix, total = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(n):
    dn = f"uid=user{(i * 991 + 7) % total:06d},ou=people,{suffix}"
    if i % 10 == 0:
        print(f"dn: {dn}\nchangetype: delete\n")
    else:
        print(f"dn: {dn}\nchangetype: modify\nreplace: title\ntitle: Staff Engineer\n")
PY
ldapmodify -x -H "$LDAP_URI" -D "$LDAP_ADMIN_DN" -w "$LDAP_ADMIN_PASSWORD" -f "$WORK/changes2.ldif" >/dev/null
read -r wall state dur imported created updated kind deleted <<<"$(run_op sync-now)"
echo "delta cycle ($kind, $state) after $CHANGED changes incl. deletions: wall=${wall} ms cycle=${dur} ms imported=$imported updated=$updated deleted=$deleted"
echo "memory after the delta: console peak=$(hwm_mib $CONSOLE) MiB agent peak=$(hwm_mib $AGENT) MiB"
