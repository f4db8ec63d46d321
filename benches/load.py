#!/usr/bin/env python3
"""Side-by-side load benchmark (see benches/README.md); run via benches/load.sh.

Targets, each with one worker process/thread, HTTP/1.1 keep-alive upstream
connections to the same nginx backend (one worker, `return 200` / static
files), on 127.0.0.1:
  direct    the backend alone
  nginx     nginx reverse proxy
  haproxy   HAProxy reverse proxy
  pingora   a bare Pingora proxy (examples/bare_pingora.rs): one peer, no
            routing or policies; only in scenarios a, d, e, where it does
            the same work; it shows what is Pingora's cost and what is ours
  flex      flex-gateway
  base      flex-gateway built from another commit (`load.sh --compare REV`),
            run beside `flex` in every scenario; the report gives flex/base
  pingap    the API gateway on Pingora (`load.sh --peers`; its configs in
            benches/peers/): scenarios a, b, e, m
  caddy     Caddy (Debian's package; benches/peers/): scenarios a, b, e
Scenarios:
  a  plain proxy, one route
  b  the user's example config: route match + per-route rate limit (set high)
  c  1,000 wildcard routes, the request hits one near the end, rate limit on
  d  64 KB responses
  e  1,000 concurrent connections
  f  (b) with authentication: jwt-validation (RS256, the same valid token on
     every request, so the verified-token cache is hit) + api-key; flex only,
     compared with its own (b) in the same run
  g  (b) with cors + ip-allowlist (1,000 ranges) + header-injection, the
     request carrying an allowed Origin; flex only, compared with its (b)
  h  (b) with the rate limit per client: `key: header:X-Client-Key`, each
     request one of 100,000 keys in turn (a wrk Lua script), so the map
     holds 100,000 live keys; flex only, compared with its (b)
  p  the user's route, POST with a 1 KB JSON body (a wrk Lua script);
     flex only, the baseline of (q)
  q  (p) with json-threat-protection, every limit set; flex only,
     compared with its (p)
  i  (h) with the counts in Redis (`sharedStorage`, a local redis-server):
     one script call per request; flex only, compared with its (h)
  j  (b) over HTTPS (TLS 1.3, an ECDSA P-256 certificate made for the run),
     keep-alive; nginx and flex terminate TLS with the same certificate
  k  new TLS handshakes per second: (j) with `Connection: close` on every
     request, so each request is a new connection and handshake
Every measurement is repeated (default 3) and the median reported. Beside
requests/s and latency, each target's CPU time per request: user + system
time of its processes (nginx's workers included) over the run, divided by
the requests served; steadier than requests/s on a shared machine.
"""
import argparse, json, os, platform, re, shutil, signal, socket, statistics
import subprocess, sys, tempfile, time, base64

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GATEWAY = os.path.join(ROOT, "target", "release", "flex-gateway")
PORTS = {"backend": 18080, "direct": 18080, "nginx": 18081, "haproxy": 18082, "flex": 18083, "flex_admin": 18093,
         "pingora": 18084, "base": 18085, "base_admin": 18095, "redis": 18096,
         "pingap": 18086, "caddy": 18087}
PRODUCTS = json.dumps([
    {"id": 1, "name": "API Gateway", "category": "infrastructure", "status": "active"},
    {"id": 2, "name": "Service Mesh", "category": "networking", "status": "active"},
    {"id": 3, "name": "Event Bus", "category": "messaging", "status": "beta"},
])
SCENARIOS = {
    "a": ("plain proxy, one route", "/api/products", 64),
    "b": ("user's example config (route match + rate limit)", "/api/products/2", 64),
    "c": ("1,000 wildcard routes, hit near the end, rate limit on", "/svc/r0990/items/7", 64),
    "d": ("64 KB responses", "/big/64k", 64),
    "e": ("1,000 concurrent connections", "/api/products", 1000),
    "f": ("user's route + jwt-validation (RS256) + api-key", "/api/products/2", 64),
    "g": ("user's route + cors + ip-allowlist (1,000 ranges) + header-injection", "/api/products/2", 64),
    "h": ("user's route + per-client rate limit, 100,000 distinct keys", "/api/products/2", 64),
    "i": ("(h) with the counts in Redis", "/api/products/2", 64),
    "j": ("user's route over HTTPS, keep-alive", "/api/products/2", 64),
    "k": ("new TLS handshakes (Connection: close)", "/api/products/2", 64),
    "l": ("(b) written as Flex resources: ApiInstance, regex route rules, rate-limiting-flex", "/api/products/2", 64),
    "m": ("user's route + a chain of five: jwt-validation, api-key, cors, ip-allowlist, header-injection",
          "/api/products/2", 64),
    "w": ("user's route + a custom policy (proxy-wasm filter, SDK-built) adding a response header",
          "/api/products/2", 64),
    "t": ("user's route + tracing, every request sampled, OTLP/HTTP to a sink (the backend nginx)",
          "/api/products/2", 64),
    "u": ("user's route + tracing configured, 0 % sampled", "/api/products/2", 64),
    "p": ("user's route, POST with a 1 KB JSON body", "/api/products/2", 64),
    "q": ("(p) + json-threat-protection (every limit set)", "/api/products/2", 64),
    "x": ("user's route + response-cache, answered from the cache", "/api/products/2", 64),
    "v": ("user's route, a new query string each request (`?n=<counter>`; the base of (y))", "/api/products/2", 64),
    "y": ("(v) + response-cache keyed by path and query: every request a miss, stored",
          "/api/products/2", 64),
}
TLS_ONLY = "jk"  # HTTPS scenarios: nginx and flex only
FLEX_ONLY = "fghilmwtupqxvy"  # policy and format scenarios: compared with flex's own (b)
UNIQUE_SCRIPT = """counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "/api/products/2?n=" .. counter)
end
"""
KEYS_SCRIPT = """counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, {["X-Client-Key"] = "client-" .. (counter % 100000)})
end
"""
# scenarios (p) and (q): a 1 KB order, posted as JSON
ORDER = json.dumps({"order": {"id": 48213, "customer": "ACME Corporation", "currency": "EUR", "items": [
    {"sku": f"SKU-{i:05d}", "name": f"Widget model {i}", "quantity": i % 7 + 1, "price": 12.5 + i,
     "tags": ["blue", "large"]} for i in range(10)]}}, separators=(",", ":"))
