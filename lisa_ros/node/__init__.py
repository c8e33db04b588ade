"""The rclpy side of lisa_ros: message conversion and the lifecycle node."""
