"""The replay's side of the ROS 2 graph: publishes bag messages, records what the node says.

Messages travel serialized: the bag's CDR bytes are published as they are and the
node's messages are received raw, so the output bag holds exactly the bytes that
went over DDS. Subscriptions only queue what arrives; the main thread writes the
bag (sqlite connections belong to the thread that opened them).
"""
from __future__ import annotations

import importlib
import queue
import sys
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from lisa_ros.tools import bag_io
from lisa_ros.tools.node_process import NodeProcess
from lisa_ros.tools.spinning_node import SpinningNode

IGNORED_TOPICS = {"/rosout", "/parameter_events"}


def ros_type(msgtype: str):
    """The rclpy message class for "pkg/msg/Name"."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


FIRST_STATUS_WAIT_S = 3.0  # for the node's first /diagnostics (sent every diagnostics_period, 1 s by default)


class NodeUnavailable(RuntimeError):
    """No lisa_node answered on the expected topics."""


class RosLink:
    """Publishers to the node's inputs and raw recorders of the node's outputs."""

    def __init__(self, image: tuple[str, str], instruction_topic: str, node_name: str):
        """image: (topic, "sensor_msgs/msg/Image" or ".../CompressedImage") to publish frames on."""
        self.node_name = node_name.strip("/")
        self.result_topic = f"/{self.node_name}/result"
        self.received: queue.Queue[tuple[str, str, int, bytes]] = queue.Queue()
        self._spinning = SpinningNode("lisa_replay")
        self._node = self._spinning.node
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        image_topic, self.image_type = image
        self.image_pub = self._node.create_publisher(ros_type(self.image_type), image_topic, reliable)
        # lisa_ros/Instruction on <instruction>/structured: answers are matched by request_id.
        self.instruction_pub = self._node.create_publisher(ros_type(bag_io.INSTRUCTION),
                                                           f"{instruction_topic}/structured", reliable)
        # The node's own word on why it is not ready (e.g. "configure failed: ..."), from /diagnostics.
        self._status_name = f"/{self.node_name}: segmentation"
        self.node_status: DiagnosticStatus | None = None
        # (kept for the whole replay: destroying it while the executor spins can break the spin)
        self._node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self._status_received = 0.0
        self.recorded: dict[str, str] = {}  # topic -> msgtype
        self._recorders: list = []  # the subscriptions behind ``recorded``

    @property
    def node(self):
        """The replay's rclpy node (for more publishers, e.g. depth)."""
        return self._node

    def _on_diagnostics(self, array: DiagnosticArray) -> None:
        for status in array.status:
            if status.name == self._status_name:
                self.node_status = status
                self._status_received = time.monotonic()

    def _known_result_subscribers(self, wait_until: float) -> int | None:
        """The node's latest count of ~/result readers, waiting until ``wait_until`` for its first /diagnostics;
        None for a node that publishes no such count."""
        while (known := self._result_subscribers(0.0)) is None and time.monotonic() < wait_until:
            time.sleep(0.01)
        return known

    def _result_subscribers(self, since: float) -> int | None:
        """The node's own count of ~/result readers, from a /diagnostics status received after ``since``."""
        if self.node_status is None or self._status_received <= since:
            return None
        values = {value.key: value.value for value in self.node_status.values}
        return int(values["result_subscribers"]) if "result_subscribers" in values else None

    def wait_for_node(self, timeout_s: float, process: NodeProcess | None = None) -> None:
        """Wait until the node subscribes our inputs and publishes results; then record its outputs.

        Fails at once when the node reports an ERROR on /diagnostics (configure failed: it will not
        become ready by itself) or its process exits, with the node's reason.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            ready = (
                self.image_pub.get_subscription_count() > 0
                and self.instruction_pub.get_subscription_count() > 0
                and self._node.count_publishers(self.result_topic) > 0
            )
            if ready:
                break
            status = self.node_status
            if status is not None and status.level == DiagnosticStatus.ERROR:
                raise NodeUnavailable(f"/{self.node_name} cannot answer: {status.message} (its /diagnostics; "
                                      "its log says more)")
            if process is not None and process.poll() is not None:
                raise NodeUnavailable(f"the lisa_node process exited with code {process.returncode} before it was "
                                      "ready (see its output above)")
            if time.monotonic() > deadline:
                image, instruction = self.image_pub, self.instruction_pub
                needed = (f"need subscribers on {image.topic_name} ({image.get_subscription_count()}) and "
                          f"{instruction.topic_name} ({instruction.get_subscription_count()}) and a publisher of "
                          f"{self.result_topic}")
                if status is None:
                    raise NodeUnavailable(f"no lisa_node within {timeout_s:.0f} s: {needed}; "
                                          "start one with these remappings or pass --start-node")
                fix = ("check its remappings" if status.level == DiagnosticStatus.OK else
                       "activate it (auto_activate, or `ros2 lifecycle set`)")
                raise NodeUnavailable(f"/{self.node_name} runs but is not ready within {timeout_s:.0f} s: it reports "
                                      f"{status.message!r}; {needed}; {fix}")
            time.sleep(0.05)
        self.record_outputs(("result", "mask", "explanation", "overlay"), max(deadline - time.monotonic(), 0.0))

    def record_outputs(self, names: tuple[str, ...], timeout_s: float) -> None:
        """Record the node's outputs ``names`` (``~/`` topics) once discovery lists them, and any other it has."""
        deadline = time.monotonic() + timeout_s
        # Discovery reports a node's topics one by one: wait for the wanted ones before recording.
        outputs = {f"/{self.node_name}/{name}" for name in names}
        while not outputs <= {topic for topic, _ in self._node.get_topic_names_and_types()}:
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        records_result = self.result_topic not in self.recorded
        first_status_by = min(deadline, time.monotonic() + FIRST_STATUS_WAIT_S)
        known = self._known_result_subscribers(first_status_by) if records_result else None
        self._record_node_outputs()
        created = time.monotonic()
        # The recorders are new: an answer published before they match the node's writers would be lost.
        while not all(subscription.get_publisher_count() > 0 for subscription in self._recorders):
            if time.monotonic() > deadline:
                unmatched = [s.topic_name for s in self._recorders if s.get_publisher_count() == 0]
                print(f"warning: not yet matched with the node's publishers of {unmatched}", file=sys.stderr)
                return
            time.sleep(0.01)
        if records_result and known is not None:
            # Matched on our side; the node's writer matches our reader on its own time (on a loaded machine
            # after the first answer went out, which was then lost). Its /diagnostics count says when.
            while (count := self._result_subscribers(created)) is None or count <= known:
                if time.monotonic() > deadline:
                    print(f"warning: the node's {self.result_topic} writer has not counted this replay's reader "
                          "yet: the first answers may be missed", file=sys.stderr)
                    break
                time.sleep(0.01)

    def _record_node_outputs(self) -> None:
        for topic, types in self._node.get_topic_names_and_types():
            if not topic.startswith(f"/{self.node_name}/") or topic in IGNORED_TOPICS or topic in self.recorded:
                continue
            if is_hidden(topic):
                continue  # e.g. the action's _action/feedback: `ros2 bag record` leaves hidden topics out too
            publishers = self._node.get_publishers_info_by_topic(topic)
            if not publishers:
                continue
            offered = publishers[0].qos_profile
            qos = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=offered.reliability,
                             durability=DurabilityPolicy.VOLATILE)
            msgtype = types[0]
            if msgtype not in bag_io.typestore().types:
                print(f"warning: not recording {topic}: message type {msgtype} unknown to the bag writer",
                      file=sys.stderr)
                continue
            self._recorders.append(self._node.create_subscription(
                ros_type(msgtype), topic,
                lambda data, topic=topic, msgtype=msgtype: self.received.put((topic, msgtype, time.time_ns(), data)),
                qos, raw=True,
            ))
            self.recorded[topic] = msgtype

    def close(self) -> None:
        self._spinning.close()


def is_hidden(topic: str) -> bool:
    """ROS 2's hidden names: a token starting with an underscore (an action's ``_action/*`` topics)."""
    return any(token.startswith("_") for token in topic.split("/"))


def start_node(node_name: str, image_topic: str, instruction_topic: str, params_file: str | None,
               params: list[str], extra_remaps: dict[str, str] | None = None) -> NodeProcess:
    """A lisa_node process remapped onto the replay's topics, its output on this terminal.

    ``params``: "NAME:=VALUE" words as the user typed them (``-p``). Its own process group: the
    terminal's Ctrl-C reaches the replay first, which then stops the node. ``extra_remaps``: e.g. the
    node's ``depth`` onto the bag's depth topic.
    """
    return NodeProcess(node_name=node_name, params_files=[params_file] if params_file else [],
                       remaps={"image": image_topic, "instruction": instruction_topic, **(extra_remaps or {})},
                       ros_args=[word for param in params for word in ("-p", param)],
                       capture_log=False, own_session=True)
