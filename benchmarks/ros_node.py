"""``lisa_node`` as its own process (``lisa_ros.tools.node_process``) and a client talking to it over real DDS.

Needs the environment of ``source scripts/ros_env.sh --isolated`` (loopback-only Fast DDS profile,
a ROS_DOMAIN_ID of its own, the colcon install that provides ``lisa_ros.msg``).
"""
from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import common  # noqa: F401  (lisa_ros from the source tree when it is not installed)
from lisa_ros.tools.node_process import NodeProcess

LOOPBACK_PROFILE = Path(__file__).resolve().parents[1] / "config" / "fastdds_localhost.xml"


def require_ros_env() -> None:
    """Exit unless DDS is on loopback with a domain of this run's own: a benchmark never meets the robot's nodes."""
    profile = Path(os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE", "/")).resolve()
    if profile != LOOPBACK_PROFILE or "ROS_DOMAIN_ID" not in os.environ:
        sys.exit("run `source scripts/ros_env.sh --isolated` first (keeps DDS on 127.0.0.1, in a domain of its own)")


def cpu_seconds(pid: int) -> float | None:
    """user + system CPU seconds of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def start_node(params: dict[str, Any]) -> NodeProcess:
    """lisa_node in a namespace of its own, with the given parameters (dotted keys).

    LISA_BENCH_NODE_EXECUTABLE: another script to run instead (e.g. an instrumented node, for profiling).
    """
    return NodeProcess(namespace=f"/lisa_bench_{os.getpid()}_{int(time.monotonic() * 1000) % 100000}",
                       params=params, workdir=Path(tempfile.mkdtemp(prefix="lisa_bench_")),
                       executable=os.environ.get("LISA_BENCH_NODE_EXECUTABLE") or None)


class Client:
    """A plain rclpy node spinning in a thread: publishes images/instructions, collects results."""

    def __init__(self, node: NodeProcess, name: str = "lisa_bench_client") -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        from lisa_ros.msg import SegmentationResult
        from lisa_ros.tools.spinning_node import SpinningNode

        self.node_process = node
        self._spinning = SpinningNode(name)
        self.node = self._spinning.node
        self._lock = threading.Condition()
        self.results: dict[str, tuple[float, Any]] = {}  # instruction -> (arrival perf_counter, first msg)
        self.result_counts: dict[str, int] = {}  # instruction -> results received (must be 1)
        self.diagnostics: dict[str, str] = {}
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(SegmentationResult, node.topic("~/result"), self._on_result, reliable)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.images = self.node.create_publisher(Image, node.topic("image"), 1)
        self.instructions = self.node.create_publisher(String, node.topic("instruction"), reliable)

    def _on_result(self, msg) -> None:
        arrived = time.perf_counter()
        with self._lock:
            self.results.setdefault(msg.instruction, (arrived, msg))
            self.result_counts[msg.instruction] = self.result_counts.get(msg.instruction, 0) + 1
            self._lock.notify_all()

    def _on_diagnostics(self, msg) -> None:
        name = f"{self.node_process.namespace}/lisa_node: segmentation"
        for status in msg.status:
            if status.name == name:
                with self._lock:
                    self.diagnostics = {kv.key: kv.value for kv in status.values} | {"_message": status.message}
                    self._lock.notify_all()

    def wait(self, condition, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not condition():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.05))
            return True

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the node reports itself active and both of its input subscriptions have matched."""
        ok = self.wait(lambda: self.diagnostics.get("_message") == "active", timeout)
        deadline = time.monotonic() + timeout
        while ok and (self.images.get_subscription_count() < 1 or self.instructions.get_subscription_count() < 1):
            if time.monotonic() > deadline or self.node_process.popen.poll() is not None:
                ok = False
                break
            time.sleep(0.05)
        if not ok:
            raise RuntimeError(f"lisa_node did not become active; log:\n{self.node_process.log_tail()}")

    def ask(self, text: str) -> float:
        """Publishes an instruction; returns the perf_counter just before publishing."""
        from std_msgs.msg import String

        msg = String(data=text)
        start = time.perf_counter()
        self.instructions.publish(msg)
        return start

    def wait_result(self, text: str, timeout: float) -> tuple[float, Any] | None:
        if not self.wait(lambda: text in self.results, timeout):
            return None
        with self._lock:
            return self.results[text]

    def close(self) -> None:
        self._spinning.close()


def image_msg(width: int, height: int, seed: int = 0):
    """An rgb8 sensor_msgs/Image with camera-like content."""
    import numpy as np
    from sensor_msgs.msg import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) % 256], -1)
    pixels = np.clip(pixels + rng.integers(-20, 20, pixels.shape), 0, 255).astype(np.uint8)
    msg = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3)
    msg.data = pixels.tobytes()
    msg.header.frame_id = "camera"
    return msg