POST_SCRIPT = f"""wrk.method = "POST"
wrk.body = '{ORDER}'
wrk.headers["Content-Type"] = "application/json"
"""
JSON_LIMITS = ("{maxContainerDepth: 10, maxObjectEntryCount: 100, maxObjectEntryNameLength: 80, "
               "maxArrayElementCount: 1000, maxStringValueLength: 4096}")
API_KEY = "bench-api-key-0123456789"
AUTH_HEADERS = []  # filled in main() with the signed token (scenario f)
TARGETS = ["direct", "nginx", "haproxy", "pingora", "flex"]
PEERS = ("pingap", "caddy")  # API gateways a Flex user would pick instead (--peers)
PEER_BIN = {}  # target -> binary
PEER_SCENARIOS = "abem"
# what a peer cannot express, shown as "—" with the reason
PEER_GAPS = {
    ("caddy", "m"): "Caddy's standard build has no JWT validation, API-key or rate-limit module "
                    "(third-party modules, not in Debian's caddy)",
}
# (method, path, extra headers) sent to every target of a scenario before it is
# measured; a peer must answer as flex-gateway does (status code and, for (m),
# X-Frame-Options), or the difference is reported (PEER_KNOWN: expected ones)
PROBES = {
    "a": [("GET", "/api/products", ()), ("GET", "/elsewhere/x", ())],
    "b": [("GET", "/api/products/2", ()), ("GET", "/api/products", ()), ("GET", "/health", ()),
          ("GET", "/nowhere", ()), ("GET", "/api/productsX", ()), ("POST", "/api/products/2", ())],
    "m": [("GET", "/api/products/2", "auth+key+origin"), ("GET", "/api/products/2", "key+origin"),
          ("GET", "/api/products/2", "badtoken+key+origin"), ("GET", "/api/products/2", "auth+origin"),
          ("GET", "/api/products/2", "auth+badkey+origin"), ("GET", "/api/products/2", "auth+key")],
}
PROBES["e"] = PROBES["a"]
PEER_KNOWN = {
    ("pingap", "b", "POST /api/products/2"): "pingap's locations have no method condition: the POST is proxied",
}
ROUTES_C = 1000
GATEWAY_BIN = [GATEWAY]
BARE_BIN = [None]
BASE_BIN = [None]
WORKERS = [1]  # worker processes / threads of every proxy (--workers)
# --pin-client: `taskset` prefixes for wrk and for every server (backend,
# proxies, Redis); empty: unpinned
PIN = {"client": [], "servers": []}


def which(name):
    return shutil.which(name) or f"/usr/sbin/{name}"


