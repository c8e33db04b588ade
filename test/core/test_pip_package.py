"""`pip install -e .` / a wheel of the repo carries the ROS-free core, model and tools
plus the `lisa-ros` command, and nothing colcon generates (lisa_ros.msg needs ROS)."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_has_the_ros_free_packages_and_the_command(tmp_path):
    source = tmp_path / "src"  # a copy, so setuptools' build/ and egg-info stay out of the repo
    source.mkdir()
    for name in ("setup.py", "package.xml"):
        shutil.copy(REPO / name, source)
    shutil.copytree(REPO / "requirements", source / "requirements")
    shutil.copytree(REPO / "lisa_ros", source / "lisa_ros", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(source)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("lisa_ros-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("lisa_ros/core/engine.py", "lisa_ros/model/engine.py", "lisa_ros/tools/cli.py",
                   "lisa_ros/node/lisa_node.py"):
        assert module in names, f"{module} missing from {wheel.name}"
    assert not any(name.startswith(("lisa_ros/msg/", "lisa_ros/srv/")) for name in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "lisa-ros = lisa_ros.tools.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
