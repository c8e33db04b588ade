"""The CPU commands the README, config/lisa_cpu.yaml and the launch file give point where
make-tiny-checkpoint writes (OUT_DIR/lisa-tiny-7b), and the CPU command uses the CPU config.

(Running them end to end is what test_replay_ros.py's lisa-engine test does with the same
config; this keeps the copy-paste text in step with the code.)
"""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def tiny_checkpoint_dir(out_dir: str) -> str:
    """Where `lisa-ros make-tiny-checkpoint OUT_DIR` writes the LISA checkpoint (default 7b layout)."""
    return f"{out_dir}/lisa-tiny-7b"


def test_the_documented_path_is_the_one_make_tiny_checkpoint_writes(tiny_lisa_checkpoint):
    """tiny_lisa_checkpoint (test/conftest.py): write_tiny_checkpoint(OUT_DIR, layout="7b")'s LISA folder."""
    written = Path(tiny_lisa_checkpoint)
    assert (written / "config.json").is_file()
    assert written == Path(tiny_checkpoint_dir(str(written.parent)))


def test_readme_without_launch_gives_a_cpu_command_on_the_tiny_checkpoint_and_a_gpu_command():
    section = (REPO / "README.md").read_text().split("Without `ros2 launch`", 1)[1].split("`ros2 launch lisa_ros", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    cpu = next(b for b in blocks if "make-tiny-checkpoint" in b)
    out_dir = re.search(r"lisa-ros make-tiny-checkpoint (\S+)", cpu).group(1)
    node = next(line for line in cpu.splitlines() if line.startswith("lisa_node"))
    assert "--params-file config/lisa_cpu.yaml" in node
    assert f"-p model.path:={tiny_checkpoint_dir(out_dir)}" in node
    assert cpu.startswith("source scripts/ros_env.sh")
    gpu = next(b for b in blocks if b is not cpu and "lisa_node" in b)
    assert "--params-file config/lisa.yaml" in gpu and "cpu" not in gpu and "fp32" not in gpu


@pytest.mark.parametrize("path", ["config/lisa_cpu.yaml", "launch/lisa.launch.py"])
def test_config_and_launch_comments_name_the_checkpoint_folder(path):
    text = (REPO / path).read_text()
    out_dirs = re.findall(r"make-tiny-checkpoint (/\S+)", text) or ["/tmp/lisa-tiny"]
    paths = re.findall(r"model[._]path:=(\S+)", text)
    assert paths, f"{path} names no model path"
    assert all(p == tiny_checkpoint_dir(out_dirs[0]) for p in paths), paths


@pytest.mark.ros
@pytest.mark.parametrize("page", ["README.md", "docs/node.md"])
def test_action_example_and_feedback_stages_match_the_action_definition(page):
    """The copy-paste goal (README and docs/node.md) names real goal fields; docs/node.md's feedback bullet
    names every stage and field, in order."""
    import yaml

    from lisa_ros.action import Segment

    text = (REPO / page).read_text()
    action, type_name, goal = re.search(r'ros2 action send_goal (\S+) (\S+) "(\{.*?\})" --feedback', text).groups()
    assert (action, type_name) == ("/lisa_node/segment", "lisa_ros/action/Segment")
    assert set(yaml.safe_load(goal)) <= set(Segment.Goal.get_fields_and_field_types())
    guide = (REPO / "docs" / "node.md").read_text()
    bullet = guide.split("- feedback, in this order:", 1)[1].split("\n- ", 1)[0]
    feedback = Segment.Feedback
    names = sorted((n for n in dir(feedback) if n.startswith("STAGE_")), key=lambda n: getattr(feedback, n))
    positions = [bullet.find(f"`{name}`") for name in names]
    assert -1 not in positions and positions == sorted(positions), dict(zip(names, positions))
    assert all(f"`{field}`" in bullet for field in feedback.get_fields_and_field_types() if field != "stage")


@pytest.mark.ros
def test_documented_python_service_call_runs_as_written(lisa_node_process, tmp_path):
    """docs/node.md's rclpy stand-in for `ros2 service call`, run as its own process against a node (moved
    into a namespace of the test's own: only the service name is changed)."""
    import os
    import subprocess
    import sys

    guide = (REPO / "docs" / "node.md").read_text()
    snippet = re.search(r"The `ros2` commands need.*?```python\n(.*?)```", guide, re.S).group(1)
    node = lisa_node_process()
    script = tmp_path / "ask.py"
    script.write_text(snippet.replace('"/lisa_node/segment"', repr(node.topic("~/segment"))))
    done = subprocess.run([sys.executable, str(script)], env=os.environ, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "no image received yet" in done.stdout  # the node's answer: it has no camera here
