#!/usr/bin/env bash
# A CPU profile of flex-gateway under a load scenario (default (b), the
# user's config): `perf record -g` during one measured run of load.py, a
# flame graph SVG (inferno, installed with `cargo install inferno` when
# missing) and where the samples go by component, per request.
#
#   benches/profile.sh [SCENARIO] [OUT_PREFIX]
#   FLEXGW_BENCH_PROFILE=release benches/profile.sh b benches/flame-b
set -euo pipefail
cd "$(dirname "$0")/.."
scenario="${1:-b}"
out="${2:-benches/flame-$scenario-$(git rev-parse --short HEAD)}"
command -v perf >/dev/null || { echo "profile.sh: needs perf (apt-get install linux-perf)" >&2; exit 1; }
command -v inferno-flamegraph >/dev/null || cargo install inferno --locked
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# the measured run: 10 s, one repetition, with perf attached to flex
benches/load.sh --scenarios "$scenario" --targets flex --reps 1 --duration 10 --perf "$work" \
    | tee "$work/report.md" >&2
perf script -i "$work/perf-$scenario.data" 2>/dev/null | inferno-collapse-perf --kernel > "$work/folded.txt"
inferno-flamegraph --title "flex-gateway, scenario ($scenario), $(git rev-parse --short HEAD)" \
    < "$work/folded.txt" > "$out.svg"
cpu=$(grep -E '^\| flex \|' "$work/report.md" | head -1 | awk -F'|' '{print $6}' | tr -d ' ')
python3 benches/profile_breakdown.py "$work/folded.txt" "${cpu:-0}" | tee "$out.md"
echo "flame graph: $out.svg; breakdown: $out.md" >&2
