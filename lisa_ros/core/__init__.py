"""ROS-free building blocks shared by the node, the model and the tools."""