def wait_port(port, proc=None, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"process for port {port} exited early ({proc.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def ensure_free(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            raise SystemExit(f"port {port} is already in use; stop whatever listens there")
    except OSError:
        pass


def stop(proc, sig=signal.SIGINT):
    if proc and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def nginx_conf(work, body):
    return f"""
worker_processes 1;
daemon off;
pid {work}/nginx-{body}.pid;
error_log {work}/nginx-{body}-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {work}/tmp-{body};
    proxy_temp_path {work}/tmp-{body};
    fastcgi_temp_path {work}/tmp-{body};
    uwsgi_temp_path {work}/tmp-{body};
    scgi_temp_path {work}/tmp-{body};
    keepalive_requests 1000000;
{body_block(work, body)}
}}
"""


def body_block(work, which_):
    if which_ == "backend":
        return f"""
    server {{
        listen 127.0.0.1:{PORTS['backend']} reuseport backlog=4096;
        default_type application/json;
        location /big/ {{ root {work}/static; default_type application/octet-stream; }}
        location / {{ return 200 '{PRODUCTS}'; }}
    }}"""
    raise ValueError(which_)


def nginx_proxy_conf(work, scenario):
    up = f"""
    upstream backend {{ server 127.0.0.1:{PORTS['backend']}; keepalive 256; keepalive_requests 1000000; }}
    limit_req_zone $limit_key zone=rl:1m rate=10000000r/s;
    map $uri $limit_key {{ default "route"; }}"""
    proxy = """proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";"""
    if scenario in ("a", "d", "e"):
        locations = f"location / {{ {proxy} }}"
    elif scenario in ("b", "j", "k"):
        locations = (
            f"location = /api/products {{ limit_except GET {{ deny all; }} limit_req zone=rl burst=1000000 nodelay; {proxy} }}\n"
            f"        location /api/products/ {{ limit_except GET {{ deny all; }} limit_req zone=rl burst=1000000 nodelay; {proxy} }}\n"
            f"        location = /health {{ limit_req zone=rl burst=1000000 nodelay; {proxy} }}\n"
            f"        location = /status {{ limit_req zone=rl burst=1000000 nodelay; {proxy} }}"
        )
    else:
        locations = "\n        ".join(
            f"location /svc/r{i:04d}/ {{ limit_req zone=rl burst=1000000 nodelay; {proxy} }}" for i in range(ROUTES_C)
        )
    tls_listen = ""
    if scenario in TLS_ONLY:
        tls_listen = (f" ssl;\n        ssl_certificate {work}/bench.pem; ssl_certificate_key {work}/bench.key;"
                      "\n        ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache off; ssl_session_tickets off")
    return f"""
worker_processes {WORKERS[0]};
daemon off;
pid {work}/nginx-proxy.pid;
error_log {work}/nginx-proxy-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {work}/tmp-proxy;
    proxy_temp_path {work}/tmp-proxy;
    fastcgi_temp_path {work}/tmp-proxy;
    uwsgi_temp_path {work}/tmp-proxy;
    scgi_temp_path {work}/tmp-proxy;
    keepalive_requests 1000000;
    {up}
    server {{
        listen 127.0.0.1:{PORTS['nginx']} backlog=4096{tls_listen};
        {locations}
    }}
}}
"""


def haproxy_conf(work, scenario):
    rl = "    http-request track-sc0 str(route) table rl\n    http-request deny deny_status 429 if { sc_http_req_rate(0) gt 100000000 }\n"
    if scenario in ("a", "d", "e"):
        rules = "    default_backend be\n"
    elif scenario == "b":
        rules = (
            "    acl products path /api/products\n"
            "    acl products path_beg /api/products/\n"
            "    acl health path /health /status\n"
            "    http-request track-sc0 str(health) table rl if health\n"
            "    http-request track-sc0 str(products) table rl if products\n"
            "    http-request deny deny_status 429 if { sc_http_req_rate(0) gt 100000000 }\n"
            "    use_backend be if products METH_GET or health METH_GET\n"
        )
    else:
        rules = "".join(f"    use_backend be if {{ path_beg /svc/r{i:04d}/ }}\n" for i in range(ROUTES_C)) + rl
    return f"""
global
    nbthread {WORKERS[0]}
    maxconn 8000
    pidfile {work}/haproxy.pid
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
    option http-keep-alive
backend rl
    stick-table type string len 16 size 100 expire 60s store http_req_rate(60s)
frontend fe
    bind 127.0.0.1:{PORTS['haproxy']}
{rules}backend be
    server s1 127.0.0.1:{PORTS['backend']} maxconn 1000
"""


def peer_conf(work, scenario, target):
    """A peer's config: its file in benches/peers/ with ${...} filled in."""
    import string
    name = {"pingap": f"pingap-{'a' if scenario == 'e' else scenario}.toml",
            "caddy": f"Caddyfile-{'a' if scenario == 'e' else scenario}"}[target]
    text = open(os.path.join(ROOT, "benches", "peers", name)).read()
    values = {"port": PORTS[target], "backend": PORTS["backend"], "work": work, "threads": WORKERS[0],
              "api_key": API_KEY,
              "ranges": ", ".join(f'"10.{i // 256}.{i % 256}.0/24"' for i in range(999)) + ', "127.0.0.1"'}
    if scenario == "m":
        values["public_key"] = open(os.path.join(work, "jwt-public.pem")).read()
    return string.Template(text).safe_substitute(values)


def probe(port, method, path, headers):
    """One request on a new connection: (status, X-Frame-Options)."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=b"{}" if method == "POST" else None, headers=dict(headers))
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("X-Frame-Options")
    finally:
        conn.close()


def probe_headers(spec):
    """The headers of a probe of (m): a '+'-joined list of what it carries."""
    if not isinstance(spec, str):
        return list(spec)
    token = AUTH_HEADERS[0].split(": ", 1)[1] if AUTH_HEADERS else ""
    parts = {"auth": ("Authorization", token), "badtoken": ("Authorization", token[:-8] + "AAAAAAAA"),
             "key": ("X-API-Key", API_KEY), "badkey": ("X-API-Key", API_KEY + "x"),
             "origin": ("Origin", "https://app.example.com")}
    return [parts[p] for p in spec.split("+")]


def server_settings(work, target):
    """`spec.server` of a bench gateway (under `server:`, 4 spaces in)."""
    return f"""    threads: {WORKERS[0]}
    pidFile: {work}/{target}.pid
    upgradeSocket: {work}/{target}-upgrade.sock
    accessLog: false
    watchConfig: false
    gracePeriod: 1s
    shutdownTimeout: 1s
    admin: {{address: "127.0.0.1:{PORTS[target + '_admin']}"}}
"""


def flex_local_mode_conf(work, target):
    """Scenario (l): the user's two routes and their rate limits as Flex
    Local Mode resources (non-capturing groups: the path goes upstream
    unchanged, as in (b)), beside a kind: Gateway document of settings."""
    up = f"http://127.0.0.1:{PORTS['backend']}"
    rl = ("    - policyRef: {name: rate-limiting-flex}\n"
          "      config: {rateLimits: [{maximumRequests: 1000000000, timePeriodInMilliseconds: 60000}]}\n")
    return f"""apiVersion: gateway.mulesoft.com/v1alpha1
kind: ApiInstance
metadata: {{name: bench}}
spec:
  address: http://127.0.0.1:{PORTS[target]}
  services:
    products:
      address: {up}
      routes:
        - rules: [{{path: "/api/products(?:/.*)?", methods: GET}}]
        - rules: [{{path: "/health|/status", methods: GET}}]
  policies:
{rl}---
apiVersion: gateway.mulesoft.com/v1alpha1
kind: Gateway
metadata: {{name: settings}}
spec:
  server:
{server_settings(work, target)}"""


def wasm_policy():
    """The custom policy of scenario (w): the SDK-built test filter adding a
    response header from its config (FLEXGW_BENCH_WASM: another module,
    root id "main"); without a wasm32 build, the 286-byte hand-written
    filter of conf/custom-policy.yaml."""
    path = os.environ.get("FLEXGW_BENCH_WASM")
    root = "main"
    if not path:
        path = "target/wasm-filters/wasm32-wasip1/release/flexgw_test_filters.wasm"
        root = "config"
    if os.path.exists(path):
        module = os.path.abspath(path)
    else:
        print(f"flex-gateway bench (w): {path} not built (cargo test --release --test integration wasm:: builds it); "
              "measuring the hand-written filter of conf/custom-policy.yaml", file=sys.stderr)
        text = open("conf/custom-policy.yaml").read()
        module = next(l.split("module:", 1)[1].strip().strip('"') for l in text.splitlines() if "module:" in l)
        root = "main"
    return (f"        - proxy-wasm:\n            module: \"{module}\"\n            rootId: {root}\n"
            f"            config: {{header: x-team, value: payments}}\n            instances: 1\n")


def flex_conf(work, scenario, target="flex"):
    if scenario == "l":
        return flex_local_mode_conf(work, target)
    up = f"http://127.0.0.1:{PORTS['backend']}"
    rl = "      policies:\n        - rate-limiting: {maxRequests: 1000000000, period: 60}\n"
    if scenario in ("a", "d", "e"):
        routes = f"    - id: all\n      path: \"/*\"\n      upstream: {{url: \"{up}\"}}\n"
    elif scenario in ("b", "f", "g", "h", "i", "j", "k", "m", "w", "t", "u", "p", "q", "x", "v", "y"):
        routes = (
            f"    - id: public-products\n      path: [\"/api/products\", \"/api/products/*\"]\n      methods: [\"GET\"]\n"
            f"      upstream: {{url: \"{up}\", timeout: 30s}}\n"
            f"    - id: health-check\n      path: [\"/health\", \"/status\"]\n      methods: [\"GET\"]\n"
            f"      upstream: {{url: \"{up}\"}}\n{rl}"
        )
        # the products route is rate limited too, so the measured request pays for the policy
        routes = routes.replace("timeout: 30s}\n", "timeout: 30s}\n" + rl, 1)
        if scenario == "w":
            routes = routes.replace(rl, rl + wasm_policy(), 1)
        if scenario in ("p", "q"):
            routes = routes.replace('methods: ["GET"]', 'methods: ["GET", "POST"]', 1)
        if scenario == "q":
            routes = routes.replace(rl, rl + f"        - json-threat-protection: {JSON_LIMITS}\n", 1)
        if scenario == "x":
            routes = routes.replace(rl, rl + "        - response-cache: {}\n", 1)
        if scenario == "y":
            key = "#[attributes.requestPath ++ '?' ++ (attributes.queryParams.n default '')]"
            routes = routes.replace(rl, rl + f"        - response-cache: {{httpCachingKey: \"{key}\"}}\n", 1)
        if scenario in ("f", "m"):
            auth = (
                f"        - jwt-validation:\n            keys: [{{algorithm: RS256, publicKey: \"file:{work}/jwt-public.pem\"}}]\n"
                f"          order: 10\n"
                f"        - api-key: {{keys: [\"{API_KEY}\"]}}\n          order: 20\n"
            )
            routes = routes.replace(rl, rl + auth)
        if scenario in ("h", "i"):
            keyed = "      policies:\n        - rate-limiting: {maxRequests: 1000000000, period: 60, key: \"header:X-Client-Key\"}\n"
            routes = routes.replace(rl, keyed, 1)
        if scenario in ("g", "m"):
            ranges = ", ".join(f"10.{i // 256}.{i % 256}.0/24" for i in range(999)) + ", 127.0.0.1"
            access = (
                "        - cors: {origins: [\"https://app.example.com\"], allowCredentials: true}\n"
                f"        - ip-allowlist: {{ips: [{ranges}]}}\n"
                "        - header-injection: {request: [{name: X-Client-Ip, value: \"{client_ip}\"}], "
                "response: [{name: X-Frame-Options, value: DENY}]}\n"
            )
            routes = routes.replace(rl, rl + access)
    else:
        routes = "".join(
            f"    - id: r{i:04d}\n      path: \"/svc/r{i:04d}/*\"\n      upstream: {{url: \"{up}\"}}\n{rl}" for i in range(ROUTES_C)
        )
    tls = (f", protocol: HTTPS, tls: {{certificates: [{{cert: \"{work}/bench.pem\", key: \"{work}/bench.key\"}}]}}"
           if scenario in TLS_ONLY else "")
    storage = f"    sharedStorage: {{redis: {{address: \"127.0.0.1:{PORTS['redis']}\"}}}}\n" if scenario == "i" else ""
    if scenario in ("t", "u"):
        # the backend nginx answers the exports (200): a sink that costs little
        sampled = 100 if scenario == "t" else 0
        storage += (f"    tracing: {{endpoint: \"http://127.0.0.1:{PORTS['backend']}/v1/traces\", "
                    f"sampling: {{random: {sampled}, client: {sampled}}}}}\n")
    return f"""apiVersion: gateway.mulesoft.com/v1alpha1
kind: Gateway
metadata: {{name: bench}}
spec:
  listeners: [{{name: bench, port: {PORTS[target]}, host: "127.0.0.1"{tls}}}]
  routes:
{routes}  server:
{storage}{server_settings(work, target)}"""


def rss_kib(pid, field="VmRSS"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def start_target(target, scenario, work):
    """Start the proxy for a target; returns the process (None for direct)."""
    if target == "direct":
        return None
    path = os.path.join(work, f"{target}-{scenario}.conf")
    if target == "pingora":
        cmd = [BARE_BIN[0], f"127.0.0.1:{PORTS['pingora']}", f"127.0.0.1:{PORTS['backend']}", str(WORKERS[0])]
    elif target == "nginx":
        open(path, "w").write(nginx_proxy_conf(work, scenario))
        os.makedirs(os.path.join(work, "tmp-proxy"), exist_ok=True)
        cmd = [which("nginx"), "-c", path, "-e", os.path.join(work, "nginx-proxy-error.log")]
    elif target == "haproxy":
        open(path, "w").write(haproxy_conf(work, scenario))
        cmd = [which("haproxy"), "-f", path, "-db"]
    elif target == "pingap":
        path = path.replace(".conf", ".toml")
        open(path, "w").write(peer_conf(work, scenario, target))
        cmd = [PEER_BIN["pingap"], "-c", path, "--strict"]
    elif target == "caddy":
        open(path, "w").write(peer_conf(work, scenario, target))
        cmd = [PEER_BIN["caddy"], "run", "--config", path, "--adapter", "caddyfile"]
    else:
        path = path.replace(".conf", ".yaml")
        open(path, "w").write(flex_conf(work, scenario, target))
        binary = BASE_BIN[0] if target == "base" else GATEWAY_BIN[0]
        cmd = [binary, "run", "-c", path]
    log = open(os.path.join(work, f"{target}-{scenario}.log"), "w")
    env = dict(os.environ, RUST_LOG="warn", GOMAXPROCS=str(WORKERS[0]))
    proc = subprocess.Popen(PIN["servers"] + cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
    wait_port(PORTS[target], proc)
    return proc


def fetch(port, path):
    """The body of GET http://127.0.0.1:port/path, as text."""
    import urllib.request
    return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).read().decode()


