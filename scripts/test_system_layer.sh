#!/usr/bin/env bash
# CI: scripts/setup.sh on a venv layered on a system Python keeps what that system brings.
# The "system" is Debian's own python3 with apt's python3-numpy (1.x) and python3-opencv (4.x), the
# way a robot workstation has Ubuntu's under apt ROS 2; a CPU torch in the user site (what the venv
# sees below it, as it would see a Jetson's NVIDIA torch, a container's or conda's) stands for a
# machine that brings its own torch. Checks: numpy, cv2 and torch are the same files and versions
# after setup as before, pip put none of them (nor any CUDA package) into the venv, and the tests
# that need no rclpy pass on them. Prints the time and disk of each step.
#   scripts/test_system_layer.sh [DIR]   (DIR: where the venv and user site go, kept; default a temp folder, removed)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
if [ $# -gt 0 ]; then work="$1"; mkdir -p "$work"
else work="$(mktemp -d /tmp/lisa_system_layer.XXXXXX)"; trap 'rm -rf "$work"' EXIT; fi
system_python=/usr/bin/python3
export PYTHONUSERBASE="$work/userbase"
venv="$work/venv"
timed() { local started=$SECONDS; "$@"; echo "  ($(( SECONDS - started )) s)" >&2; }
step() { printf '\n==> %s\n' "$*"; }

step "system layer: Debian's python3-numpy, python3-opencv, python3-venv"
packages=(python3-numpy python3-opencv python3-venv)
installed() { dpkg-query -W -f '${db:Status-Abbrev} ${Package} ${Installed-Size}\n' | awk '$1 == "ii" {print $2, $3}' | sort; }
if ! dpkg -s "${packages[@]}" >/dev/null 2>&1; then
  before="$(installed)"
  sudo=(); [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  timed "${sudo[@]}" apt-get install -y -qq "${packages[@]}" >/dev/null
  echo "  $(comm -13 <(echo "$before") <(installed) | awk '{kb += $2} END {printf "%d packages, %d MB", NR, kb / 1024}') installed"
fi
"$system_python" -c 'import numpy, cv2; print(f"  numpy {numpy.__version__}, OpenCV {cv2.__version__}")'

step "torch below the venv: torch==2.13.0 into the user site ($PYTHONUSERBASE)"
user_site="$("$system_python" -c 'import site; print(site.getusersitepackages())')"
if [ ! -d "$user_site/torch" ]; then
  # The pip of the Python that runs CI (Debian's python3 has none); same CPython 3.11 ABI.
  timed python3 -m pip install -q --disable-pip-version-check --target "$user_site" torch==2.13.0 2>&1 |
    grep -vE "is ignored|Running pip as the 'root' user" || true
fi
echo "  $(du -sm "$PYTHONUSERBASE" | cut -f1) MB"

report='
import importlib, json
print(json.dumps({name: [importlib.import_module(name).__version__, importlib.import_module(name).__file__]
                  for name in ("numpy", "cv2", "torch")}))'
below="$("$system_python" -c "$report")"
echo "  below the venv: $below"

step "scripts/setup.sh --venv $venv --python $system_python --system-site-packages"
started=$SECONDS
bash scripts/setup.sh --venv "$venv" --python "$system_python" --system-site-packages
echo "  setup: $(( SECONDS - started )) s, venv $(du -sm "$venv" | cut -f1) MB"
after="$("$venv/bin/python" -c "$report")"
echo "  in the venv: $after"
[ "$after" = "$below" ] || { echo "FAIL: setup replaced numpy, cv2 or torch of the layer below" >&2; exit 1; }
own_site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
shadowing=$(find "$own_site" -maxdepth 1 -iname '*.dist-info' | grep -iE '/(numpy|opencv[a-z_]*|torch|triton|nvidia[a-z0-9_]*|cuda[a-z0-9_]*)-[0-9]' || true)
[ -z "$shadowing" ] || { echo "FAIL: pip put these into the venv: $shadowing" >&2; exit 1; }
echo "  kept: numpy, cv2, torch from the layer below; no numpy, OpenCV, torch or CUDA package in the venv"

step "a second setup run changes nothing"
again="$(timed bash scripts/setup.sh --venv "$venv" --python "$system_python" --system-site-packages)"
grep "requirements unchanged" <<< "$again" || { echo "FAIL: the second run installed again" >&2; exit 1; }

step "tests that need no rclpy, on numpy $("$venv/bin/python" -c 'import numpy; print(numpy.__version__)') and OpenCV $("$venv/bin/python" -c 'import cv2; print(cv2.__version__)')"
# The resolving tests of test_requirements.py ask pypi.org about the files, not this venv: they run
# in scripts/test.sh. Tests marked `ros` need rclpy and the colcon build. lisa_ros from this checkout.
started=$SECONDS
PYTHONPATH="$repo" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$venv/bin/python" -P -m pytest -q -p no:cacheprovider -m "not ros" \
  -k "not public_index" test/core test/model test/tools
echo "  tests: $(( SECONDS - started )) s"
