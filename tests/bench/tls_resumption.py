"""Agents reconnecting over TLS: CLIENTS clients, each with its own session, connect to the console
ROUNDS times in turn (GET /healthz with `Connection: close`, as an agent's heartbeat closes its
connection). Prints per round how many connections resumed their TLS session, the time taken, and
the CPU time of the console process PID per connection. Used by tests/bench/tls.sh."""
import os
import socket
import ssl
import sys
import time

host, port, clients, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
pid = sys.argv[5]
tick = os.sysconf("SC_CLK_TCK")


def cpu_seconds():
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick

context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
sessions = [None] * clients
for r in range(rounds + 1):
    started, resumed, cpu = time.time(), 0, cpu_seconds()
    for i in range(clients):
        with socket.create_connection((host, port)) as tcp:
            with context.wrap_socket(tcp, server_hostname="console", session=sessions[i]) as tls:
                tls.sendall(request)
                answer = b""
                while chunk := tls.recv(4096):
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 200"), answer[:40]
                resumed += tls.session_reused
                sessions[i] = tls.session
    label = "first (full handshakes)" if r == 0 else f"round {r}"
    per_connection = (cpu_seconds() - cpu) / clients * 1e6
    print(f"{label}: {clients} connections, {resumed} resumed, {time.time() - started:.2f}s, "
          f"console CPU {per_connection:.0f} us per connection", flush=True)
