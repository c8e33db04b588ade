"""The launch file and the shipped configs, checked without the `launch` package (not installable here).

The launch file is executed against small stand-ins of launch/launch_ros that
record what it builds; the checks then hold that against the real package: the
executable CMake installs, the parameters the node declares, the topics it uses.
"""
import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest
import yaml

from lisa_ros.core.node_config import MODEL_OPTION_KEYS, PARAMETERS, NodeConfig

REPO = Path(__file__).resolve().parents[2]
LAUNCH_FILE = REPO / "launch" / "lisa.launch.py"
NODE_SOURCE = (REPO / "lisa_ros" / "node" / "lisa_node.py").read_text()


class Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class FakeLaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context[self.name]


@pytest.fixture
def launch_module(monkeypatch):
    fakes = {
        "launch": dict(LaunchDescription=Recorded),
        "launch.actions": dict(DeclareLaunchArgument=Recorded, OpaqueFunction=Recorded),
        "launch.substitutions": dict(LaunchConfiguration=FakeLaunchConfiguration),
        "launch_ros": {},
        "launch_ros.actions": dict(Node=Recorded),
        "ament_index_python.packages": dict(get_package_share_directory=lambda name: f"/opt/share/{name}"),
    }
    for name, attributes in fakes.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("lisa_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_launch(module, **arguments):
    description = module.generate_launch_description()
    actions = description.args[0]
    declared = {a.args[0] if a.args else a.kwargs["name"]: a.kwargs["default_value"] for a in actions[:-1]}
    context = dict(declared, **arguments)
    node, = actions[-1].kwargs["function"](context)
    return declared, node.kwargs


def test_launch_starts_the_installed_executable_with_config_and_remaps(launch_module):
    declared, node = run_launch(launch_module)
    assert {"config", "namespace", "node_name", "image", "instruction", "model_path", "device", "precision",
            "use_sim_time", "log_level"} <= set(declared)
    assert node["package"] == "lisa_ros" and node["executable"] == "lisa_node"
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"install\(PROGRAMS[^)]*scripts/lisa_node", cmake) and (REPO / "scripts" / "lisa_node").exists()
    assert node["parameters"][0] == "/opt/share/lisa_ros/config/lisa.yaml"
    assert "install(DIRECTORY launch config DESTINATION share/${PROJECT_NAME})" in cmake
    assert node["parameters"][1] == {"use_sim_time": False}  # empty overrides keep the config's values
    assert node["ros_arguments"] == ["--log-level", "info"]
    subscribed = set(re.findall(r'create_subscription\(\s*\w+, "(\w+)"', NODE_SOURCE))
    assert {source for source, _ in node["remappings"]} == subscribed == {"image", "instruction"}


def test_launch_overrides_map_to_declared_parameters(launch_module):
    _, node = run_launch(launch_module, model_path="/tmp/tiny", device="cpu", precision="fp32", engine="plumbing",
                         compressed="true", namespace="robot1", image="/camera/image_raw", use_sim_time="true")
    overrides = node["parameters"][1]
    assert overrides == {"model.path": "/tmp/tiny", "model.device": "cpu", "model.precision": "fp32",
                         "engine": "plumbing", "compressed": True, "use_sim_time": True}
    known = set(PARAMETERS) | {f"model.{k}" for k in MODEL_OPTION_KEYS} | {"use_sim_time"}
    assert set(overrides) <= known
    assert node["namespace"] == "robot1" and ("image", "/camera/image_raw") in node["remappings"]


def flatten(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("name", ["lisa.yaml", "lisa_cpu.yaml", "plumbing_test.yaml"])
def test_configs_use_only_known_parameters_and_validate(name):
    document = yaml.safe_load((REPO / "config" / name).read_text())
    values = dict(flatten(document["/**"]["ros__parameters"]))
    known = set(PARAMETERS) | {f"model.{k}" for k in MODEL_OPTION_KEYS}
    assert set(values) <= known, set(values) - known
    config = NodeConfig.from_parameters(values)
    assert config.engine == ("plumbing" if name.startswith("plumbing") else "lisa")


def test_default_config_is_lisa_7b_int4_on_cuda():
    values = dict(flatten(yaml.safe_load((REPO / "config" / "lisa.yaml").read_text())["/**"]["ros__parameters"]))
    assert (values["engine"], values["model.path"], values["model.precision"], values["model.device"]) == (
        "lisa", "xinlai/LISA-7B-v1", "int4", "cuda")
