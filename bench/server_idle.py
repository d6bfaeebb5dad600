"""Server footprint: 2,000 idle keep-alive connections against pagoda serve (RSS, threads, latency of
a request meanwhile). Usage: PAGODA_TEST_MODEL=DIR python3 bench/server_idle.py (from the repo root)."""
import socket, sys, time, threading, json, http.client, os
sys.path.insert(0, "tests/py")
from server_util import Server
import resource
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
s = Server()
def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
def nthreads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))
try:
    r0, t0 = rss(s.proc.pid), nthreads(s.proc.pid)
    socks = []
    for i in range(2000):
        c = socket.create_connection(("127.0.0.1", s.port))
        c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        socks.append(c)
    for c in socks: c.recv(256)
    time.sleep(0.5)
    r1, t1 = rss(s.proc.pid), nthreads(s.proc.pid)
    t = time.time()
    st, _, _ = s.request("POST", "/v1/completions", {"prompt": "a", "max_tokens": 4, "temperature": 0})
    lat = time.time() - t
    print(f"idle keep-alive connections: 2000; server RSS {r0} kB -> {r1} kB (+{(r1-r0)/2000:.1f} kB/conn); threads {t0} -> {t1}; a request meanwhile: {st} in {lat*1000:.0f} ms")
    for c in socks: c.close()
finally:
    s.stop()