def heap_allocations(admin_port):
    """The gateway's heap allocations so far (`flexgw_heap_allocations_total`;
    bare Pingora's from its `/_allocations`)."""
    if admin_port == "pingora":  # examples/bare_pingora.rs answers its count itself
        return float(fetch(PORTS["pingora"], "/_allocations"))
    for line in fetch(admin_port, "/metrics").splitlines():
        if line.startswith("flexgw_heap_allocations_total "):
            return float(line.split()[1])
    return None  # a build from before the count (--compare)


def cache_lookups(admin_port):
    """The response cache's lookups by result, from the gateway's metrics."""
    text = fetch(admin_port, "/metrics")
    out = {}
    for line in text.splitlines():
        if line.startswith("flexgw_cache_lookups_total{"):
            result = line.split('result="', 1)[1].split('"', 1)[0]
            out[result] = float(line.rsplit(" ", 1)[1])
    return out


def cpu_seconds(pid):
    """User + system time of a process and its descendants (nginx workers)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError, IndexError):
            pass
    return total


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(work):
    """An RSA key pair (openssl CLI) and an RS256 token valid for a day."""
    key, pub = os.path.join(work, "jwt-private.pem"), os.path.join(work, "jwt-public.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-out", pub], check=True, capture_output=True)
    head = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps({"sub": "bench", "exp": int(time.time()) + 86400}).encode())
    signing_input = f"{head}.{body}".encode()
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing_input,
                         check=True, capture_output=True).stdout
    return f"{head}.{body}.{b64url(sig)}"


def wrk(port, path, conns, duration, headers=(), script=None, scheme="http"):
    extra = [a for h in headers for a in ("-H", h)] + (["-s", script] if script else [])
    out = subprocess.run(
        PIN["client"] + ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", "--timeout", "5s", *extra,
         f"{scheme}://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))

    def lat(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)\b", out)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    return rps, lat(50), lat(99), errors, requests


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per measurement (median reported)")
    ap.add_argument("--interleave", action="store_true",
                    help="repeat whole rounds (every scenario and target once, then again) instead of each "
                         "measurement's repetitions in a row: slow drifts of a noisy machine then hit every "
                         "scenario alike; ratios are also given per round (paired)")
    ap.add_argument("--smoke", action="store_true", help="1 s, 1 repetition: a quick check that everything runs")
    ap.add_argument("--scenarios", default="abcdefghijklmwtupq")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--out", help="also write the markdown report to this file")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    ap.add_argument("--perf", metavar="DIR",
                    help="record the first measured run of each scenario of the --perf-targets with "
                         "`perf record -g` into DIR/perf-<scenario>[-<target>].data (for benches/profile.sh)")
    ap.add_argument("--perf-targets", default="flex",
                    help="the targets --perf records (comma-separated; flex's file has no suffix)")
    ap.add_argument("--gateway", default=GATEWAY, help="the flex-gateway binary to measure")
    ap.add_argument("--bare", help="the bare Pingora proxy binary (examples/bare_pingora.rs); without it, no pingora target")
    ap.add_argument("--base", help="a flex-gateway binary of another commit, measured as target `base` beside `flex`")
    ap.add_argument("--base-label", default="base", help="what --base was built from (for the report)")
    ap.add_argument("--peers", action="store_true",
                    help="add the peer gateways (pingap, Caddy: --pingap, --caddy) to the targets, in scenarios "
                         f"{', '.join(PEER_SCENARIOS)}")
    ap.add_argument("--pingap", help="the pingap binary (load.sh --peers builds it under target/peers/)")
    ap.add_argument("--caddy", default=shutil.which("caddy"), help="the caddy binary")
    ap.add_argument("--workers", type=int, default=1,
                    help="worker processes (nginx), threads (HAProxy, Pingora, flex-gateway); the backend keeps one")
    ap.add_argument("--pin-client", type=int, metavar="CPU",
                    help="run wrk on this CPU alone and every server (backend, proxies, Redis) on the others "
                         "(`taskset`), so the client does not take the proxies' cores")
    args = ap.parse_args()
    pinned = ""
    if args.pin_client is not None:
        cpus = sorted(os.sched_getaffinity(0))
        if args.pin_client not in cpus or len(cpus) < 2:
            sys.exit(f"load.py: --pin-client {args.pin_client}: needs that CPU and another (have {cpus})")
        others = [c for c in cpus if c != args.pin_client]
        PIN["client"] = ["taskset", "-c", str(args.pin_client)]
        PIN["servers"] = ["taskset", "-c", ",".join(map(str, others))]
        pinned = (f" wrk pinned to CPU {args.pin_client}, the backend and the proxies to CPU(s) "
                  f"{','.join(map(str, others))}.")
    if args.smoke:
        args.duration, args.reps = 1, 1
    targets = args.targets.split(",")
    GATEWAY_BIN[0] = args.gateway
    BARE_BIN[0] = args.bare
    BASE_BIN[0] = args.base
    WORKERS[0] = args.workers
    if not args.bare and "pingora" in targets:
        targets.remove("pingora")
    if args.base and "base" not in targets:
        targets.append("base")
    if args.peers:
        for peer in PEERS:
            binary = getattr(args, peer)
            if not binary:
                sys.exit(f"load.py --peers: no {peer} binary (--{peer} PATH; load.sh --peers installs both)")
            PEER_BIN[peer] = binary
            if peer not in targets:
                targets.append(peer)
    elif any(t in PEERS for t in targets):
        sys.exit("load.py: the peers (pingap, caddy) are measured with --peers")
    for p in set(PORTS.values()):
        ensure_free(p)
    work = tempfile.mkdtemp(prefix="flexgw-bench-")
    os.chmod(work, 0o755)  # nginx workers run as an unprivileged user
    os.makedirs(os.path.join(work, "static", "big"))
    os.makedirs(os.path.join(work, "tmp-backend"))
    with open(os.path.join(work, "static", "big", "64k"), "wb") as f:
        f.write(b"x" * 65536)
    backend_conf = os.path.join(work, "backend.conf")
    open(backend_conf, "w").write(nginx_conf(work, "backend"))
    backend = subprocess.Popen(PIN["servers"] + [which("nginx"), "-c", backend_conf, "-e", os.path.join(work, "nginx-backend-error.log")],
                               stdin=subprocess.DEVNULL)
    if "f" in args.scenarios or "m" in args.scenarios or args.peers:
        token = make_token(work)
        AUTH_HEADERS[:] = [f"Authorization: Bearer {token}", f"X-API-Key: {API_KEY}"]
    if any(sc in TLS_ONLY for sc in args.scenarios):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", os.path.join(work, "bench.key"), "-out", os.path.join(work, "bench.pem"),
                        "-days", "2", "-subj", "/CN=bench.test", "-addext", "subjectAltName=DNS:bench.test"],
                       check=True, capture_output=True)
    script = os.path.join(work, "keys.lua")
    open(script, "w").write(KEYS_SCRIPT)
    post_script = os.path.join(work, "post.lua")
    open(post_script, "w").write(POST_SCRIPT)
    unique_script = os.path.join(work, "unique.lua")
    open(unique_script, "w").write(UNIQUE_SCRIPT)
    redis = None
    if "i" in args.scenarios:
        redis = subprocess.Popen(PIN["servers"] + [which("redis-server"), "--port", str(PORTS["redis"]), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    results = {}  # (scenario, target) -> (rps, p50, p99, errors, cpu us per request)
    cache_results = {}  # scenario -> {result: count} of the response cache (warm-up included)
    runs = {}  # (scenario, target) -> each measurement, in order (with --interleave: one per round)
    rss = {}
    answers = {}  # (scenario, target) -> [(status, X-Frame-Options)] of PROBES[scenario]
    failures = []
    try:
        wait_port(PORTS["backend"], backend)
        if redis:
            wait_port(PORTS["redis"], redis)
        def plan():
            """(scenario, target, round, measurements): the order of the runs."""
            pairs = []
            for sc in args.scenarios:
                for t in targets:
                    if t == "pingora" and sc not in "ade":
                        continue  # it has no routes or policies: only comparable on a plain proxy
                    if t in PEERS:
                        if sc in PEER_SCENARIOS and (t, sc) not in PEER_GAPS:
                            pairs.append((sc, t))
                        continue
                    if sc in FLEX_ONLY and t not in ("flex", "base"):
                        continue  # policy scenarios: compared with flex's own (b)
                    if sc in TLS_ONLY and t not in ("nginx", "flex", "base"):
                        continue  # TLS termination: nginx and flex
                    pairs.append((sc, t))
            if args.interleave:
                return [(sc, t, rnd, 1) for rnd in range(args.reps) for sc, t in pairs]
            return [(sc, t, 0, args.reps) for sc, t in pairs]

        steps = plan()
        for i, (sc, t, rnd, count) in enumerate(steps):
            name, path, conns = SCENARIOS[sc]
            headers = {"f": AUTH_HEADERS, "g": ["Origin: https://app.example.com"],
                       "m": AUTH_HEADERS + ["Origin: https://app.example.com"],
                       "k": ["Connection: close"]}.get(sc, ())
            scheme = "https" if sc in TLS_ONLY else "http"
            lua = script if sc in "hi" else post_script if sc in "pq" else unique_script if sc in "vy" else None
            proc = start_target(t, sc, work)
            try:
                if rnd == 0 and sc in PROBES and (t in PEERS or t == "flex"):
                    answers[(sc, t)] = [probe(PORTS[t], m, p, probe_headers(h)) for m, p, h in PROBES[sc]]
                if t == "flex" and proc:
                    time.sleep(0.2)
                    rss.setdefault("idle", rss_kib(proc.pid))
                if not args.smoke:  # the smoke pass checks that it runs, not how fast
                    wrk(PORTS[t], path, conns, 1, headers, lua, scheme)  # warm-up: connections, pools, caches
                for rep in range(count):
                    measured = proc or backend
                    perf = None
                    if args.perf and t in args.perf_targets.split(",") and rep == 0 and rnd == 0 and proc:
                        os.makedirs(args.perf, exist_ok=True)
                        suffix = "" if t == "flex" else f"-{t}"
                        perf = subprocess.Popen(
                            ["perf", "record", "-F", "299", "--call-graph", "dwarf,16384", "-p", str(proc.pid),
                             "-o", os.path.join(args.perf, f"perf-{sc}{suffix}.data")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                        time.sleep(0.5)  # attached before the load starts
                    admin = PORTS.get(f"{t}_admin") if proc else None
                    if t == "pingora":
                        admin = "pingora"
                    allocs = heap_allocations(admin) if admin else None
                    before = cpu_seconds(measured.pid)
                    r = wrk(PORTS[t], path, conns, args.duration, headers, lua, scheme)
                    if perf:
                        stop(perf, signal.SIGINT)
                    cpu_us = (cpu_seconds(measured.pid) - before) * 1e6 / max(r[4], 1)
                    if allocs is not None:
                        allocs = (heap_allocations(admin) - allocs) / max(r[4], 1)
                    runs.setdefault((sc, t), []).append(r[:4] + (cpu_us, allocs))
                if t == "flex" and proc and sc in "ebhw":
                    rss[sc] = max(rss.get(sc, 0), rss_kib(proc.pid, "VmHWM"))
                if t == "flex" and proc and sc in "xy":
                    cache_results[sc] = cache_lookups(PORTS["flex_admin"])
            finally:
                stop(proc, signal.SIGINT if t in ("flex", "base") else signal.SIGTERM)
            if all(s[:2] != (sc, t) for s in steps[i + 1:]):  # its last run: report it
                done = runs[(sc, t)]
                med = lambda k: statistics.median(r[k] for r in done)
                allocs = [r[5] for r in done if r[5] is not None]
                results[(sc, t)] = (med(0), med(1), med(2), sum(r[3] for r in done), med(4),
                                    statistics.median(allocs) if allocs else None)
                if results[(sc, t)][3]:
                    failures.append(f"{sc}/{t}: {results[(sc, t)][3]} errors or non-2xx responses")
                print(f"  [{sc}] {t:8s} {results[(sc, t)][0]:>10.0f} req/s  p50 {results[(sc, t)][1]:.3f} ms  p99 {results[(sc, t)][2]:.3f} ms  cpu {results[(sc, t)][4]:.1f} us/req", file=sys.stderr)
    finally:
        stop(backend, signal.SIGTERM)
        stop(redis, signal.SIGTERM)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    def paired(sc, base, target="flex"):
        """With --interleave: the ratios of flex's runs round by round (each against the same round's run
        of scenario `base`, or of `target` in the same scenario)."""
        a, b = runs.get((sc, "flex"), []), runs.get((base, target), [])
        if not args.interleave or len(a) != len(b) or not a:
            return ""
        rps = sorted(x[0] / y[0] for x, y in zip(a, b))
        cpu = statistics.median(x[4] / y[4] for x, y in zip(a, b))
        return (f"; paired by round: median {statistics.median(rps):.3f}x requests/s "
                f"(rounds {', '.join(f'{r:.2f}' for r in rps)}), CPU per request {cpu:.3f}x")

    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [
        f"Run: `benches/load.sh --duration {args.duration} --reps {args.reps} --workers {args.workers}"
        f"{' --interleave' if args.interleave else ''}"
        f"{'' if args.pin_client is None else f' --pin-client {args.pin_client}'}` at commit `{commit}`, "
        f"{args.workers} worker(s) per proxy, "
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), wrk -t1, median of {args.reps}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.{pinned}",
        "",
    ]
    for sc in args.scenarios:
        name, path, conns = SCENARIOS[sc]
        lines += [f"### ({sc}) {name} — `GET {path}`, {conns} connections", "",
                  "| target | req/s | p50 ms | p99 ms | CPU µs/req | allocations/req | req/s vs nginx | req/s vs HAProxy | p99 vs nginx |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        ng, hp = results.get((sc, "nginx")), results.get((sc, "haproxy"))
        for t in targets:
            r = results.get((sc, t))
            if not r:
                continue
            vs_ng = f"{r[0] / ng[0]:.2f}x" if ng else "-"
            vs_hp = f"{r[0] / hp[0]:.2f}x" if hp else "-"
            p99_ng = f"{r[2] / ng[2]:.2f}x" if ng and ng[2] else "-"
            allocs = "-" if r[5] is None else f"{r[5]:.1f}"
            lines.append(f"| {t} | {r[0]:.0f} | {r[1]:.3f} | {r[2]:.3f} | {r[4]:.1f} | {allocs} | {vs_ng} | {vs_hp} | {p99_ng} |")
        for t in targets:
            if (t, sc) in PEER_GAPS:
                lines.append(f"| {t} | — | — | — | — | — | — | — | — |")
        gaps = [f"{t}: — ({PEER_GAPS[(t, sc)]})." for t in targets if (t, sc) in PEER_GAPS]
        if gaps:
            lines += [""] + gaps
        peers = [(t, results[(sc, t)]) for t in targets if t in PEERS and (sc, t) in results]
        flex_r = results.get((sc, "flex"))
        if peers and flex_r:
            lines += ["", "flex-gateway / " + ", / ".join(
                f"{t}: {flex_r[0] / r[0]:.2f}x requests/s, p99 {flex_r[2] / r[2]:.2f}x, CPU per request "
                f"{flex_r[4] / r[4]:.2f}x{paired(sc, sc, t)}" for t, r in peers) + "."]
        checked = [t for t in targets if t in PEERS and (sc, t) in answers]
        if checked and (sc, "flex") in answers:
            want = answers[(sc, "flex")]
            notes = []
            for t in checked:
                for (m, path, h), mine, theirs in zip(PROBES[sc], want, answers[(sc, t)]):
                    if mine == theirs:
                        continue
                    what = f"{m} {path}" + (f" ({h})" if isinstance(h, str) else "")
                    known = PEER_KNOWN.get((t, sc, what))
                    notes.append(f"{t} answers {what} with {theirs[0]}"
                                 f"{'' if theirs[1] == mine[1] else f' (X-Frame-Options {theirs[1]})'} where "
                                 f"flex-gateway answers {mine[0]}"
                                 f"{'' if theirs[1] == mine[1] else f' (X-Frame-Options {mine[1]})'}"
                                 f": {known or 'UNEXPECTED'}")
                    if not known:
                        failures.append(f"{sc}/{t}: answers differ from flex-gateway's ({what})")
            lines += ["", f"Answers checked before measuring ({len(PROBES[sc])} requests, allowed and refused): "
                      + ("; ".join(notes) if notes else "the same status codes as flex-gateway's") + "."]
        bare, flex = results.get((sc, "pingora")), results.get((sc, "flex"))
        if bare and flex:
            lines += ["", f"flex-gateway / bare Pingora: {flex[0] / bare[0]:.2f}x requests/s, p99 {flex[2] / bare[2]:.2f}x, "
                          f"CPU per request {flex[4] / bare[4]:.2f}x{paired(sc, sc, 'pingora')}."]
        base = results.get((sc, "base"))
        if base and flex:
            lines += ["", f"flex-gateway / base ({args.base_label}): {flex[0] / base[0]:.3f}x requests/s, "
                          f"p99 {flex[2] / base[2]:.2f}x, CPU per request {flex[4] / base[4]:.3f}x."]
        lines.append("")
    if "b" in args.scenarios and "c" in args.scenarios and ("b", "flex") in results and ("c", "flex") in results:
        b, c = results[("b", "flex")][0], results[("c", "flex")][0]
        lines.append(f"flex-gateway (c) vs (b): {c / b:.3f}x requests/s (1,000 routes vs 2).")
    if ("b", "flex") in results and ("f", "flex") in results:
        b, f = results[("b", "flex")], results[("f", "flex")]
        lines.append(f"flex-gateway (f) vs (b): {f[0] / b[0]:.3f}x requests/s, p99 {f[2] / b[2]:.2f}x "
                     f"(jwt-validation + api-key on the route; target >= 0.9x).")
    if ("b", "flex") in results and ("g", "flex") in results:
        b, g = results[("b", "flex")], results[("g", "flex")]
        lines.append(f"flex-gateway (g) vs (b): {g[0] / b[0]:.3f}x requests/s, p99 {g[2] / b[2]:.2f}x "
                     f"(cors + ip-allowlist of 1,000 ranges + header-injection; target >= 0.95x).")
    if ("b", "flex") in results and ("m", "flex") in results:
        b, m = results[("b", "flex")], results[("m", "flex")]
        lines.append(f"flex-gateway (m) vs (b): {m[0] / b[0]:.3f}x requests/s, p99 {m[2] / b[2]:.2f}x, "
                     f"CPU per request {m[4] / b[4]:.3f}x (a chain of five policies on the route; target >= 0.9x)"
                     f"{paired('m', 'b')}.")
    if ("b", "flex") in results and ("w", "flex") in results:
        b, w = results[("b", "flex")], results[("w", "flex")]
        lines.append(f"flex-gateway (w) vs (b): {w[0] / b[0]:.3f}x requests/s, p99 {w[2] / b[2]:.2f}x, "
                     f"CPU per request {w[4] / b[4]:.3f}x (a proxy-wasm custom policy on the route; target >= 0.85x).")
    if ("p", "flex") in results and ("q", "flex") in results:
        p, q = results[("p", "flex")], results[("q", "flex")]
        lines.append(f"flex-gateway (q) vs (p): {q[0] / p[0]:.3f}x requests/s, p99 {q[2] / p[2]:.2f}x, "
                     f"CPU per request {q[4] / p[4]:.3f}x (json-threat-protection on a 1 KB JSON body; target >= 0.9x)"
                     f"{paired('q', 'p')}.")
    for sc, what, target in (("t", "tracing, 100 % sampled", "0.9"), ("u", "tracing, 0 % sampled", "0.98")):
        if ("b", "flex") in results and (sc, "flex") in results:
            b, t = results[("b", "flex")], results[(sc, "flex")]
            lines.append(f"flex-gateway ({sc}) vs (b): {t[0] / b[0]:.3f}x requests/s, p99 {t[2] / b[2]:.2f}x, "
                         f"CPU per request {t[4] / b[4]:.3f}x ({what}; target >= {target}x){paired(sc, 'b')}.")
    for sc, base, what, target in (("x", "b", "answered from the response cache", ">= 1.5"),
                                   ("y", "v", "every request a response-cache miss, stored", ">= 0.95")):
        if (sc, "flex") in results and (base, "flex") in results:
            a, b = results[(sc, "flex")], results[(base, "flex")]
            counts = cache_results.get(sc, {})
            total = sum(counts.values()) or 1
            lines.append(f"flex-gateway ({sc}) vs ({base}): {a[0] / b[0]:.3f}x requests/s, p99 {a[2] / b[2]:.2f}x, "
                         f"CPU per request {a[4] / b[4]:.3f}x ({what}; target {target}x){paired(sc, base)}; "
                         f"hit ratio {counts.get('hit', 0) / total:.4f} "
                         f"({', '.join(f'{k} {v:.0f}' for k, v in sorted(counts.items()))}).")
    if "w" in rss:
        lines.append(f"flex-gateway peak RSS under (w): {rss['w'] / 1024:.1f} MiB.")
    if ("b", "flex") in results and ("h", "flex") in results:
        b, h = results[("b", "flex")], results[("h", "flex")]
        lines.append(f"flex-gateway (h) vs (b): {h[0] / b[0]:.3f}x requests/s, p99 {h[2] / b[2]:.2f}x "
                     f"(rate limit per client over 100,000 keys; target >= 0.9x).")
    if ("b", "flex") in results and ("l", "flex") in results:
        b, l = results[("b", "flex")], results[("l", "flex")]
        lines.append(f"flex-gateway (l) vs (b): {l[0] / b[0]:.3f}x requests/s, p99 {l[2] / b[2]:.2f}x, "
                     f"CPU per request {l[4] / b[4]:.3f}x (the same config as Flex resources; target >= 0.95x).")
    if ("h", "flex") in results and ("i", "flex") in results:
        h, i = results[("h", "flex")], results[("i", "flex")]
        lines.append(f"flex-gateway (i) vs (h): {i[0] / h[0]:.3f}x requests/s, p99 {i[2] / h[2]:.2f}x "
                     f"(the same limit counted in Redis instead of in the process).")
    if "b" in rss and "h" in rss:
        lines.append(f"flex-gateway peak RSS: (b) {rss['b'] / 1024:.1f} MiB, (h) with 100,000 keys {rss['h'] / 1024:.1f} MiB.")
    if rss:
        lines.append(f"flex-gateway RSS: idle {rss.get('idle', 0) / 1024:.1f} MiB; peak under (e) {rss.get('e', 0) / 1024:.1f} MiB.")
    report = "\n".join(lines)
    print(report)
    if args.out:
        open(args.out, "w").write(report + "\n")
    if failures:
        print("errors during the benchmark:\n  " + "\n  ".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
