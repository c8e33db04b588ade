"""Helpers for the reliability suite (no fixtures here; see conftest.py)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from image_samples import raw_fields
from polling import wait_for  # noqa: F401  (the suite imports it from here)


def settle(condition, timeout: float, interval: float = 0.05) -> bool:
    """Like wait_for but returns False instead of failing (for accounting what never came)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def image_msg(pixels: np.ndarray, encoding: str, *, padding: int = 0, bigendian: bool = False,
              stamp=(0, 0), frame_id: str = "camera"):
    """A sensor_msgs/Image holding ``pixels`` in ``encoding``."""
    from sensor_msgs.msg import Image

    width, height, step, data = raw_fields(pixels, padding=padding, bigendian=bigendian)
    msg = Image(width=width, height=height, step=step, encoding=encoding, is_bigendian=int(bigendian))
    msg.data = data
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    return msg


def bare_image(**fields):
    """A sensor_msgs/Image with exactly the given fields (for inconsistent ones)."""
    from sensor_msgs.msg import Image

    data = fields.pop("data", b"")
    stamp = fields.pop("stamp", (0, 0))
    msg = Image(encoding=fields.pop("encoding", "rgb8"), **fields)
    msg.data = data
    msg.header.frame_id = "camera"
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    return msg


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def collect_all(probe, topic: str, msg_type) -> list:
    """Like RosProbe.collect, but KEEP_ALL reliable: the test's own reader never overwrites a result it
    has not taken yet (a depth-100 reader in a busy test process can, under floods)."""
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    received: list = []
    subscription = probe.node.create_subscription(
        msg_type, topic, received.append, QoSProfile(history=HistoryPolicy.KEEP_ALL,
                                                     reliability=ReliabilityPolicy.RELIABLE))
    wait_for(lambda: subscription.get_publisher_count() >= 1, 10, f"a publisher on {topic}")
    return received
