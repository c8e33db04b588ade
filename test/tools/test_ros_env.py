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


def _domain_after_sourcing(*args: str, domain: str | None = None) -> str:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    if domain is not None:
        env["ROS_DOMAIN_ID"] = domain
    script = f"source scripts/ros_env.sh {' '.join(args)} >/dev/null && echo \"$ROS_DOMAIN_ID\""
    done = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_every_shell_of_a_checkout_gets_one_domain_and_runs_get_their_own():
    """The README starts the node in one shell and the replay in another: they must share a domain (a random
    one per shell kept them apart). Tests and the demo pass --own-domain, away from a node left running."""
    shells = {_domain_after_sourcing() for _ in range(3)}
    assert len(shells) == 1 and 1 <= int(shells.pop()) <= 100
    runs = {_domain_after_sourcing("--own-domain") for _ in range(6)}
    assert len(runs) > 1 and all(1 <= int(d) <= 100 for d in runs)
    assert _domain_after_sourcing(domain="42") == _domain_after_sourcing("--own-domain", domain="42") == "42"
