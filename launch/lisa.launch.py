"""Start lisa_node: a params file, a namespace, every topic it reads remapped and every mode switched.

    ros2 launch lisa_ros lisa.launch.py image:=/camera/camera/color/image_raw
    ros2 launch lisa_ros lisa.launch.py namespace:=robot1 params_file:=/path/my_lisa.yaml
    ros2 launch lisa_ros lisa.launch.py image:=/camera/camera/color/image_raw depth_enabled:=true \
        depth:=/camera/camera/aligned_depth_to_color/image_raw \
        depth_camera_info:=/camera/camera/aligned_depth_to_color/camera_info
    ros2 launch lisa_ros lisa.launch.py params_file:=$(ros2 pkg prefix lisa_ros)/share/lisa_ros/config/lisa_cpu.yaml \
        model_path:=/tmp/lisa-tiny/lisa-tiny-7b

An empty argument keeps the params file's value (`config` is the former name of `params_file`;
`use_sim_time` is passed only when given). The node configures and activates itself
(auto_configure/auto_activate parameters), so no lifecycle manager is needed; set both to false
in the params file to manage it.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

DEFAULT_PARAMS_FILE = os.path.join(get_package_share_directory("lisa_ros"), "config", "lisa.yaml")
# Every topic the node subscribes to (<image>/compressed and <instruction>/structured follow their base)
REMAPS = {
    "image": "camera topic (sensor_msgs/Image; <image>/compressed when compressed:=true)",
    "instruction": "instruction topic (std_msgs/String; lisa_ros/Instruction on <instruction>/structured)",
    "depth": "aligned depth image (sensor_msgs/Image 16UC1/32FC1), read with depth_enabled:=true",
    "depth_camera_info": "the depth image's sensor_msgs/CameraInfo, read with depth_enabled:=true",
}
# launch argument -> (parameter it sets when not empty, type, description)
OVERRIDES = {
    "engine": ("engine", str, "lisa | plumbing"),
    "model_path": ("model.path", str, "Hugging Face id or checkpoint directory"),
    "device": ("model.device", str, "cpu | cuda | cuda:N"),
    "precision": ("model.precision", str, "fp32 | fp16 | bf16 | int8 | int4"),
    "compressed": ("compressed", bool, "also read <image>/compressed (true | false)"),
    "depth_enabled": ("depth.enabled", bool, "3D targets from depth + depth_camera_info (true | false)"),
    "tracking_enabled": ("tracking.enabled", bool, "track answered masks on ~/tracked (true | false)"),
    "semantic_categories": ("semantic.categories", list, "semantic mode's default categories, comma-separated"),
    "semantic_descriptions_file": ("semantic.descriptions_file", str, "YAML 'category: description' file"),
    "semantic_rate_hz": ("semantic.rate_hz", float, "publish ~/semantic at this rate (needs categories)"),
    "detections_enabled": ("detections.enabled", bool, "publish ~/detections where vision_msgs is installed"),
    "use_sim_time": ("use_sim_time", bool, "use /clock (bag replay)"),
}
ARGUMENTS = {
    "params_file": ("", "YAML parameters file for lisa_node (empty: the installed config/lisa.yaml)"),
    "config": ("", "former name of params_file"),
    "namespace": ("", "namespace for the node and its relative topics"),
    "node_name": ("lisa_node", "node name"),
    **{name: (name, description) for name, description in REMAPS.items()},
    **{name: ("", f"{description}; empty keeps the params file's {parameter}")
       for name, (parameter, _, description) in OVERRIDES.items()},
    "log_level": ("info", "logging level (debug | info | warn | error)"),
    "respawn": ("false", "restart the node if it dies"),
}


def _typed(argument: str, text: str, kind: type):
    """A launch argument's text as the parameter's type; a clear error naming the argument otherwise."""
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise ValueError(f"{argument}:={text}: expected true or false")
        return text.lower() == "true"
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{argument}:={text}: expected a number") from None
    if kind is list:
        return [item.strip().strip("'\"") for item in text.strip().strip("[]").split(",") if item.strip()]
    return text


def _params_file(value: dict) -> str:
    if value["params_file"] and value["config"] and value["params_file"] != value["config"]:
        raise ValueError(f"params_file:={value['params_file']} and config:={value['config']} disagree: give one")
    return value["params_file"] or value["config"] or DEFAULT_PARAMS_FILE


def _node(context):
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    overrides = {parameter: _typed(argument, value[argument], kind)
                 for argument, (parameter, kind, _) in OVERRIDES.items() if value[argument]}
    return [Node(
        package="lisa_ros",
        executable="lisa_node",
        name=value["node_name"],
        namespace=value["namespace"],
        parameters=[_params_file(value), overrides],
        remappings=[(topic, value[topic]) for topic in REMAPS],
        ros_arguments=["--log-level", value["log_level"]],
        respawn=_typed("respawn", value["respawn"], bool),
        output="screen",
        emulate_tty=True,
    )]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=description)
         for name, (default, description) in ARGUMENTS.items()]
        + [OpaqueFunction(function=_node)]
    )
