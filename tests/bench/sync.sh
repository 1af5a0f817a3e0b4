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
  rm -rf "$WORK"
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
RUST_LOG=warn $BIN serve --listen 127.0.0.1:$CPORT --data-dir "$DATA" >"$WORK/console.log" 2>&1 & CONSOLE=$!; PIDS+=($CONSOLE)
for _ in $(seq 300); do curl -sf "$URL/healthz" >/dev/null && break; sleep 0.05; done
AGENT_DIR="$WORK/agent"
$BIN agent install --console "$URL" --enrollment-token "$TOKEN" --data-dir "$AGENT_DIR" --machine-name bench-agent >/dev/null
echo "$LDAP_ADMIN_PASSWORD" | $BIN agent add-directory --data-dir "$AGENT_DIR" --domain example.test \
  --ldap-url "$LDAPS_URI" --ca-cert "$LDAP_CA_CERT" --admin "$LDAP_ADMIN_DN" --admin-password-file - \
  --service-account create >/dev/null
RUST_LOG=warn $BIN agent run --data-dir "$AGENT_DIR" --heartbeat-interval 1s >"$WORK/agent.log" 2>&1 & AGENT=$!; PIDS+=($AGENT)

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

last_cycle() { api "$URL/api/v1/configurations/$ID" | python3 -c '
import sys,json; c=json.load(sys.stdin)["last_cycle"] or {}
print(c.get("id",""), c.get("state",""), c.get("duration_ms",""), c.get("imported",""), c.get("created",""), c.get("updated",""), c.get("kind",""))
if c.get("error"): print("cycle error:", c["error"], file=sys.stderr)'; }
wait_cycle() { # $1 = previous cycle id; prints the new cycle's fields
  local line
  while true; do
    line=$(last_cycle)
    set -- "$1" $line
    if [ -n "${2:-}" ] && [ "$2" != "$1" ] && [ "${3:-}" != running ]; then echo "${*:2}"; return; fi
    sleep 0.1
  done
}

# --- first full sync ---------------------------------------------------------------------------------
before=$(last_cycle | cut -d' ' -f1)
t0=$(now_ms)
api -X POST "$URL/api/v1/configurations/$ID/enable" >/dev/null
read -r cid state dur imported created updated kind <<<"$(wait_cycle "$before")"
wall=$(( $(now_ms) - t0 ))
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
t0=$(now_ms)
api -X POST "$URL/api/v1/configurations/$ID/sync-now" >/dev/null
read -r cid state dur imported created updated kind <<<"$(wait_cycle "$cid")"
wall=$(( $(now_ms) - t0 ))
echo "delta cycle ($kind, $state) after $CHANGED changes: wall=${wall} ms cycle=${dur} ms imported=$imported updated=$updated"
echo "memory after the delta: console peak=$(hwm_mib $CONSOLE) MiB agent peak=$(hwm_mib $AGENT) MiB"
