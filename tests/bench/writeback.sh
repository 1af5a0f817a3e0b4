#!/usr/bin/env bash
# Writeback benchmark for BENCHMARKS.md: reset-to-directory latency (the API answers only after the
# directory confirmed the change), p50 and p99 over RESETS resets of one user, against the OpenLDAP
# testbed and the Samba AD testbed. Run from the repository root after `cargo build --release`:
#   bash tests/bench/writeback.sh [RESETS] [openldap|samba|both]
set -euo pipefail
BIN=${BIN:-target/release/hybridsync}
RESETS=${1:-200}
WHICH=${2:-both}
WORK=$(mktemp -d /tmp/hybridsync-wbbench.XXXXXX)
PIDS=()
STOPS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for s in "${STOPS[@]}"; do eval "$s" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"

# console + agent + configuration for DOMAIN; sets URL, API, ID
setup() { # $1 name $2 domain $3 ldap url $4 ca $5 admin $6 admin password $7 scope json
  local name=$1 domain=$2
  DATA="$WORK/$name-console"; CPORT=$(port); URL=http://127.0.0.1:$CPORT
  echo 'bench password long enough' | $BIN admin create-user --data-dir "$DATA" --username bench --role global-administrator --password-stdin >/dev/null
  local token; token=$($BIN admin create-enrollment-token --data-dir "$DATA" --max-uses 1)
  API=$($BIN admin create-api-token --data-dir "$DATA" --username bench)
  RUST_LOG=warn $BIN serve --listen 127.0.0.1:$CPORT --data-dir "$DATA" >"$WORK/$name-console.log" 2>&1 & PIDS+=($!)
  for _ in $(seq 300); do curl -sf "$URL/healthz" >/dev/null && break; sleep 0.05; done
  $BIN agent install --console "$URL" --enrollment-token "$token" --data-dir "$WORK/$name-agent" --machine-name "$name-agent" >/dev/null
  echo "$6" | $BIN agent add-directory --data-dir "$WORK/$name-agent" --domain "$domain" --ldap-url "$3" \
    --ca-cert "$4" --admin "$5" --admin-password-file - --service-account create >/dev/null
  RUST_LOG=warn $BIN agent run --data-dir "$WORK/$name-agent" --heartbeat-interval 1s >"$WORK/$name-agent.log" 2>&1 & PIDS+=($!)
  ID=""
  for _ in $(seq 100); do
    ID=$(api -X POST "$URL/api/v1/configurations" -d "{\"domain\":\"$domain\"}" 2>/dev/null | json id) && [ -n "$ID" ] && break
    sleep 0.2
  done
  [ -n "$ID" ] || { echo "no configuration for $domain" >&2; exit 1; }
  api -X PATCH "$URL/api/v1/configurations/$ID" -d "{\"scope\": $7}" >/dev/null
  api -X POST "$URL/api/v1/configurations/$ID/enable" >/dev/null
  for _ in $(seq 300); do
    [ "$(api "$URL/api/v1/configurations/$ID" | json last_cycle.state)" = succeeded ] && break; sleep 0.1
  done
  api -X PUT "$URL/api/v1/password-reset/on-premises-integration" \
    -d '{"enable_writeback":true,"use_cloud_sync":true,"allow_unlock_without_reset":true}' >/dev/null
}
api() { curl -sf -H "authorization: Bearer $API" -H 'content-type: application/json' "$@"; }
json() { python3 -c 'import sys,json
v=json.load(sys.stdin)
for k in sys.argv[1].split("."): v=(v or {}).get(k)
print(v if v is not None else "")' "$1"; }

measure() { # $1 label $2 user id
  local times="$WORK/times" i code
  : >"$times"
  for i in $(seq "$RESETS"); do
    code=$(curl -s -o "$WORK/out" -w '%{http_code} %{time_total}\n' -H "authorization: Bearer $API" \
      -H 'content-type: application/json' -X POST "$URL/api/v1/users/$2/reset-password" \
      -d "{\"new_password\":\"Bench-Passw0rd-$i!x\"}")
    [ "${code%% *}" = 200 ] || { echo "reset $i failed: $code $(cat "$WORK/out")" >&2; exit 1; }
    echo "${code#* }" >>"$times"
  done
  sort -n "$times" | awk -v label="$1" '{a[NR]=$1} END {
    p50=a[int(NR*0.50)>0?int(NR*0.50):1]; p99=a[int(NR*0.99)>0?int(NR*0.99):1];
    printf "%s: %d resets p50=%.1f ms p99=%.1f ms max=%.1f ms\n", label, NR, p50*1000, p99*1000, a[NR]*1000 }'
}

if [ "$WHICH" = openldap ] || [ "$WHICH" = both ]; then
  SDIR=$(SLAPD_ADMIN_PW=bench-admin bash tests/testbeds/slapd.sh start "$(port)" "$(port)" 2>/dev/null | tail -1)
  STOPS+=("bash tests/testbeds/slapd.sh stop '$SDIR'")
  # shellcheck disable=SC1091
  . "$SDIR/env"
  setup ldap example.test "$LDAPS_URI" "$LDAP_CA_CERT" "$LDAP_ADMIN_DN" "$LDAP_ADMIN_PASSWORD" '{"mode":"all_users"}'
  USER=$(api "$URL/api/v1/users?q=alice@example.test" | json items | python3 -c 'import sys,ast; print(ast.literal_eval(sys.stdin.read())[0]["id"])')
  measure "OpenLDAP (Password Modify extended operation over LDAPS)" "$USER"
fi

if [ "$WHICH" = samba ] || [ "$WHICH" = both ]; then
  IP=$(python3 -c '
import socket
for n in range(2,255):
    ip=f"127.0.0.{n}"; ok=True
    for p in (389,636,3268,3269):
        s=socket.socket()
        try: s.bind((ip,p))
        except OSError: ok=False
        finally: s.close()
    if ok: print(ip); break')
  ADIR=$(AD_IP=$IP bash tests/testbeds/samba-ad.sh start 2>/dev/null | tail -1)
  STOPS+=("bash tests/testbeds/samba-ad.sh stop '$ADIR'")
  # shellcheck disable=SC1091
  . "$ADIR/env"
  setup ad corp.example.test "$AD_LDAPS_URI" "$AD_CA_CERT" "$AD_ADMIN_UPN" "$AD_ADMIN_PASSWORD" \
    "{\"mode\":\"ous\",\"entries\":[{\"dn\":\"OU=Staff,$AD_BASE_DN\"}]}"
  USER=$(api "$URL/api/v1/users?q=alice@corp.example.test" | json items | python3 -c 'import sys,ast; print(ast.literal_eval(sys.stdin.read())[0]["id"])')
  measure "Samba AD (unicodePwd replace over LDAPS)" "$USER"
fi
