#!/usr/bin/env bash
# Sets up everything lisa_ros needs, from scratch, on a Debian/Ubuntu machine:
#   .venv/      Python environment (the CI lock; ROS 2 Jazzy wheels when no ROS is sourced)
#   .ws/        colcon build of this package (interfaces + node), installed in .ws/install
# Idempotent: a second run checks stamps and only rebuilds what changed.
#
# Layered on what the machine already has: with a ROS 2 installation sourced (ROS_DISTRO set, rclpy
# importable), or with --system-site-packages, the venv sees the base Python's packages and keeps
# them: the numpy that ROS's message modules and cv_bridge were built against (pinned to its
# version), the system's OpenCV (no pip OpenCV over an importable cv2) and a torch that is already
# there (Jetson's NVIDIA wheel, a container's or conda's CUDA build: pinned, so nothing replaces it).
# Such a venv resolves the ranges in requirements/, not the lock. An existing venv made with
# --system-site-packages counts as layered too.
#
#   --venv DIR               the venv (default .venv); outside this checkout only the Python
#                            environment is made (a robot workspace builds lisa_ros with colcon)
#   --python PY              the base Python of a new venv (default python3)
#   --system-site-packages   layer a new venv on PY's packages (automatic with a sourced ROS 2)
#   --runtime                the node's and tools' packages only (no finetune / test / lint packages)
#   LISA_WHEELS=DIR          (environment) install from a folder of wheels made by
#                            scripts/offline_wheels.py, with no index (docs/robot-setup.md: Offline robots)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
venv="$repo/.venv"
base_python=python3
layered=0
groups=(runtime int4 torchao tools finetune test lint)
while [ $# -gt 0 ]; do
  case $1 in
    --venv) venv="$(realpath -m "$2")"; shift ;;
    --python) base_python="$2"; shift ;;
    --system-site-packages) layered=1 ;;
    --runtime) groups=(runtime int4 torchao tools) ;;
    *) echo "setup.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
step() { printf '\n==> %s\n' "$*"; }

if [ -n "${LISA_WHEELS:-}" ]; then  # an offline machine: the folder only
  export PIP_NO_INDEX=1 PIP_FIND_LINKS="$(cd "$LISA_WHEELS" && pwd)"
fi

system_ros=0
if [ -n "${ROS_DISTRO:-}" ] && "$base_python" -c 'import rclpy' 2>/dev/null; then
  system_ros=1 layered=1
fi
colcon_build=0
[ "$venv" != "$repo/.venv" ] || colcon_build=1

step "build tools"
missing=()
if [ $colcon_build -eq 1 ]; then
  for tool in cmake g++ make; do command -v "$tool" >/dev/null || missing+=("$tool"); done
fi
"$base_python" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt_names=("${missing[@]/g++/build-essential}")
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq "${apt_names[@]}"
  else sudo apt-get update -qq && sudo apt-get install -y -qq "${apt_names[@]}"; fi
fi
[ $colcon_build -eq 0 ] || echo "cmake $(cmake --version | head -1 | awk '{print $3}')"
echo "$("$base_python" --version) ($(command -v "$base_python"))"

step "python environment ($venv)"
if [ ! -x "$venv/bin/python" ]; then
  if [ $layered -eq 1 ]; then "$base_python" -m venv --system-site-packages "$venv"
  else "$base_python" -m venv "$venv"; fi
