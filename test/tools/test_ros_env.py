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


NETWORK = ("RMW_IMPLEMENTATION", "ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOCALHOST_ONLY",
           "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE", "ROS_STATIC_PEERS")
LOOPBACK_PROFILE = str(REPO / "config" / "fastdds_localhost.xml")


def _source(script: str, **shell_env: str) -> tuple[dict[str, str], str]:
    """The environment after running ``script`` (which sources ros_env.sh) from a login-like shell that has
    ``shell_env``, and what the sourcing wrote to stderr (stdout must stay empty: scripts capture it)."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
           **shell_env}
    done = subprocess.run(["bash", "-c", f"{script} && echo '{MARK}' && env -0"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.split(MARK + "\n", 1)
    assert before == "", before
    return dict(item.split("=", 1) for item in after.split("\0") if item), done.stderr


def test_robot_use_keeps_the_shells_networking_and_says_which_it_is():
    """A camera driver runs on the robot's domain with the robot's DDS set-up: sourcing for robot use changes
    none of it (it used to force the loopback profile and a domain of the checkout's own: the camera was never
    seen), and one line on stderr says what is in effect."""
    robot = {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp", "ROS_DOMAIN_ID": "0",
             "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "ROS_LOCALHOST_ONLY": "0",
             "FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/robot/dds.xml",
             "FASTDDS_DEFAULT_PROFILES_FILE": "/etc/robot/dds.xml", "ROS_STATIC_PEERS": "192.168.1.20"}
    env, said = _source("source scripts/ros_env.sh", **robot)
    assert {name: env.get(name) for name in NETWORK} == robot
    lines = said.splitlines()
    assert len(lines) == 1 and "ROS_DOMAIN_ID=0" in lines[0] and "/etc/robot/dds.xml" in lines[0], said
    assert "rmw_cyclonedds_cpp" in lines[0] and "SUBNET" in lines[0]

    env, said = _source("source scripts/ros_env.sh")  # nothing set: ROS's defaults, domain 0
    assert not {name: env[name] for name in NETWORK if name in env}
    assert "ROS_DOMAIN_ID=0 (default)" in said and "DDS profile none" in said, said

    _, said = _source("source scripts/ros_env.sh", ROS_LOCALHOST_ONLY="1", ROS_DOMAIN_ID="7")
    assert "ROS_DOMAIN_ID=7" in said and "LOCALHOST (ROS_LOCALHOST_ONLY=1)" in said, said


def test_a_shell_left_isolated_says_so_in_robot_use():
    """Sourcing for robot use after --isolated keeps what the shell has, the loopback profile too (a README command
    run by a test stays on loopback): the line says why no camera of another host is visible."""
    env, said = _source("source scripts/ros_env.sh --isolated 2>/dev/null && source scripts/ros_env.sh")
    assert env["FASTRTPS_DEFAULT_PROFILES_FILE"] == LOOPBACK_PROFILE
    assert "loopback only, from an --isolated shell" in said and f"ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}" in said, said


def test_isolated_runs_get_loopback_and_a_domain_of_their_own():
    """Tests, the demo and the benchmarks ask for isolation: loopback-only Fast DDS and a random domain, whatever
    the shell brought (a ROS_DOMAIN_ID=0 from ~/.bashrc is the robot's camera's domain)."""
    robot = {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp", "ROS_DOMAIN_ID": "0", "ROS_LOCALHOST_ONLY": "1",
             "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/robot/dds.xml",
             "ROS_STATIC_PEERS": "192.168.1.20"}
    domains = set()
    for _ in range(6):
        env, said = _source("source scripts/ros_env.sh --isolated", **robot)
        assert env["FASTRTPS_DEFAULT_PROFILES_FILE"] == env["FASTDDS_DEFAULT_PROFILES_FILE"] == LOOPBACK_PROFILE
        assert env["RMW_IMPLEMENTATION"] == "rmw_fastrtps_cpp"  # the profile is Fast DDS's
        assert not {"ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOCALHOST_ONLY", "ROS_STATIC_PEERS"} & set(env)
        assert said.count("\n") == 1 and "isolated: DDS on 127.0.0.1 only" in said
        assert f"ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']} " in said, said
        domains.add(int(env["ROS_DOMAIN_ID"]))
    assert len(domains) > 1 and all(1 <= d <= 100 for d in domains)


def test_the_line_is_said_once_per_shell_while_it_stays_the_same():
    _, said = _source("source scripts/ros_env.sh && source scripts/ros_env.sh --no-install", ROS_DOMAIN_ID="3")
    assert said.count("lisa_ros network:") == 1, said
    _, said = _source("source scripts/ros_env.sh && ROS_DOMAIN_ID=4 && source scripts/ros_env.sh", ROS_DOMAIN_ID="3")
    assert said.count("lisa_ros network:") == 2, said
