"""The replay's depth side: a bag's depth image and camera-info topics go to the node's ``depth`` and
``depth_camera_info`` (3D targets), each message sent just before the first colour frame it does not
postdate (by header stamp), so the node has the depth frame of a colour frame when it answers on it.

Messages are read lazily, one per topic ahead, so a long depth recording is not held in memory.
The node's ``~/targets_3d`` answers go into the results (``targets_record``) for ``lisa-ros eval``'s 3D error.
"""
from __future__ import annotations

import argparse
import sys
import time

from lisa_ros.core.depth import DepthStatus
from lisa_ros.tools import bag_io

CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TARGETS_3D = "lisa_ros/msg/Targets3D"
NODE_TOPICS = {"depth": bag_io.IMAGE, "depth_camera_info": CAMERA_INFO}  # the node's names -> their types
# A node that subscribes depth does so at activation, with the image subscription the replay waited for.
SUBSCRIBER_WAIT_S = 3.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("depth (the node's 3D targets, with depth.enabled)")
    group.add_argument("--depth-topic", help="depth Image topic in the bag, sent to the node's `depth`; default: "
                       "the only Image topic with 'depth' in its name other than the colour one")
    group.add_argument("--camera-info-topic", help="CameraInfo topic in the bag, sent to `depth_camera_info`; "
                       "default: the only CameraInfo topic (or the only one with 'depth' in its name)")
    group.add_argument("--no-depth", action="store_true", help="do not send the bag's depth and camera-info topics")


def is_depth_image(topic: str, msgtype: str) -> bool:
    """A topic the replay takes for a depth stream rather than the colour one (by its name)."""
    return msgtype == bag_io.IMAGE and "depth" in topic.lower()


def _only(topics: list[str]) -> str | None:
    return topics[0] if len(topics) == 1 else None


def resolve(bag: bag_io.InputBag, args: argparse.Namespace, image_topic: str) -> dict[str, str]:
    """{node topic name: bag topic} of what this replay carries (empty: none)."""
    if getattr(args, "no_depth", False):
        return {}
    chosen = {}
    if args.depth_topic:
        chosen["depth"] = args.depth_topic
        bag.require_topic(args.depth_topic, (bag_io.IMAGE,))
    else:
        found = _only([t for t, kind in bag.topics.items() if is_depth_image(t, kind)
                       and t != image_topic and not t.startswith("/ground_truth/")])
        if found:
            chosen["depth"] = found
    if args.camera_info_topic:
        chosen["depth_camera_info"] = args.camera_info_topic
        bag.require_topic(args.camera_info_topic, (CAMERA_INFO,))
    else:
        infos = [t for t, kind in bag.topics.items() if kind == CAMERA_INFO]
        found = _only(infos) or _only([t for t in infos if "depth" in t.lower()])
        if found:
            chosen["depth_camera_info"] = found
    return chosen


class DepthFeed:
    """Publishes the chosen topics' messages in step with the colour frames and writes them to the output bag."""

    def __init__(self, bag: bag_io.InputBag, topics: dict[str, str], node, output: bag_io.OutputBag):
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        from lisa_ros.tools.ros_link import ros_type

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self._feeds = []  # [bag topic, msgtype, publisher, iterator, next (stamp, data) or None]
        for node_topic, bag_topic in topics.items():
            msgtype = NODE_TOPICS[node_topic]
            output.add_topic(bag_topic, msgtype)
            iterator = iter(bag.messages(bag_topic))
            feed = [bag_topic, msgtype, node.create_publisher(ros_type(msgtype), bag_topic, reliable), iterator, None]
            self._advance(feed)
            self._feeds.append(feed)
        self._output = output
        self.sent = {bag_topic: 0 for bag_topic in topics.values()}

    @staticmethod
    def _advance(feed) -> None:
        item = next(feed[3], None)
        if item is None:
            feed[4] = None
            return
        _, msg = item
        feed[4] = (bag_io.stamp_ns(msg.header), bytes(bag_io.typestore().serialize_cdr(msg, feed[1])))

    def wait_for_subscribers(self, timeout_s: float = SUBSCRIBER_WAIT_S) -> bool:
        """Whether the node subscribes every depth topic; a node without depth.enabled never does: that is
        said instead of sending into the void (after a short wait: the node was already found)."""
        deadline = time.monotonic() + timeout_s
        while any(feed[2].get_subscription_count() == 0 for feed in self._feeds):
            if time.monotonic() > deadline:
                missing = [feed[0] for feed in self._feeds if feed[2].get_subscription_count() == 0]
                print(f"warning: nobody subscribes {missing} (is depth.enabled set on the node?)", file=sys.stderr)
                return False
            time.sleep(0.01)
        return True

    def up_to(self, stamp_ns: int) -> None:
        """Send every message not yet sent whose header stamp is at or before ``stamp_ns``."""
        for feed in self._feeds:
            while feed[4] is not None and feed[4][0] <= stamp_ns:
                data = feed[4][1]
                feed[2].publish(data)
                self._output.write_raw(feed[0], time.time_ns(), data)
                self.sent[feed[0]] += 1
                self._advance(feed)


def _xyz(point) -> list[float]:
    return [round(float(point.x), 5), round(float(point.y), 5), round(float(point.z), 5)]


def targets_record(msg) -> dict:
    """A lisa_ros/Targets3D as the results line's ``targets_3d``: points in metres, statuses by name."""
    targets = []
    for target in msg.targets:
        entry = {"status": DepthStatus(target.status).name, "status_message": target.status_message}
        if target.status == DepthStatus.OK:
            entry |= {"centroid": _xyz(target.centroid), "box_min": _xyz(target.box_min),
                      "box_max": _xyz(target.box_max), "distance": round(float(target.distance), 5),
                      "valid_pixels": int(target.valid_pixels), "surfaces": int(target.surfaces),
                      "surface_fraction": round(float(target.surface_fraction), 4)}
        targets.append(entry)
    return {"frame_id": msg.header.frame_id, "depth_stamp_ns": msg.depth_stamp.sec * 10**9 + msg.depth_stamp.nanosec,
            "status_message": msg.status_message, "best_index": int(msg.best_index), "targets": targets}
