"""pip install of the ROS-free parts of lisa_ros (core, model, tools) and the ``lisa-ros`` command.

    pip install -e .            # core + tools command line
    pip install -e .[model]     # + the LISA model stack (torch, transformers, ...)

The ROS 2 package (interfaces, node, launch) is built by colcon from package.xml
and CMakeLists.txt, which ignore this file. ``lisa_ros.node`` needs rclpy and the
colcon-generated ``lisa_ros.msg``; everything else imports without ROS.
"""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r"<version>([^<]+)</version>", (HERE / "package.xml").read_text()).group(1)

setup(
    name="lisa_ros",
    version=VERSION,
    description="LISA reasoning segmentation for ROS 2 (ROS-free core, model and tools)",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["lisa_ros", "lisa_ros.*"]),
    install_requires=["numpy", "opencv-python-headless", "pillow"],
    extras_require={
        "model": ["torch", "transformers", "tokenizers", "huggingface_hub", "safetensors", "accelerate",
                  "sentencepiece", "segment-anything"],
        "int4": ["bitsandbytes"],
        "tools": ["rosbags", "tqdm", "matplotlib", "scikit-image", "pyyaml"],
        "test": ["pytest", "pytest-timeout"],
    },
    entry_points={"console_scripts": ["lisa-ros = lisa_ros.tools.cli:main"]},
)
