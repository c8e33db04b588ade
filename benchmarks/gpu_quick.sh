#!/usr/bin/env bash
# The GPU figures that matter most, in one command that ends within 7 minutes, on a CUDA machine with no
# internet that brings its own PyTorch (an NVIDIA container, a Jetson, a GPU box). No weights: random
# weights in the released shapes, as benchmarks/gpu.sh.
#
#   bash benchmarks/gpu_quick.sh [--wheels DIR] [--note "..."]   # CUDA; writes benchmarks/results/*_cuda.json
#   bash benchmarks/gpu_quick.sh --dry-run --out-dir DIR [--wheels DIR]  # the same steps on the CPU, tiny shapes
#
# Installs nothing from an index and never touches the machine's torch. With --wheels DIR (or LISA_WHEELS=DIR),
# a folder made beforehand on a connected machine by `scripts/offline_wheels.py DIR --gpu-check`, the project's
# other packages (transformers, bitsandbytes, segment-anything, torchao) are installed from that folder alone
# (pip --no-index) into a fresh venv (LISA_GPU_VENV, default /tmp/lisa-gpu-check-venv) that sees the machine's
# own packages behind its own: the folder's versions win, torch stays the machine's (pinned to its version),
# anything else missing is an error that names it. Without a folder, the machine's packages are used as they are.
#
# Most important first; each JSON is (re)written as soon as figures exist, so a run cut off still leaves them:
#  1. LISA-7B shape, 640x480, bitsandbytes int4: engine vs reference path, 8- and 64-token answers, peak GPU
#     memory, decode tokens/s -> engine_vs_reference_7b_int4_cuda.json;
#  2. the same in the second 4-bit backend with the compiled decode step (engine options model.quantization
#     torchao, model.compile true; engine only) -> engine_vs_reference_7b_int4_torchao_compiled_cuda.json;
#  3. the second backend eager -> engine_vs_reference_7b_int4_torchao_cuda.json;
#  4. bf16 -> engine_vs_reference_7b_bf16_cuda.json;
#  5. SAM ViT-H image encoder at 1024, fp16: eager vs SDPA vs torch.compile -> sam_attention_cuda_fp16.json;
#  6. QLoRA training steps of `lisa-ros finetune --precision int4 --gradient-checkpointing` on the LISA-7B shape:
#     seconds per step and peak GPU memory -> qlora_step_7b_cuda.json.
# Each step has a time budget (STEP1_S..STEP6_S seconds, below; 10 s more to die when killed), so the command
# ends within 7 minutes whatever the machine; a step that fails or overruns does not stop the next one, and the
# exit status says whether any did. Then `benchmarks/report.py` renders the rows side by side.
# The full sweep: bash benchmarks/gpu.sh (15-20 min).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
dry_run=0
out_dir=benchmarks/results
wheels="${LISA_WHEELS:-}"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --out-dir) out_dir="$2"; shift ;;
    --wheels) wheels="$2"; shift ;;
    *) extra+=("$1") ;;
  esac
  shift
done

# The machine's packages behind a fresh venv's own, then the project's from the folder, with no index.
install_from_folder() {
  local venv="${LISA_GPU_VENV:-${TMPDIR:-/tmp}/lisa-gpu-check-venv}"
  [ -d "$wheels" ] || { echo "!! no wheel folder at $wheels (make it with scripts/offline_wheels.py DIR --gpu-check)"; exit 2; }
  if compgen -G "$wheels/torch-*.whl" >/dev/null; then
    echo "!! $wheels holds a torch wheel: the GPU check uses the machine's torch (build the folder with --gpu-check)"
    exit 2
  fi
  echo "== project packages from $wheels (no index) into $venv"
  rm -rf "$venv"
  "$PYTHON" -m venv --without-pip "$venv" || exit 2
  # One .pth line that runs: the machine's site directories, their own .pth files processed, after the venv's.
  "$PYTHON" - "$venv" <<'PY' || exit 2
import glob, json, site, sys
dirs = [p for p in dict.fromkeys(site.getsitepackages() + sys.path) if p.endswith(("site-packages", "dist-packages"))]
(target,) = glob.glob(f"{sys.argv[1]}/lib/python*/site-packages")
with open(f"{target}/zz_machine_packages.pth", "w") as pth:
    pth.write(f"import site; list(map(site.addsitedir, {json.dumps(dirs)}))\n")  # no comprehension: exec scope
PY
  local machine_torch
  machine_torch="$("$PYTHON" -c 'import torch; print(torch.__version__)')" || { echo "!! no torch on this machine"; exit 2; }
  local pins="$venv/pins.txt"
  echo "torch==$machine_torch" >"$pins"
  local wheel name version
  for wheel in "$wheels"/*.whl; do  # the folder's versions win over the machine's (name-version-...whl)
    [ -e "$wheel" ] || continue
    IFS=- read -r name version _ <<<"${wheel##*/}"
    echo "$name==$version" >>"$pins"
  done
  local requirements=(-r requirements/runtime.txt -r requirements/int4.txt)
  [ -f requirements/torchao.txt ] && requirements+=(-r requirements/torchao.txt)
  "$venv/bin/python" -m pip --isolated install --quiet --no-index --find-links "$wheels" --only-binary=:all: \
    --disable-pip-version-check --no-warn-script-location -c "$pins" "${requirements[@]}" || {
    echo "!! the folder and this machine's packages do not satisfy the requirements (the line above names what"
    echo "   is missing): rebuild the folder with scripts/offline_wheels.py --gpu-check --provided NAME for less"
    exit 2
  }
  "$venv/bin/python" -c '
