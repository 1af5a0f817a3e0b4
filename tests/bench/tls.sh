#!/usr/bin/env bash
# Agents reconnecting to an HTTPS console (BENCHMARKS.md, "TLS reconnects"). Run from the
# repository root after `cargo build --release`:
#   bash tests/bench/tls.sh [CLIENTS] [ROUNDS]
# Serves the console with a throw-away P-256 certificate, then CLIENTS clients, each keeping its
# own TLS session as an agent does, connect in turn ROUNDS times after a first round of full
# handshakes. Needs python3 and openssl.
set -euo pipefail
BIN=${BIN:-target/release/hybridsync}
CLIENTS=${1:-1000}; ROUNDS=${2:-3}
WORK=$(mktemp -d /tmp/hybridsync-tls.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/key.pem" \
  -out "$WORK/cert.pem" -days 1 -subj /CN=localhost 2>/dev/null
PORT=$(port)
$BIN serve --listen 127.0.0.1:$PORT --data-dir "$WORK/data" --poll-interval 1h \
  --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem" >"$WORK/console.log" 2>&1 & CONSOLE=$!; PIDS+=($CONSOLE)
for _ in $(seq 100); do curl -skf "https://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
python3 tests/bench/tls_resumption.py 127.0.0.1 "$PORT" "$CLIENTS" "$ROUNDS" "$CONSOLE"
