#!/usr/bin/env bash
# Memory held per idle keep-alive client connection: 10,000 connections to
# flex-gateway (one request each, then idle), RSS before and after.
#
#   benches/idle.sh [--connections N]
# Builds with FLEXGW_BENCH_PROFILE (default: release).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${FLEXGW_BENCH_PROFILE:-release}
cargo build --profile "$profile" --bin flex-gateway --bin catalog-backend --quiet
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec python3 benches/idle.py --gateway "target/$profile/flex-gateway" \
    --backend "target/$profile/catalog-backend" "$@"
