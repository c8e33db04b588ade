#!/usr/bin/env bash
# CI step (after scripts/test.sh): the offline-robot install of docs/robot-setup.md, end to end.
#  1. scripts/offline_wheels.py builds a wheel folder for this machine from the public index only
#     (no pip configuration, no local wheel folders), torch from LISA_TORCH_FROM
#     (default https://download.pytorch.org/whl/cpu: PyPI's Linux torch is the 3 GB CUDA build).
#  2. A fresh clone of this commit runs the demo with LISA_WHEELS=<folder>: setup installs with
#     --no-index from the folder alone, in a network namespace with no network at all (loopback
#     only) when unshare is allowed, so any download would fail; the demo must exit 0.
#  3. A cross-target build (download only): Python 3.12 on manylinux_2_39_aarch64, --no-torch
#     --no-ros (an Ubuntu 24.04 arm64 robot with apt ROS and its own torch); every file must be a
#     cp312 / abi3 / py3 wheel for aarch64 or any platform, and no torch or nvidia-* wheel.
#  4. The offline GPU check's folder (benchmarks/gpu_quick.sh --wheels): --gpu-check for Python 3.12 on
#     manylinux_2_28_x86_64 (a CUDA image with its own torch); no torch or nvidia-* wheel, under 60 MB (peft on top).
# Prints the time and disk of each step. Work folder: LISA_OFFLINE_WORK (default a temporary one,
# removed at the end). Heavy: about 700 MB of downloads and a full venv; not part of pytest.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${LISA_OFFLINE_WORK:-}"
if [ -z "$work" ]; then
  work="$(mktemp -d /tmp/lisa-offline.XXXXXX)"
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"
torch_from="${LISA_TORCH_FROM:-https://download.pytorch.org/whl/cpu}"
# No pip configuration file and no PIP_* variable of this machine: only what each step names.
clean_env=(env)
for var in $(compgen -e | grep '^PIP_' || true); do clean_env+=(-u "$var"); done
clean_env+=(PIP_CONFIG_FILE=/dev/null)
elapsed() { echo $(( $(date +%s) - $1 )); }
size() { du -sh "$1" | cut -f1; }

printf '\n==> offline wheels for this machine (torch from %s)\n' "$torch_from"
start=$(date +%s)
rm -rf "$work/wheels"
"${clean_env[@]}" python3 "$repo/scripts/offline_wheels.py" "$work/wheels" --torch-from "$torch_from"
build_s=$(elapsed "$start")

printf '\n==> fresh clone of %s, setup and demo from the folder with no index\n' "$(git -C "$repo" rev-parse --short HEAD)"
rm -rf "$work/clone"
git clone -q --no-local "$repo" "$work/clone"
git -C "$work/clone" checkout -q "$(git -C "$repo" rev-parse HEAD)"
offline=(bash -c)
if unshare -n true 2>/dev/null; then
  # A network namespace of its own with only loopback up: DDS stays on it, nothing else is reachable.
  offline=(unshare -n bash -c 'ip link set lo up && exec bash -c "$0" "$@"')
  echo "no network: setup and demo run in a new network namespace (loopback only)"
else
  echo "unshare -n not allowed here: the network stays, pip has no index (PIP_NO_INDEX) and no other source"
fi
run_offline() { "${clean_env[@]}" LISA_WHEELS="$work/wheels" "${offline[@]}" 'cd "$1" && shift && "$@"' _ "$work/clone" "$@"; }
start=$(date +%s)
run_offline bash scripts/setup.sh
setup_s=$(elapsed "$start")
start=$(date +%s)
run_offline bash scripts/demo.sh "$work/demo"
demo_s=$(elapsed "$start")
venv_python="$work/clone/.venv/bin/python"
"$venv_python" -c 'import torch; print("installed torch", torch.__version__)'
# Everything pip installed in the venv is one of the folder's wheels (pip and setuptools come with
# the venv; the ROS wheels also carry their packages' own egg-info, which pip did not install).
"$venv_python" -P - "$work/wheels" <<'PY'
import importlib.metadata as md, pathlib, re, sys
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
folder = {(norm(p.name.split("-")[0]), p.name.split("-")[1]) for p in pathlib.Path(sys.argv[1]).glob("*.whl")}
installed = [d for d in md.distributions() if (d.read_text("INSTALLER") or "").strip() == "pip"
             and norm(d.metadata["Name"]) not in ("pip", "setuptools")]
