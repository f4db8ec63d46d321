"""Checks packaging/helm/flex-gateway (run through packaging/helm/check-chart).

- `helm lint --strict` and `helm template` with Helm 4's own Go code (the
  helm-python-sdk package binds its SDK; no helm binary is needed);
- every rendered manifest validated against the Kubernetes API schemas of
  the oldest Kubernetes the chart supports (1.30: the preStop sleep action)
  and the newest kubernetes-validate knows, strict (unknown fields fail);
- what each set of values must render (probes, security context, drain
  arithmetic, HPA, PDB, shared Redis, existing ConfigMaps and Secrets);
- the rendered ConfigMap's files validated by the real `flex-gateway
  validate` (--binary);
- with --image, the rendered Deployment's container run by podman as a
  kubelet would run it: user, read-only root, dropped capabilities, env,
  args, the ConfigMap mounted in the kubelet's `..data` layout, the
  emptyDir as a tmpfs; its probes and Service port answered, its metrics
  scraped where the annotations say, and a stop inside the grace period.

Exit 0 when every check passes; otherwise each failure is printed.
"""

import argparse
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import helm_python as helm
import kubernetes_validate
import yaml

CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flex-gateway")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PODMAN_CONF = os.path.join(REPO, "packaging/container/podman-ci.conf")
KUBE_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print(f"FAIL: {what}", file=sys.stderr)
    return ok


def gateway_yaml(port=8081, upstream="http://backend.default.svc:8080"):
    return (
        "apiVersion: gateway.mulesoft.com/v1alpha1\n"
        "kind: Gateway\n"
        "metadata: {name: chart}\n"
        "spec:\n"
        f"  listeners: [{{name: http, port: {port}, protocol: HTTP, host: 0.0.0.0}}]\n"
        "  routes:\n"
        "    - id: all\n"
        "      path: /*\n"
        f"      upstream: {{url: \"{upstream}\"}}\n"
        "      policies:\n"
        "        - rate-limiting: {maxRequests: 100, period: 60}\n"
    )


def render(values):
    chart = helm.Chart.load(CHART)
    out = chart.render(values, name="demo", namespace="gw")
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs


def by_kind(docs):
    kinds = {}
    for d in docs:
        kinds.setdefault(d["kind"], []).append(d)
    return kinds


def validate_schemas(case, docs):
    for d in docs:
        for v in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(d, v, strict=True)
            except kubernetes_validate.ValidationError as e:
                check(False, f"{case}: {d['kind']} invalid for Kubernetes {v}: {e.message} at {list(e.path)}")


def container(deployment):
    return deployment["spec"]["template"]["spec"]["containers"][0]


def env_of(c):
    return {e["name"]: e for e in c.get("env", [])}


def validate_config_files(case, configmap, binary):
    if not binary:
        return
    d = tempfile.mkdtemp(prefix="flexgw-chart-")
    try:
        for name, text in configmap["data"].items():
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        env = dict(os.environ, FLEXGW_REDIS_PASSWORD="secret")
        r = subprocess.run([binary, "validate", "-c", d], capture_output=True, text=True, env=env)
        check(r.returncode == 0, f"{case}: flex-gateway validate of the rendered ConfigMap: {r.stdout}{r.stderr}")
    finally:
        shutil.rmtree(d)


