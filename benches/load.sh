#!/usr/bin/env bash
# Side-by-side load benchmark: backend alone, nginx, HAProxy and flex-gateway,
# one worker each, HTTP/1.1 keep-alive to the same nginx backend, loopback.
# Installs nginx, haproxy and wrk from Debian when missing (as root).
#
#   benches/load.sh                 # full run: every scenario x 3 repetitions
#   benches/load.sh --smoke         # 1 s per measurement, 1 repetition (CI)
#   benches/load.sh --duration 10 --reps 5 --out results.md
#   benches/load.sh --compare eee95cb --scenarios ab   # this tree vs that commit, side by side
#   benches/load.sh --workers 2 --out results-2w.md    # two workers per proxy (scaling)
#   benches/load.sh --workers 2 --pin-client 3         # wrk alone on CPU 3, the servers on the others
#   benches/load.sh --scenarios btu --interleave --reps 7   # rounds b,t,u,b,t,u,...: ratios paired by round
#   benches/load.sh --peers --scenarios abme   # pingap and Caddy beside us (installs them)
# --compare REV builds REV's flex-gateway from `git archive` under
# target/compare/ (its own target directory: a first build of Pingora takes
# ~10 min) and measures it as target `base` beside `flex` in every scenario;
# the report prints flex/base ratios of requests/s, p99 and CPU per request.
# flex-gateway is built with the `dist` profile (LTO, as shipped);
# FLEXGW_BENCH_PROFILE=release measures the faster-to-build test profile.
set -euo pipefail
cd "$(dirname "$0")/.."
.ci/deps nginx haproxy wrk openssl redis-server
for tool in nginx haproxy wrk openssl redis-server; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || {
        echo "flex-gateway bench: $tool is missing (apt-get install -y $tool)" >&2; exit 1; }
done
profile=${FLEXGW_BENCH_PROFILE:-dist}
PINGAP_VERSION=0.16.1  # the newest on crates.io (2026-12); it needs Rust 1.96
PINGAP_RUST=1.96.0
cargo build --profile "$profile" --bin flex-gateway --example bare_pingora --quiet
extra=()
if [ "${1:-}" = "--compare" ]; then
    rev=${2:?"--compare needs a commit"}
    shift 2
    sha=$(git rev-parse --short "$rev^{commit}")
    src="target/compare/src-$sha"
    if [ ! -d "$src" ]; then
        mkdir -p "$src"
        git archive "$sha" | tar -x -C "$src"
    fi
    echo "flex-gateway bench: building $rev ($sha) for comparison" >&2
    (cd "$src" && CARGO_TARGET_DIR="$PWD/../target" cargo build --profile "$profile" --bin flex-gateway --quiet)
    cp "target/compare/target/$profile/flex-gateway" "target/compare/flex-gateway-$sha"
    extra=(--base "target/compare/flex-gateway-$sha" --base-label "$sha")
fi
for arg in "$@"; do
    if [ "$arg" = "--peers" ]; then
        # The peer gateways (benches/peers/): Caddy from Debian, pingap built
        # once from crates.io with the toolchain it needs, into target/peers/
        # (~15 min on 2 cores the first time; never in CI).
        .ci/deps caddy protobuf-compiler  # pingap's etcd client compiles .proto files
        command -v caddy >/dev/null || { echo "flex-gateway bench: caddy is missing (apt-get install -y caddy)" >&2; exit 1; }
        pingap=target/peers/pingap/bin/pingap
        if [ ! -x "$pingap" ]; then
            echo "flex-gateway bench: building pingap $PINGAP_VERSION (rust $PINGAP_RUST) into target/peers/" >&2
            rustup toolchain install "$PINGAP_RUST" --profile minimal
            CARGO_TARGET_DIR="$PWD/target/peers/build" cargo "+$PINGAP_RUST" install pingap \
                --version "$PINGAP_VERSION" --locked --root "$PWD/target/peers/pingap"
        fi
        extra+=(--pingap "$pingap" --caddy "$(command -v caddy)")
    fi
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec python3 benches/load.py --gateway "target/$profile/flex-gateway" \
    --bare "target/$profile/examples/bare_pingora" "${extra[@]}" "$@"
