#!/usr/bin/env bash
# The GPU figures that matter most, in one command that ends within 7 minutes (no weights, no
# network: random weights in the released shapes, as benchmarks/gpu.sh):
#
#   bash benchmarks/gpu_quick.sh [--note "..."]            # CUDA; writes benchmarks/results/*_cuda.json
#   bash benchmarks/gpu_quick.sh --dry-run --out-dir DIR   # the same steps on the CPU, tiny shapes (the tests run it)
#
# Most important first; each JSON is (re)written as soon as figures exist, so a run cut off still leaves them:
#  1. engine vs reference path, LISA-7B shape, int4, 640x480 -> engine_vs_reference_7b_int4_cuda.json, written
#     after the load (GPU weights), after the 8-token answer (engine, 2nd instruction on the same frame,
#     reference, peak GPU memory) and after the 64-token answer ("complete": true at the end);
#  2. SAM ViT-H image encoder at 1024, fp16, eager vs SDPA -> sam_attention_cuda_fp16.json.
# Each step has a time budget (STEP1_S=290, STEP2_S=75 seconds; 10 s more to die when killed), so the
# command ends within 7 minutes whatever the machine; a step that fails or overruns does not stop the
# next one, and the exit status says whether any did. The full sweep: bash benchmarks/gpu.sh (15-20 min).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
dry_run=0
out_dir=benchmarks/results
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --out-dir) out_dir="$2"; shift ;;
    *) extra+=("$1") ;;
  esac
  shift
done
if [ "$dry_run" = 1 ]; then
  evr=(--shape tiny-random --precision int4 --device cpu --repeats 1 --warmup 0 --long-tokens 12
       --width 64 --height 48 --out "$out_dir/engine_vs_reference_tiny-random_int4_cpu.json")
  sam=(--sam tiny --device cpu --dtype fp32 --encoder --repeats 1 --out "$out_dir/sam_attention_cpu_fp32_tiny.json")
else
  "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'CUDA is not available')" || exit 2
  evr=(--shape 7b --precision int4 --device cuda --repeats 3 --out "$out_dir/engine_vs_reference_7b_int4_cuda.json")
  sam=(--device cuda --dtype fp16 --encoder --repeats 5 --out "$out_dir/sam_attention_cuda_fp16.json")
fi
mkdir -p "$out_dir"
failed=0
step() {  # step BUDGET_S SCRIPT ARGS...
  local budget="$1"
  shift
  echo "== $1 (budget ${budget} s)"
  local status=0
  timeout --kill-after=10 "$budget" "$PYTHON" -P "$@" || status=$?
  if [ "$status" != 0 ]; then
    echo "!! $1 ended with status $status (124: over its budget); its JSON keeps what was measured"
    failed=1
  fi
}
step "${STEP1_S:-290}" benchmarks/engine_vs_reference.py "${evr[@]}" "${extra[@]}"
step "${STEP2_S:-75}" benchmarks/sam_attention.py "${sam[@]}" "${extra[@]}"
exit "$failed"
