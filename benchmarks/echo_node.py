"""A bare rclpy process that republishes std_msgs/String from ``<ns>/ping`` to ``<ns>/pong``.

The floor of a Python-to-Python DDS round trip on this machine (same QoS and
executor kind as lisa_node), against which ``plumbing.py`` sets the node's
instruction -> result latency. Usage: ``python -P benchmarks/echo_node.py <namespace>``.
"""
from __future__ import annotations

import sys

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String


def main() -> int:
    namespace = sys.argv[1]
    rclpy.init()
    node = rclpy.create_node("lisa_bench_echo", namespace=namespace)
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
    publisher = node.create_publisher(String, "pong", qos)
    node.create_subscription(String, "ping", publisher.publish, qos)
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