def static_checks(binary):
    report = helm.lint(CHART, {"gateway": {"config": {"gateway.yaml": gateway_yaml()}}}, strict=True)
    bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + report.get("errors", [])
    check(not bad, f"helm lint --strict: {bad}")

    # A: the defaults with a config
    docs = render({"gateway": {"config": {"gateway.yaml": gateway_yaml()}}})
    validate_schemas("defaults", docs)
    k = by_kind(docs)
    check(sorted(k) == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service"], f"defaults render {sorted(k)}")
    dep = k["Deployment"][0]
    c = container(dep)
    pod = dep["spec"]["template"]["spec"]
    check(dep["spec"].get("replicas") == 2, "defaults: replicaCount 2")
    check(c["image"] == "flex-gateway:0.1.0", f"image defaults to the appVersion: {c['image']}")
    check(c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "admin"}, "readiness on the admin /ready")
    check(c["livenessProbe"]["httpGet"] == {"path": "/live", "port": "admin"}, "liveness on the admin /live")
    sc = c["securityContext"]
    check(sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, "read-only root, no privilege escalation")
    check(sc["capabilities"]["drop"] == ["ALL"], "all capabilities dropped")
    psc = pod["securityContext"]
    check(psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001, "non-root user 10001")
    check(psc["seccompProfile"] == {"type": "RuntimeDefault"}, "seccomp RuntimeDefault")
    env = env_of(c)
    check(env["FLEXGW_GRACE_PERIOD"]["value"] == "20s", "drainSeconds is the gateway's grace period")
    check(env["FLEXGW_ADMIN_ADDRESS"]["value"] == "0.0.0.0:9901", "admin on the pod's addresses")
    grace = pod["terminationGracePeriodSeconds"]
    check(grace > 20 + 5 + 5, f"terminationGracePeriodSeconds {grace} covers preStop 5 + drain 20 + shutdown 5")
    check(c["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}, "preStop sleep while endpoints update")
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    check(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == "9901", "scrape annotations")
    check("checksum/config" not in ann, "hot reload by default: no checksum annotation")
    check(dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}, "surge before drain")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    check(ports == {"http": 8081, "admin": 9901}, f"container ports {ports}")
    svc = k["Service"][0]
    check([p["targetPort"] for p in svc["spec"]["ports"]] == ["http"], "the Service exposes the listener, not the admin port")
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    check(mounts == {"config": "/etc/flex-gateway/conf.d", "tmp": "/tmp"}, f"mounts {mounts}")
    check(pod["automountServiceAccountToken"] is False, "no service account token")
    check(k["PodDisruptionBudget"][0]["spec"]["maxUnavailable"] == 1, "PDB maxUnavailable 1")
    validate_config_files("defaults", k["ConfigMap"][0], binary)

    # B: autoscaling with a shared Redis behind a Secret
    docs = render({
        "gateway": {"config": {"gateway.yaml": gateway_yaml()}},
        "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12},
        "sharedStorage": {"redis": {"enabled": True, "address": "redis.gw.svc:6379", "existingSecret": "redis-auth"}},
    })
    validate_schemas("autoscaling", docs)
    k = by_kind(docs)
    hpa = k["HorizontalPodAutoscaler"][0]
    check(hpa["apiVersion"] == "autoscaling/v2", "HPA autoscaling/v2")
    check((hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12), "HPA bounds from values")
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"]}
    check(targets == {"cpu": 70, "memory": 80}, f"HPA targets {targets}")
    check(hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300, "HPA scale-down behaviour")
    dep = k["Deployment"][0]
    check("replicas" not in dep["spec"], "no replicas under an HPA")
    redis_env = env_of(container(dep)).get("FLEXGW_REDIS_PASSWORD", {})
    check(redis_env.get("valueFrom", {}).get("secretKeyRef") == {"name": "redis-auth", "key": "password"}, "Redis password from the Secret")
    cm = k["ConfigMap"][0]
    shared = yaml.safe_load(cm["data"].get("zz-helm-shared-storage.yaml", "{}"))
    check(shared.get("spec", {}).get("sharedStorage", {}).get("redis", {}).get("address") == "redis.gw.svc:6379", "Configuration with the shared Redis")
    validate_config_files("autoscaling", cm, binary)

    # C: an existing ConfigMap; D: with a shared Redis too (projected)
    docs = render({"gateway": {"existingConfigMap": "my-gateway-conf"}})
    validate_schemas("existingConfigMap", docs)
    k = by_kind(docs)
    check("ConfigMap" not in k, "no ConfigMap rendered over an existing one")
    vols = {v["name"]: v for v in k["Deployment"][0]["spec"]["template"]["spec"]["volumes"]}
    check(vols["config"].get("configMap") == {"name": "my-gateway-conf"}, "the existing ConfigMap is mounted")
    docs = render({"gateway": {"existingConfigMap": "my-gateway-conf"},
                   "sharedStorage": {"redis": {"enabled": True, "address": "redis:6379"}}})
    validate_schemas("existingConfigMap+redis", docs)
    vols = {v["name"]: v for v in by_kind(docs)["Deployment"][0]["spec"]["template"]["spec"]["volumes"]}
    names = [s["configMap"]["name"] for s in vols["config"].get("projected", {}).get("sources", [])]
    check(names == ["my-gateway-conf", "demo-flex-gateway"], f"projected config sources {names}")
    docs = render({"gateway": {"existingSecret": "my-gateway-secret"}})
    validate_schemas("existingSecret", docs)
    vols = {v["name"]: v for v in by_kind(docs)["Deployment"][0]["spec"]["template"]["spec"]["volumes"]}
    check(vols["config"].get("secret") == {"secretName": "my-gateway-secret"}, "an existing Secret is mounted")

    # E: rollouts on config change
    docs = render({"gateway": {"config": {"gateway.yaml": gateway_yaml()}, "rolloutOnConfigChange": True}})
    ann = by_kind(docs)["Deployment"][0]["spec"]["template"]["metadata"]["annotations"]
    check(len(ann.get("checksum/config", "")) == 64, "checksum annotation with rolloutOnConfigChange")

    # F: no configuration is an install-time error, not a crash loop
    try:
        render({})
        check(False, "rendering without any configuration must fail")
    except helm.HelmError as e:
        check("no configuration" in str(e), f"the no-config error says so: {e}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def podman(*args, check_rc=True):
    r = subprocess.run(["podman", *args], capture_output=True, text=True,
                       env=dict(os.environ, CONTAINERS_CONF=PODMAN_CONF))
    if check_rc and r.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: {r.stdout}{r.stderr}")
    return r


def get(port, path, timeout=2):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None, b""


def configmap_dir(data):
    """The files of a ConfigMap as the kubelet lays them out."""
    d = tempfile.mkdtemp(prefix="flexgw-chart-cm-")
    version = "..2026_12_02_00_00_00.1"
    os.mkdir(os.path.join(d, version))
    for name, text in data.items():
        with open(os.path.join(d, version, name), "w") as f:
            f.write(text)
        os.symlink(os.path.join("..data", name), os.path.join(d, name))
    os.symlink(version, os.path.join(d, "..data"))
    os.chmod(d, 0o755)
    return d


class Backend(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"backend":"ok"}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def run_deployment(image):
    """The rendered Deployment's container, run by podman as a kubelet would."""
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    listen, admin = free_port(), free_port()
    docs = render({
        "gateway": {
            "config": {"gateway.yaml": gateway_yaml(listen, f"http://127.0.0.1:{backend.server_address[1]}")},
            "ports": [{"name": "http", "containerPort": listen}],
            "adminPort": admin,
            "drainSeconds": 2,
            "preStopSleepSeconds": 0,
        },
    })
    k = by_kind(docs)
    dep, cm = k["Deployment"][0], k["ConfigMap"][0]
    pod = dep["spec"]["template"]["spec"]
    c = container(dep)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    name = f"flexgw-chart-{os.getpid()}"
    conf = configmap_dir(cm["data"])
    psc, sc = pod["securityContext"], c["securityContext"]
    args = ["run", "-d", "--name", name, "--network", "host",
            "--user", f"{psc['runAsUser']}:{psc['runAsGroup']}"]
    if sc.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    for cap in sc.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", cap]
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    for e in c.get("env", []):
        args += ["-e", f"{e['name']}={e['value']}"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for m in c["volumeMounts"]:
        v = volumes[m["name"]]
        if "configMap" in v:
            args += ["-v", f"{conf}:{m['mountPath']}:ro"]
        elif "emptyDir" in v:
            size = v["emptyDir"].get("sizeLimit", "16Mi").replace("Mi", "m")
            args += ["--tmpfs", f"{m['mountPath']}:rw,size={size},mode=1777"]
    check(c["image"].startswith("flex-gateway:"), f"rendered image {c['image']}")
    podman("rm", "-f", name, check_rc=False)
    podman(*args, image, *c["args"])
    try:
        started = time.time()
        budget = c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
        probe = c["readinessProbe"]["httpGet"]
        while get(ports[probe["port"]], probe["path"])[0] != 200:
            if time.time() - started > budget:
                check(False, f"readinessProbe never passed:\n{podman('logs', name).stderr}")
                return
            time.sleep(0.2)
        live = c["livenessProbe"]["httpGet"]
        check(get(ports[live["port"]], live["path"])[0] == 200, "livenessProbe answers 200")
        status, body = get(ports[dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"]], "/anything")
        check((status, body) == (200, b'{"backend":"ok"}'), f"the listener port proxies: {status} {body!r}")
        ann = dep["spec"]["template"]["metadata"]["annotations"]
        status, body = get(int(ann["prometheus.io/port"]), ann["prometheus.io/path"])
        check(status == 200 and b"flexgw_requests_total" in body, "metrics where the scrape annotations say")
        grace = pod["terminationGracePeriodSeconds"]
        t = time.time()
        podman("stop", "-t", str(grace), name)
        took = time.time() - t
        code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        check(code == "0", f"exit code after SIGTERM: {code}")
        check(took < grace, f"stopped in {took:.1f}s, inside terminationGracePeriodSeconds {grace}")
        print(f"deployment container: ready in {time.time() - started - took:.1f}s, stopped in {took:.1f}s (grace {grace}s)")
    finally:
        podman("rm", "-f", "-t", "0", name, check_rc=False)
        shutil.rmtree(conf, ignore_errors=True)
        backend.shutdown()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", help="flex-gateway binary: validate the rendered config files")
    p.add_argument("--image", help="image tag: run the rendered Deployment's container with podman")
    a = p.parse_args()
    print(f"Helm SDK {helm.helm_sdk_version()}; Kubernetes schemas {', '.join(KUBE_VERSIONS)}")
    static_checks(a.binary)
    if a.image:
        run_deployment(a.image)
    if failures:
        print(f"{len(failures)} chart check(s) failed", file=sys.stderr)
        return 1
    print("chart checks: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
