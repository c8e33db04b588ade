"""The launch file and the shipped configs, checked without the `launch` package (not installable here).

The launch file is executed against small stand-ins of launch/launch_ros that
record what it builds; the checks then hold that against the real package: the
executable CMake installs, the parameters the node declares, the topics it uses.
"""
import importlib.util
import os
import re
import sys
import types
from pathlib import Path

import pytest
import yaml

from conftest import wait_for
from lisa_ros.core.node_config import MODEL_OPTION_KEYS, PARAMETERS, NodeConfig

REPO = Path(__file__).resolve().parents[2]
LAUNCH_FILE = REPO / "launch" / "lisa.launch.py"


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


def test_launch_starts_the_installed_executable_with_the_params_file_and_remaps(launch_module):
    declared, node = run_launch(launch_module)
    assert {"params_file", "config", "namespace", "node_name", "image", "instruction", "depth", "depth_camera_info",
            "model_path", "device", "precision", "depth_enabled", "tracking_enabled", "semantic_categories",
            "semantic_descriptions_file", "detections_enabled", "use_sim_time", "log_level"} <= set(declared)
    assert node["package"] == "lisa_ros" and node["executable"] == "lisa_node"
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"install\(PROGRAMS[^)]*scripts/lisa_node", cmake) and (REPO / "scripts" / "lisa_node").exists()
    assert node["parameters"][0] == "/opt/share/lisa_ros/config/lisa.yaml"
    assert "install(DIRECTORY launch config DESTINATION share/${PROJECT_NAME})" in cmake
    assert node["parameters"][1] == {}  # empty arguments keep the params file's values, use_sim_time included
    assert node["ros_arguments"] == ["--log-level", "info"] and node["respawn"] is False
    assert dict(node["remappings"]) == {"image": "image", "instruction": "instruction", "depth": "depth",
                                        "depth_camera_info": "depth_camera_info"}


def test_the_launch_reference_reads_the_tables_the_launch_file_runs_with(launch_module):
    """docs/launch.md reads the launch file with ast (no `launch` here): it must see what the file executes."""
    from lisa_ros.tools.reference import launch_tables

    tables = launch_tables(LAUNCH_FILE)
    for name in ("REMAPS", "OVERRIDES", "ARGUMENTS"):
        assert tables[name] == getattr(launch_module, name), name
    assert tables["docstring"].splitlines()[0] == launch_module.__doc__.splitlines()[0]


def test_params_file_is_the_ros_name_and_config_its_alias(launch_module):
    both = {"params_file": "/p.yaml", "config": "/p.yaml"}
    for arguments in ({"params_file": "/p.yaml"}, {"config": "/p.yaml"}, both):
        assert run_launch(launch_module, **arguments)[1]["parameters"][0] == "/p.yaml"
    with pytest.raises(ValueError, match="disagree"):
        run_launch(launch_module, params_file="/p.yaml", config="/q.yaml")


EVERY_OVERRIDE = dict(engine="plumbing", model_path="/tmp/tiny", device="cpu", precision="fp32", compressed="true",
                      depth_enabled="True", tracking_enabled="false", semantic_categories="cup, table,floor",
                      semantic_descriptions_file="/d.yaml", semantic_rate_hz="0.5", detections_enabled="false",
                      use_sim_time="true")


def test_every_mode_is_switched_from_launch_arguments(launch_module):
    _, node = run_launch(launch_module, namespace="robot1", image="/camera/camera/color/image_raw",
                         depth="/camera/camera/aligned_depth_to_color/image_raw",
                         depth_camera_info="/camera/camera/aligned_depth_to_color/camera_info", **EVERY_OVERRIDE)
    assert node["parameters"][1] == {
        "engine": "plumbing", "model.path": "/tmp/tiny", "model.device": "cpu", "model.precision": "fp32",
        "compressed": True, "depth.enabled": True, "tracking.enabled": False,
        "semantic.categories": ["cup", "table", "floor"], "semantic.descriptions_file": "/d.yaml",
        "semantic.rate_hz": 0.5, "detections.enabled": False, "use_sim_time": True}
    assert node["namespace"] == "robot1"
    assert dict(node["remappings"]) == {"image": "/camera/camera/color/image_raw", "instruction": "instruction",
                                        "depth": "/camera/camera/aligned_depth_to_color/image_raw",
                                        "depth_camera_info": "/camera/camera/aligned_depth_to_color/camera_info"}
    assert run_launch(launch_module, semantic_categories="['cup', 'table']")[1]["parameters"][1] == {
        "semantic.categories": ["cup", "table"]}  # the YAML list form too


@pytest.mark.parametrize(("argument", "text"), [("depth_enabled", "yes"), ("semantic_rate_hz", "fast"),
                                                ("respawn", "1")])
def test_a_mistyped_launch_argument_is_named(launch_module, argument, text):
    with pytest.raises(ValueError, match=f"{argument}:={text}: expected"):
        run_launch(launch_module, **{argument: text})


@pytest.mark.ros
def test_every_launch_override_sets_a_parameter_the_node_declares_with_its_type(launch_module, ros_context):
    """Against the node itself (rclpy): a parameter renamed or retyped in the node breaks this test."""
    from lisa_ros.node.lisa_node import LisaNode

    _, launched = run_launch(launch_module, **EVERY_OVERRIDE)
    overrides = launched["parameters"][1]
    assert set(overrides) == {parameter for parameter, _, _ in launch_module.OVERRIDES.values()}
    node = LisaNode("lisa_launch_probe", namespace="/launch_probe", context=ros_context)  # engine lisa: its model.*
    try:
        declared = {name: node.get_parameter(name).value for name in node.list_parameters([], 0).names}
    finally:
        node.release("test over")
        node.destroy_node()
    assert set(overrides) <= set(declared), set(overrides) - set(declared)
    for name, value in overrides.items():
        if declared[name] is not None:  # model.* options are declared unset
            assert type(value) is type(declared[name]), (name, value, declared[name])


@pytest.mark.ros
def test_every_topic_the_node_reads_follows_a_launch_remap(launch_module, monkeypatch, lisa_node_process, ros_probe):
    """The node's subscriptions, as the ROS graph shows them with every read mode on, all follow the launch file's
    remappings: a topic the node starts reading without a launch argument breaks this test."""
    elsewhere = f"/remapped_{os.getpid()}"
    _, launched = run_launch(launch_module, **{topic: f"{elsewhere}/{topic}" for topic in launch_module.REMAPS})
    monkeypatch.undo()  # the real ament_index again, to find the executable
    node = lisa_node_process(remaps=dict(launched["remappings"]),
                             params={"depth.enabled": True, "compressed": True, "tracking.enabled": True})
    expected = {f"{elsewhere}/{name}" for name in ("image", "image/compressed", "instruction",
                                                   "instruction/structured", "depth", "depth_camera_info")}

    def subscriptions():
        found = {topic for topic, _ in ros_probe.node.get_subscriber_names_and_types_by_node(
            "lisa_node", node.namespace)}
        return found if found >= expected else None

    assert wait_for(subscriptions, 20, "the node's subscriptions in the graph") == expected


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
