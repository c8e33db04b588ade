"""Start-up of the lisa_node process: command-line errors are one line and exit code 2, never a traceback."""
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros


def lisa_node_executable() -> Path:
    from ament_index_python.packages import get_package_prefix

    return Path(get_package_prefix("lisa_ros")) / "lib" / "lisa_ros" / "lisa_node"


@pytest.mark.parametrize("problem", ["missing params file", "bad YAML", "bad -p rule"])
def test_a_bad_command_line_is_named_in_one_line_with_exit_code_2(tmp_path, problem):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("/**:\n  ros__parameters:\n    max_queue: [1, 'a']\n")
    args, expected = {
        "missing params file": (["--params-file", str(tmp_path / "missing.yaml")], "missing.yaml: no such file"),
        "bad YAML": (["--params-file", str(bad_yaml)], "Couldn't parse params file"),
        "bad -p rule": (["-p", "max_queue"], "Couldn't parse parameter override rule"),
    }[problem]
    done = subprocess.run([sys.executable, str(lisa_node_executable()), "--ros-args", *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    ours = [line for line in done.stderr.splitlines() if line.startswith("lisa_node:")]
    assert len(ours) == 1 and expected in ours[0], done.stderr
    assert "Traceback" not in done.stderr + done.stdout, done.stderr


def test_a_bad_qos_override_of_an_output_is_named_in_one_line_with_exit_code_2(tmp_path):
    """Outputs and the instruction topic are created at start-up: their overrides are checked then, each named
    with its bad value and the valid ones (rclpy's line was "Unexpected QoS override for policy `reliability`:
    `best-effort`"; a negative depth failed inside rcl with only its C source location)."""
    params = tmp_path / "qos.yaml"
    params.write_text("/**:\n  ros__parameters:\n    engine: plumbing\n    qos_overrides:\n"
                      "      /qos_out/lisa_node/result:\n        publisher:\n          reliability: best-effort\n"
                      "      /qos_out/lisa_node/mask:\n        publisher:\n          depth: -1\n"
                      "      /qos_out/instruction:\n        subscription:\n          history: keep-all\n")
    done = subprocess.run([sys.executable, str(lisa_node_executable()), "--ros-args", "-r", "__ns:=/qos_out",
                           "--params-file", str(params)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    ours = [line for line in done.stderr.splitlines() if line.startswith("lisa_node:")]
    assert len(ours) == 1 and "Traceback" not in done.stderr, done.stderr
    for named in ("qos_overrides./qos_out/lisa_node/result.publisher.reliability is 'best-effort'",
                  "one of system_default, reliable, best_effort, best_available",
                  "qos_overrides./qos_out/lisa_node/mask.publisher.depth is -1", "an integer from 0 to",
                  "qos_overrides./qos_out/instruction.subscription.history is 'keep-all'",
                  "one of system_default, keep_last, keep_all", "restart lisa_node"):
        assert named in ours[0], ours[0]
