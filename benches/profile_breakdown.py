"""Where the CPU samples of a folded perf profile go, by component, and
what that is per request given the CPU microseconds per request.

Self time goes to the component of the innermost frame: the kernel, our
code (flex_gateway), Pingora, tokio, the allocator, libc, OpenSSL, other
Rust crates. Inclusive time of each of our hooks is reported too (from
DWARF call graphs: release builds keep no frame pointers).

    python3 benches/profile_breakdown.py folded.txt CPU_US_PER_REQUEST
"""
import re, sys
from collections import Counter

RULES = [
    ("kernel", lambda f: f.endswith("_[k]") or f.startswith("[k]") or "[kernel" in f),
    ("flex-gateway (ours)", lambda f: "flex_gateway" in f),
    ("Pingora", lambda f: "pingora" in f),
    ("tokio", lambda f: "tokio" in f),
    ("allocator (mimalloc)", lambda f: "mi_" in f or "mimalloc" in f),
    ("OpenSSL", lambda f: "libcrypto" in f or "libssl" in f or f.startswith("ossl_")),
    ("libc", lambda f: "libc" in f or f.startswith("__") or f in ("memcpy", "memmove", "memset")),
    ("http / httparse / bytes", lambda f: re.search(r"\b(http|httparse|bytes)::", f) is not None),
]


def component(frame):
    for name, test in RULES:
        if test(frame):
            return name
    return "other (std, other crates, unresolved)"


# Our hooks, inclusive (with what they call: header maps, allocation, the
# Watched stream's reads include the kernel's). The connection layer's
# `Guarded::process_new` wraps every request, so it is not one of them.
PHASES = [
    ("request_filter (routing, policies' request hooks)", "ProxyHttp>::request_filter"),
    ("proxy_upstream_filter (service, limits, target)", "ProxyHttp>::proxy_upstream_filter"),
    ("upstream_peer", "ProxyHttp>::upstream_peer"),
    ("upstream_request_filter (headers upstream)", "ProxyHttp>::upstream_request_filter"),
    ("response_filter (headers back, policies)", "ProxyHttp>::response_filter"),
    ("logging (metrics, access log)", "ProxyHttp>::logging"),
    ("connection layer: Watched stream (deadlines)", "flex_gateway::connection::watched::Watched"),
]


def main():
    path, cpu = sys.argv[1], float(sys.argv[2])
    selfs, total = Counter(), 0
    phases = Counter()
    for line in open(path):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        n = int(n)
        frames = stack.split(";")
        total += n
        selfs[component(frames[-1])] += n
        for name, pattern in PHASES:
            if any(pattern in f for f in frames):
                phases[name] += n
    print(f"| component (self time, innermost frame) | share of samples | µs per request |")
    print("|---|---:|---:|")
    for name, n in selfs.most_common():
        print(f"| {name} | {100 * n / total:.1f} % | {cpu * n / total:.1f} |")
    print(f"| **total** ({total} samples) | 100 % | {cpu:.1f} |")
    print()
    print()
    print("| our hook (inclusive) | share of samples | µs per request |")
    print("|---|---:|---:|")
    for name, _ in PHASES:
        n = phases[name]
        print(f"| {name} | {100 * n / total:.1f} % | {cpu * n / total:.1f} |")
    n = sum(phases.values())
    print(f"| **our hooks together** | {100 * n / total:.1f} % | {cpu * n / total:.1f} |")


if __name__ == "__main__":
    main()
