#!/usr/bin/env python3
"""Memory held per idle keep-alive client connection (and per idle pooled
upstream connection): start the demo backend and flex-gateway on loopback,
open N client connections, send one request on each (so every one of them
has been through a whole request and sits idle in keep-alive, and the
gateway's upstream pool holds idle connections too), then read the
gateway's RSS. Reports (RSS with N idle connections - RSS after warm-up) / N.

    benches/idle.sh                       # 10,000 connections
    benches/idle.sh --connections 2000

Run through benches/idle.sh, which builds the binaries and raises the
open-files limit.
"""

import argparse
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"idle bench: nothing listens on {port}")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def request_all(socks, port, concurrent=True):
    """Send one keep-alive GET on every socket and read each whole response:
    all at once (the gateway opens many upstream connections), or one after
    the other (one upstream connection serves them all)."""
    if not concurrent:
        for s in socks:
            request_all([s], port)
        return len(socks)
    req = f"GET /api/products HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    pending = {}
    for s in socks:
        s.sendall(req)
        sel.register(s, selectors.EVENT_READ)
        pending[s] = b""
    done = 0
    deadline = time.time() + 120
    while pending and time.time() < deadline:
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            data = s.recv(65536)
            if not data:
                sys.exit("idle bench: the gateway closed a connection")
            buf = pending[s] + data
            head, sep, body = buf.partition(b"\r\n\r\n")
            if sep:
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if not head.startswith(b"HTTP/1.1 200"):
                    sys.exit(f"idle bench: unexpected response {head[:40]!r}")
                if len(body) >= length:
                    sel.unregister(s)
                    del pending[s]
                    done += 1
                    continue
            pending[s] = buf
    if pending:
        sys.exit(f"idle bench: {len(pending)} responses missing")
    return done


def upstream_connections(port):
    """Established TCP connections to the backend's port (the gateway's pool)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    remote, state = fields[2], fields[3]
                    if state == "01" and int(remote.split(":")[1], 16) == port:
                        count += 1
        except FileNotFoundError:
            pass
    return count


def run(args, pool):
    """One gateway with an upstream pool of `pool`: N idle client
    connections, then a burst of concurrent requests on new ones. Returns
    (RSS after warm-up, with the idle clients, after the burst, in KiB;
    pooled upstream connections)."""
    backend_port, gw_port = free_port(), free_port()
    tmp = tempfile.mkdtemp(prefix="flexgw-idle-")
    conf = os.path.join(tmp, "gateway.yaml")
    with open(conf, "w") as f:
        f.write(f"""apiVersion: gateway.mulesoft.com/v1alpha1
kind: Gateway
metadata: {{name: idle}}
spec:
  server:
    threads: 1
    admin: {{enabled: false}}
    pidFile: {tmp}/gw.pid
    upgradeSocket: {tmp}/gw.sock
    upstreamKeepalivePool: {pool}
    limits: {{maxConnections: 100000}}
  listeners:
    - {{name: http, port: {gw_port}, host: 127.0.0.1, protocol: HTTP}}
  routes:
    - id: products
      path: ["/api/products"]
      upstream: {{url: "http://127.0.0.1:{backend_port}"}}
""")
    backend = subprocess.Popen([args.backend, "--listen", f"127.0.0.1:{backend_port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gw = subprocess.Popen([args.gateway, "run", "-c", conf], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    try:
        wait_port(backend_port)
        wait_port(gw_port)
        # warm-up: code paths, allocator arenas
        warm = [socket.create_connection(("127.0.0.1", gw_port)) for _ in range(50)]
        request_all(warm, gw_port)
        for s in warm:
            s.close()
        time.sleep(0.5)
        base = rss_kib(gw.pid)
        socks = [socket.create_connection(("127.0.0.1", gw_port))
                 for _ in range(args.connections)]
        # one after the other: one upstream connection serves them all
        request_all(socks, gw_port, concurrent=False)
        time.sleep(1.0)
        loaded = rss_kib(gw.pid)
        # all at once on new connections: the gateway opens many upstream
        # connections, which then sit idle in its pool (up to `pool`)
        burst = [socket.create_connection(("127.0.0.1", gw_port))
                 for _ in range(args.burst)]
        request_all(burst, gw_port, concurrent=True)
        time.sleep(1.0)
        after = rss_kib(gw.pid)
        pooled = upstream_connections(backend_port)
        for s in socks + burst:
            s.close()
        return base, loaded, after, pooled
    finally:
        gw.terminate()
        backend.terminate()
        gw.wait(timeout=30)
        backend.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--backend", required=True)
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--burst", type=int, default=2000)
    args = ap.parse_args()

    base, loaded, after, pooled = run(args, pool=args.burst)
    per = (loaded - base) / args.connections
    print(f"idle keep-alive client connections: {args.connections}")
    print(f"  gateway RSS after warm-up:  {base / 1024:.1f} MiB")
    print(f"  gateway RSS with them idle: {loaded / 1024:.1f} MiB")
    print(f"  per idle client connection: {per:.1f} KiB")
    # the same run with a pool of one: the difference is the pool's
    _, _, after1, pooled1 = run(args, pool=1)
    upstream = (after - after1) / max(pooled - pooled1, 1)
    print(f"idle pooled upstream connections: {pooled} after a burst of "
          f"{args.burst} concurrent requests ({pooled1} with a pool of one)")
    print(f"  gateway RSS: {after / 1024:.1f} MiB ({after1 / 1024:.1f} MiB with a pool of one)")
    print(f"  per idle pooled upstream connection: {upstream:.1f} KiB")


if __name__ == "__main__":
    main()