foreign = sorted(f"{d.metadata['Name']}=={d.version}" for d in installed
                 if (norm(d.metadata["Name"]), d.version) not in folder)
if foreign or not installed:
    sys.exit(f"installed but not from the wheel folder: {', '.join(foreign) or 'nothing installed'}")
print(f"all {len(installed)} distributions pip installed are the folder's wheels")
PY

printf '\n==> cross-target folder: Python 3.12, manylinux_2_39_aarch64, --no-torch --no-ros\n'
start=$(date +%s)
rm -rf "$work/aarch64"
"${clean_env[@]}" python3 "$repo/scripts/offline_wheels.py" "$work/aarch64" \
  --python-version 3.12 --platform manylinux_2_39_aarch64 --no-torch --no-ros
cross_s=$(elapsed "$start")
misfits="$(find "$work/aarch64" -type f -printf '%f\n' \
  | grep -vE -- '-(cp312-(cp312|abi3)|cp3[0-9]+-abi3|py3-none|py2\.py3-none)-[^-]*(aarch64|any)[^-]*\.whl$' || true)"
[ -z "$misfits" ] || { printf 'not for cp312 aarch64:\n%s\n' "$misfits" >&2; exit 1; }
torches="$(find "$work/aarch64" -type f \( -name 'torch-*' -o -name 'nvidia_*' -o -name 'triton-*' \) -printf '%f\n')"
[ -z "$torches" ] || { printf 'torch in a --no-torch folder:\n%s\n' "$torches" >&2; exit 1; }
echo "every file is a cp312/abi3/py3 wheel for aarch64 or any platform, and none is torch"

printf '\n==> GPU check folder: Python 3.12, manylinux_2_28_x86_64, --gpu-check\n'
start=$(date +%s)
rm -rf "$work/gpu-check"
"${clean_env[@]}" python3 "$repo/scripts/offline_wheels.py" "$work/gpu-check" --gpu-check \
  --python-version 3.12 --platform manylinux_2_28_x86_64
gpu_s=$(elapsed "$start")
torches="$(find "$work/gpu-check" -type f \( -name 'torch-*' -o -name 'nvidia_*' -o -name 'triton-*' \) -printf '%f\n')"
[ -z "$torches" ] || { printf 'torch in the GPU check folder:\n%s\n' "$torches" >&2; exit 1; }
gpu_bytes="$(find "$work/gpu-check" -type f -printf '%s\n' | awk '{ total += $1 } END { print total }')"
# The issue's bound is for the inference packages; peft (the QLoRA step) comes on top, within the 64 MiB a
# GPU machine of this project takes with the tree.
inference_bytes="$(find "$work/gpu-check" -type f ! -name 'peft-*' -printf '%s\n' | awk '{ total += $1 } END { print total }')"
[ "$inference_bytes" -lt 60000000 ] || { echo "the GPU check folder's inference wheels are $inference_bytes bytes, over 60 MB" >&2; exit 1; }
[ "$gpu_bytes" -lt 62000000 ] || { echo "the GPU check folder is $gpu_bytes bytes, over 62 MB" >&2; exit 1; }

printf '\n==> offline install: ok\n'
echo "build (this machine): ${build_s} s, $(find "$work/wheels" -type f | wc -l) wheels, $(size "$work/wheels")"
echo "setup from the folder (fresh clone, no index: venv + colcon build): ${setup_s} s; venv $(size "$work/clone/.venv")"
echo "demo after it: ${demo_s} s"
echo "cross-target build (cp312 aarch64, no torch, no ROS): ${cross_s} s, $(find "$work/aarch64" -type f | wc -l) wheels, $(size "$work/aarch64")"
echo "GPU check folder (cp312 x86_64, --gpu-check): ${gpu_s} s, $(find "$work/gpu-check" -type f | wc -l) wheels, $gpu_bytes bytes"
