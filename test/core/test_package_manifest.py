"""package.xml declares a rosdep key for every import of the package (or says why it cannot)."""
import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# top-level import -> rosdep key (None: pip only, no rosdep key exists; see the comment in package.xml)
ROSDEP_KEYS = {
    "rclpy": "rclpy", "rcl_interfaces": "rcl_interfaces", "std_msgs": "std_msgs", "sensor_msgs": "sensor_msgs",
    "geometry_msgs": "geometry_msgs", "visualization_msgs": "visualization_msgs",
    "vision_msgs": "vision_msgs",  # optional at run time (~/detections), a normal ROS install has it
    "std_srvs": "std_srvs", "lifecycle_msgs": "lifecycle_msgs", "diagnostic_msgs": "diagnostic_msgs",
    "builtin_interfaces": "std_msgs", "ament_index_python": "ament_index_python", "launch": "launch",
    "launch_ros": "launch_ros", "numpy": "python3-numpy", "cv2": "python3-opencv", "PIL": "python3-pil",
    "yaml": "python3-yaml", "tqdm": "python3-tqdm", "matplotlib": "python3-matplotlib",
    "skimage": "python3-skimage",
    "torch": None, "transformers": None, "tokenizers": None, "huggingface_hub": None, "safetensors": None,
    "accelerate": None, "bitsandbytes": None, "segment_anything": None, "sentencepiece": None, "rosbags": None,
    "apsw": None,  # bag_io reads rosbag2's sqlite3 files with it (as rosbags does): requirements/tools.txt
    "pycocotools": None, "peft": None, "torchao": None,  # requirements/tools.txt, finetune.txt, torchao.txt
}


def imported_modules():
    roots = set()
    for path in list((REPO / "lisa_ros").rglob("*.py")) + [REPO / "launch" / "lisa.launch.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots.add(node.module.split(".")[0])
    return roots - set(sys.stdlib_module_names) - {"lisa_ros", "__future__"}


def test_package_xml_is_format_3_and_declares_every_import():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    declared = {e.text for e in root if e.tag in ("depend", "exec_depend", "build_depend", "buildtool_depend")}
    unknown = imported_modules() - set(ROSDEP_KEYS)
    assert not unknown, f"new imports {unknown}: add their rosdep key to package.xml and ROSDEP_KEYS"
    missing = {ROSDEP_KEYS[m] for m in imported_modules() if ROSDEP_KEYS[m]} - declared
    assert not missing, f"package.xml lacks {missing}"
    assert {"ament_cmake_pytest", "python3-pytest", "python3-pytest-timeout"} <= {
        e.text for e in root if e.tag == "test_depend"}
