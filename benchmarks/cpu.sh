#!/usr/bin/env bash
# Every CPU benchmark in sequence, as committed in benchmarks/results/ (about 30 minutes on 2 cores):
#
#   bash benchmarks/cpu.sh [--note "machine shared with test runs"]
#
# Runs one after another (never in parallel: they would disturb each other's timings),
# then regenerates the README tables. STREAM_MINUTES (default 5) sets the soak length.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source scripts/ros_env.sh --isolated
note=()
if [ "${1:-}" = "--note" ]; then note=(--note "$2"); fi
python -P benchmarks/plumbing.py "${note[@]}"
python -P benchmarks/plumbing.py --breakdown --requests 100 "${note[@]}"
python -P benchmarks/engine_vs_reference.py --shape tiny "${note[@]}"
python -P benchmarks/engine_vs_reference.py --shape mid --repeats 5 "${note[@]}"
python -P benchmarks/prefix_cache.py --shape mid "${note[@]}"
python -P benchmarks/tiny_cpu.py "${note[@]}"
python -P benchmarks/full_size.py --smoke "${note[@]}"
python -P benchmarks/sam_attention.py --repeats 3 "${note[@]}"
for dtype in fp32 bf16; do
  python -P benchmarks/sam_attention.py --repeats 3 --compile --dtype "$dtype" \
    --out "benchmarks/results/sam_attention_cpu_${dtype}_compiled.json" "${note[@]}"
done
python -P benchmarks/compiled_decode.py --shape tiny "${note[@]}"
python -P benchmarks/compiled_decode.py --shape mid "${note[@]}"
python -P benchmarks/stream.py --minutes "${STREAM_MINUTES:-5}" "${note[@]}"
python -P benchmarks/report.py --update-readme
