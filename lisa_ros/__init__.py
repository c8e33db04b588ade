"""lisa_ros: LISA reasoning segmentation for ROS 2.

Sub-packages, by role:
- ``lisa_ros.core``: ROS-free contracts (engine interface, result types, image and
  instruction validation, the request worker).
- ``lisa_ros.model``: the LISA model and its engine (torch, transformers,
  segment_anything); no rclpy.
- ``lisa_ros.node``: the rclpy lifecycle node.
- ``lisa_ros.tools``: command-line tools (replay, eval, tiny checkpoints, convert).
"""