import sys, torch
if torch.__version__ != sys.argv[1]:
    sys.exit(f"torch {torch.__version__} in the venv is not the machine torch {sys.argv[1]}")
print(f"torch {torch.__version__} (the machine one, {torch.__file__})")' "$machine_torch" || exit 2
  echo "from the folder: $(cd "$venv"/lib/python*/site-packages && ls -d *.dist-info 2>/dev/null | sed 's/\.dist-info$//' \
    | tr '\n' ' ')"
  PYTHON="$venv/bin/python"
}

# The oldest torch the check supports (benchmarks/torch_api.py OLDEST_TORCH: torchao's kernels load from 2.11 on;
# test/benchmarks/test_torch_api.py checks the code's torch calls against 2.11's sources).
"$PYTHON" -c '
import sys, torch
have = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
sys.exit(0 if have >= (2, 11) else f"torch {torch.__version__}: the GPU check needs torch >= 2.11")' || exit 2
if [ -n "$wheels" ]; then
  install_from_folder
fi
if [ "$dry_run" = 1 ]; then
  shape=(--shape tiny-random --device cpu --repeats 1 --warmup 0 --long-tokens 12 --width 64 --height 48)
  json() { echo "$out_dir/engine_vs_reference_tiny-random_$1_cpu.json"; }
  sam=(--sam tiny --device cpu --dtype fp32 --encoder --compile --compile-backend aot_eager --repeats 1
       --out "$out_dir/sam_attention_cpu_fp32_tiny.json")
  qlora=(--shape tiny-random --device cpu --steps 2 --width 64 --height 48
         --out "$out_dir/qlora_step_tiny-random_cpu.json")
else
  "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'CUDA is not available')" || exit 2
  shape=(--shape 7b --device cuda --repeats 3)
  json() { echo "$out_dir/engine_vs_reference_7b_$1_cuda.json"; }
  sam=(--device cuda --dtype fp16 --encoder --compile --repeats 5 --out "$out_dir/sam_attention_cuda_fp16.json")
  qlora=(--shape 7b --device cuda --steps 3 --out "$out_dir/qlora_step_7b_cuda.json")
fi
mkdir -p "$out_dir"
failed=0
step() {  # step BUDGET_S SCRIPT ARGS...
  local budget="$1"
  shift
  echo "== $1 ${*:2} (budget ${budget} s)"
  local status=0
  timeout --kill-after=10 "$budget" "$PYTHON" -P "$@" || status=$?
  if [ "$status" != 0 ]; then
    echo "!! $1 ended with status $status (124: over its budget); its JSON keeps what was measured"
    failed=1
  fi
}
evr=benchmarks/engine_vs_reference.py
step "${STEP1_S:-95}" "$evr" "${shape[@]}" --precision int4 --out "$(json int4)" "${extra[@]}"
step "${STEP2_S:-80}" "$evr" "${shape[@]}" --precision int4 --quantization torchao --compile --no-reference \
  --out "$(json int4_torchao_compiled)" "${extra[@]}"
step "${STEP3_S:-40}" "$evr" "${shape[@]}" --precision int4 --quantization torchao --no-reference \
  --out "$(json int4_torchao)" "${extra[@]}"
step "${STEP4_S:-35}" "$evr" "${shape[@]}" --precision bf16 --no-reference --out "$(json bf16)" "${extra[@]}"
step "${STEP5_S:-45}" benchmarks/sam_attention.py "${sam[@]}" "${extra[@]}"
step "${STEP6_S:-45}" benchmarks/qlora_step.py "${qlora[@]}" "${extra[@]}"
exit "$failed"
