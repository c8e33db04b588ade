"""Command-line tools (``lisa-ros <command>``): ROS-free unless the command says otherwise."""
