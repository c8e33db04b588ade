#!/usr/bin/env bash
# Sets up (idempotent) and runs the whole test suite on CPU, over real DDS kept
# on 127.0.0.1. Extra arguments go to pytest, e.g. scripts/test.sh test/node -x
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash scripts/setup.sh
# shellcheck source=ros_env.sh
source scripts/ros_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
printf '\n==> pytest (ROS_DOMAIN_ID=%s, DDS profile %s)\n' "$ROS_DOMAIN_ID" "$FASTRTPS_DEFAULT_PROFILES_FILE"
exec python -P -m pytest "${@:-test}"
