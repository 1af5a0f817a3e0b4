"""Opens N connections to HOST:PORT the way a client that keeps its connection does: one request
(GET /healthz) on each, then nothing. Prints how many were answered, then, after HOLD seconds, how
many the server has closed. Used by tests/bench/connections.sh."""
import socket
import sys
import time

host, port, n, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
socks, answered, unanswered, refused = [], 0, 0, 0
started = time.time()
for _ in range(n):
    try:
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(request)
        if s.recv(4096).startswith(b"HTTP/1.1 200"):
            answered += 1
        else:
            unanswered += 1
        socks.append(s)
    except socket.timeout:
        unanswered += 1
        socks.append(s)
    except OSError:
        refused += 1
print(f"opened={len(socks)} answered={answered} unanswered={unanswered} refused={refused} "
      f"in {time.time() - started:.1f}s", flush=True)
time.sleep(hold)
closed = 0
for s in socks:
    s.setblocking(False)
    try:
        if s.recv(1) == b"":
            closed += 1
    except BlockingIOError:
        pass
    except OSError:
        closed += 1
print(f"closed by the server after {hold:.0f}s: {closed} of {len(socks)}", flush=True)
