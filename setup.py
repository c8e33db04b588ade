"""pip install of the ROS-free parts of lisa_ros (core, model, tools) and the ``lisa-ros`` command.

    pip install -e .            # core + tools command line
    pip install -e .[model]     # + the LISA model stack (torch, transformers, ...)

Dependencies come from requirements/*.txt (one source of truth with scripts/setup.sh):
core.txt -> install_requires; runtime.txt (less its ``-r core.txt``) -> [model]; int4, torchao, tools,
finetune, test, lint -> the extras of those names. requirements/lock.txt pins them for CI.

The ROS 2 package (interfaces, node, launch) is built by colcon from package.xml
and CMakeLists.txt, which ignore this file. ``lisa_ros.node`` needs rclpy and the
colcon-generated ``lisa_ros.msg``; everything else imports without ROS.
"""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def requirements(name):
    """The requirement lines of requirements/<name>.txt, without comments and ``-r`` includes."""
    lines = (line.split("#")[0].strip() for line in (HERE / "requirements" / f"{name}.txt").read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


VERSION = re.search(r"<version>([^<]+)</version>", (HERE / "package.xml").read_text()).group(1)

setup(
    name="lisa_ros",
    version=VERSION,
    description="LISA reasoning segmentation for ROS 2 (ROS-free core, model and tools)",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["lisa_ros", "lisa_ros.*"]),
    install_requires=requirements("core"),
    extras_require={
        "model": requirements("runtime"),
        "int4": requirements("int4"),
        "torchao": requirements("torchao"),
        "tools": requirements("tools"),
        "finetune": requirements("finetune"),
        "test": requirements("test"),
        "lint": requirements("lint"),
    },
    entry_points={"console_scripts": ["lisa-ros = lisa_ros.tools.cli:main"]},
)
