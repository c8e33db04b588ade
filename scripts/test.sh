#!/usr/bin/env bash
# Sets up (idempotent), lints (ruff, configured in ruff.toml) and runs the whole test suite on CPU,
# over real DDS kept on 127.0.0.1. Extra arguments go to pytest, e.g. scripts/test.sh test/node -x
# A lint finding fails the run, after pytest has run: one run shows both.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash scripts/setup.sh
# shellcheck source=ros_env.sh
source scripts/ros_env.sh --isolated
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
printf '\n==> ruff check (%s, ruff.toml)\n' "$(python -m ruff --version)"
lint=0
python -m ruff check --output-format concise . || lint=$?
printf '\n==> pytest (ROS_DOMAIN_ID=%s, DDS profile %s)\n' "$ROS_DOMAIN_ID" "$FASTRTPS_DEFAULT_PROFILES_FILE"
tests=0
python -P -m pytest "${@:-test}" || tests=$?
if [ "$tests" -eq 0 ] && [ "$lint" -ne 0 ]; then
  echo "ruff found the problems listed above the tests: the run fails" >&2
  exit "$lint"
fi
exit "$tests"
