#!/usr/bin/env bash
# The GPU figures, one command, on any CUDA machine (no weights, no network needed). With a GPU
# for a short time only, run benchmarks/gpu_quick.sh first (the targets' figures within 7 minutes).
#
#   pip install -r requirements/runtime.txt -r requirements/int4.txt -c requirements/lock.txt  # PyPI torch: CUDA build
#   bash benchmarks/gpu.sh                      # ~15-20 min on an H100; writes benchmarks/results/*_cuda.json
#
# 1. engine vs reference path, LISA-7B-shaped, 4-bit (the issue's targets) and fp16, same run;
# 2. 7B and 13B shapes x fp16, bf16, int8, int4: per-phase latency, end to end, peak GPU memory;
# 3. SAM ViT-H encoder with eager vs SDPA attention, 7B int4 prompt-prefix KV cache; then the README tables are regenerated.
# Extra arguments go to every script (e.g. --repeats 3 --note "shared GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'CUDA is not available')"
"$PYTHON" -P benchmarks/engine_vs_reference.py --shape 7b --precision int4 --device cuda "$@"
"$PYTHON" -P benchmarks/engine_vs_reference.py --shape 7b --precision fp16 --device cuda "$@"
"$PYTHON" -P benchmarks/full_size.py --device cuda "$@"
"$PYTHON" -P benchmarks/sam_attention.py --device cuda --dtype fp16 --encoder "$@"
"$PYTHON" -P benchmarks/prefix_cache.py --shape 7b --precision int4 --device cuda "$@"
"$PYTHON" -P benchmarks/report.py --update-readme
