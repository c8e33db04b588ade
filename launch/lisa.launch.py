"""Start lisa_node with a YAML config, an optional namespace and topic remaps.

    ros2 launch lisa_ros lisa.launch.py image:=/camera/color/image_raw
    ros2 launch lisa_ros lisa.launch.py namespace:=robot1 config:=/path/my_lisa.yaml
    ros2 launch lisa_ros lisa.launch.py config:=$(ros2 pkg prefix lisa_ros)/share/lisa_ros/config/lisa_cpu.yaml \
        model_path:=/tmp/lisa-tiny/lisa-tiny-7b

The node configures and activates itself (auto_configure/auto_activate parameters),
so no lifecycle manager is needed; set both to false in the config to manage it.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

ARGUMENTS = {
    "config": (os.path.join(get_package_share_directory("lisa_ros"), "config", "lisa.yaml"),
               "YAML parameters file for lisa_node"),
    "namespace": ("", "namespace for the node and its relative topics"),
    "node_name": ("lisa_node", "node name"),
    "image": ("image", "camera topic to subscribe to (sensor_msgs/Image; <image>/compressed when compressed:=true)"),
    "instruction": ("instruction", "instruction topic (std_msgs/String)"),
    "engine": ("", "override the config's engine (lisa | plumbing); empty keeps the config"),
    "model_path": ("", "override model.path (Hugging Face id or checkpoint directory); empty keeps the config"),
    "device": ("", "override model.device (cpu | cuda | cuda:N); empty keeps the config"),
    "precision": ("", "override model.precision (fp32 | fp16 | bf16 | int8 | int4); empty keeps the config"),
    "compressed": ("", "override compressed (true | false); empty keeps the config"),
    "use_sim_time": ("false", "use /clock (bag replay)"),
    "log_level": ("info", "logging level (debug | info | warn | error)"),
    "respawn": ("false", "restart the node if it dies"),
}
# launch argument -> parameter it overrides when not empty
OVERRIDES = {"engine": "engine", "model_path": "model.path", "device": "model.device",
             "precision": "model.precision", "compressed": "compressed"}


def _node(context):
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    overrides = {parameter: value[argument] for argument, parameter in OVERRIDES.items() if value[argument]}
    if "compressed" in overrides:
        overrides["compressed"] = overrides["compressed"].lower() == "true"
    overrides["use_sim_time"] = value["use_sim_time"].lower() == "true"
    return [Node(
        package="lisa_ros",
        executable="lisa_node",
        name=value["node_name"],
        namespace=value["namespace"],
        parameters=[value["config"], overrides],
        remappings=[("image", value["image"]), ("instruction", value["instruction"])],
        ros_arguments=["--log-level", value["log_level"]],
        respawn=value["respawn"].lower() == "true",
        output="screen",
        emulate_tty=True,
    )]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=description)
         for name, (default, description) in ARGUMENTS.items()]
        + [OpaqueFunction(function=_node)]
    )
