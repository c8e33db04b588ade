"""scripts/ros_env.sh, sourced as the README says, from shells with and without set -e / set -u.

Needs the colcon install that scripts/test.sh builds first.
"""
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MARK = "still running after source"


@pytest.mark.parametrize("options", ["", "set -e", "set -eu", "set -euo pipefail"])
def test_sourcing_puts_the_commands_on_path_and_keeps_the_caller_running(options):
    script = f"""{options}
source scripts/ros_env.sh
echo "{MARK} flags=$-"
lisa-ros --help
command -v lisa_node
command -v lisa-ros
"""
    # A login-like environment: nothing of this test run's own set-up.
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    done = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and MARK in done.stdout, output
    flags = done.stdout.split(f"{MARK} flags=", 1)[1].split()[0]
    assert ("u" in flags) == ("u" in options) and ("e" in flags) == ("e" in options)  # the caller's options kept
    assert "make-tiny-checkpoint" in done.stdout and "replay" in done.stdout  # lisa-ros --help ran
    paths = done.stdout.strip().splitlines()[-2:]
    assert [Path(p).name for p in paths] == ["lisa_node", "lisa-ros"], output
    assert all(os.access(p, os.X_OK) for p in paths)