fi
grep -qx 'include-system-site-packages = true' "$venv/pyvenv.cfg" && layered=1
py="$venv/bin/python"
# What pip is given, written into the venv: the requirement files (less what the layer below
# provides) and the constraints (the lock, or the layer below's versions).
given="$venv/.lisa_ros_requirements.d"
rm -rf "$given" && mkdir -p "$given"
constraints="$given/constraints.txt"
if [ $layered -eq 1 ]; then
  # What the layer below provides (the venv's base Python sees the same system, user and
  # PYTHONPATH folders as the venv, but not the venv's own packages).
  below="$("$py" -c 'import sys; print(sys._base_executable)')"
  probe() { "$below" -c "import $1; print($1.__version__)" 2>/dev/null || true; }
  np_below="$(probe numpy)" cv2_below="$(probe cv2)" torch_below="$(probe torch)"
  : > "$constraints"
  if [ -n "$np_below" ]; then
    if "$py" -c 'import sys; sys.exit(tuple(map(int, sys.argv[1].split(".")[:2])) < (1, 24))' "$np_below"; then
      echo "numpy==$np_below" >> "$constraints"; echo "keeping the layer below's numpy $np_below"
    else
      # Older than core.txt's range (Ubuntu 22.04 has 1.21): a numpy 1.x in the venv, which
      # modules built against an older 1.x still load (numpy 2 would break them).
      echo "numpy>=1.24,<2" >> "$constraints"
      echo "the layer below's numpy $np_below is older than 1.24: the venv gets a numpy 1.x"
    fi
  fi
  if [ -n "$torch_below" ]; then
    echo "torch==$torch_below" >> "$constraints"; echo "keeping the layer below's torch $torch_below"
  fi
  if [ -n "$cv2_below" ]; then
    echo "keeping the layer below's OpenCV $cv2_below (no opencv-python-headless)"
    grep -v '^opencv-python' requirements/core.txt > "$given/core.txt"
  else cp requirements/core.txt "$given/core.txt"; fi
  [ $system_ros -eq 1 ] || [ $colcon_build -eq 0 ] || groups+=(ros)
  for group in "${groups[@]}"; do grep -v '^-r' "requirements/$group.txt" > "$given/$group.txt"; done
else
  cp requirements/lock.txt "$constraints"
  groups+=(ros)
  for group in core "${groups[@]}"; do cp "requirements/$group.txt" "$given/$group.txt"; done
fi
reqs=(); for group in core "${groups[@]}"; do reqs+=(-r "$given/$group.txt"); done
stamp="$venv/.lisa_ros_requirements"
want="$(cat "$given"/*.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # Constraints pin torch (the lock's version or the one below): bitsandbytes/accelerate alone
  # would pull the newest torch with CUDA packages. A CPU torch of the lock's version (2.13.0+cpu)
  # that is already in the venv satisfies torch==2.13.0 and stays.
  "$py" -m pip install -q --disable-pip-version-check "${reqs[@]}" -c "$constraints" 2>&1 | grep -v "is ignored" || true
  # (segment_anything's package __init__ needs torchvision; lisa_ros imports only its modeling)
  check='import importlib.util, torch, transformers; assert importlib.util.find_spec("segment_anything")'
  [ $colcon_build -eq 0 ] || check+=', rclpy'
  "$py" -c "$check" 2>/dev/null || { echo "pip install failed" >&2; exit 1; }
  if [ $system_ros -eq 0 ] && [ $colcon_build -eq 1 ]; then
    # The wheels' exported CMake targets name include folders of the machine they
    # were built on; point them at this Python's and this venv's numpy headers.
    py_inc="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
    np_inc="$("$py" -c 'import numpy; print(numpy.get_include())')"
    for f in $(grep -rl '/opt/python/cp311-cp311' "$venv/share" --include='*.cmake' || true); do
      sed -i -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_inc#g" \
             -e "s#/opt/python/cp311-cp311/include/python3.11#$py_inc#g" "$f"
    done
  fi
  echo "$want" > "$stamp"
else
  echo "requirements unchanged, skipping pip"
fi
"$py" - <<'PY'
import importlib
for name in ("numpy", "cv2", "torch"):
    module = importlib.import_module(name)
    print(f"{name} {module.__version__} from {module.__file__}")
PY
if [ $colcon_build -eq 0 ]; then
  step "set up: $venv (Python only; build lisa_ros in your colcon workspace with this venv's python -m colcon)"
  exit 0
fi

step "colcon build (.ws/install)"
# shellcheck source=ros_env.sh
source "$repo/scripts/ros_env.sh" --no-install
# The workspace sees this repo as .ws/src/lisa_ros (a link): a source folder that
# contains .venv would make CMake refuse the venv's numpy include path.
mkdir -p .ws/src && ln -sfn ../.. .ws/src/lisa_ros
colcon --log-base .ws/log build --base-paths .ws/src \
  --build-base .ws/build --install-base .ws/install --symlink-install \
  --event-handlers console_cohesion- summary+ status- \
  --cmake-args -DPython3_EXECUTABLE="$py" -DBUILD_TESTING=OFF -Wno-dev
set +u; source "$repo/.ws/install/local_setup.bash"; set -u
"$py" -P -c 'from lisa_ros.msg import SegmentationResult; from lisa_ros.srv import Segment' \
  && echo "lisa_ros interfaces import: ok"
step "set up: source scripts/ros_env.sh to use it in a shell"
