#!/usr/bin/env python3
# Slow TLS handshakes: open N TCP connections to an HTTPS listener and send
# no ClientHello (or, with `partial`, a bare record header); report the
# gateway's RSS before and after, whether a fresh client is still served,
# and when the gateway closes them (at limits.handshakeTimeout; they are
# admitted, and counted against maxConnections, before the handshake).
# Usage: benches/slow_handshakes.py PORT PIDFILE N [partial]
import socket, sys, time, os
port = int(sys.argv[1])
pid = int(open(sys.argv[2]).read())
sys.argv = [sys.argv[0]] + sys.argv[3:]
def rss():
    for l in open(f'/proc/{pid}/status'):
        if l.startswith('VmRSS'): return int(l.split()[1])
n = int(sys.argv[1]); partial = len(sys.argv) > 2
before = rss()
socks = []
for i in range(n):
    s = socket.create_connection(('127.0.0.1', port))
    if partial:
        s.send(b'\x16\x03\x01\x02\x00')  # a TLS record header, then nothing
    socks.append(s)
time.sleep(2)
after = rss()
t0 = time.time()
# is a fresh client still served?
import ssl
ctx = ssl.create_default_context(); ctx.check_hostname=False; ctx.verify_mode=ssl.CERT_NONE
try:
    c = ctx.wrap_socket(socket.create_connection(('127.0.0.1', port), timeout=5))
    c.send(b'GET / HTTP/1.1\r\nHost: x\r\n\r\n'); ok = c.recv(100)[:12]
except Exception as e:
    ok = repr(e)
print(f'n={n} partial={partial} rss_before_kib={before} rss_after_kib={after} per_conn_bytes={(after-before)*1024//max(n,1)} fresh_client={ok}')
for s in socks: s.setblocking(False)
alive = n
while alive and time.time() - t0 < 75:
    time.sleep(1)
    alive = 0
    for s in socks:
        try:
            d = s.recv(1)
            if d == b'': continue
            alive += 1
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
print(f'closed by the gateway after ~{time.time()-t0:.0f}s (still open: {alive})')
