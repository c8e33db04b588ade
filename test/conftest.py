"""Shared fixtures: a ROS probe node in the test process, and lisa_node started as a separate process.

ROS tests need the environment of ``source scripts/ros_env.sh --isolated`` (venv, colcon
install, DDS on loopback, a ROS_DOMAIN_ID of the run's own); scripts/test.sh provides it.
Without it (robot networking included), tests marked ``ros`` are skipped.

Typical use::

    def test_x(lisa_node_process, ros_probe):
        node = lisa_node_process(params={"model.delay_s": 0.2})
        results = ros_probe.collect(node.topic("~/result"), SegmentationResult)
        ...
"""
from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import numpy as np
import pytest

from lisa_ros.tools.node_process import NodeProcess
from polling import resend_until_answered, wait_for  # noqa: F401  (tests import wait_for from conftest)

REPO = Path(__file__).resolve().parents[1]
PLUMBING_CONFIG = REPO / "config" / "plumbing_test.yaml"
LOOPBACK_PROFILE = REPO / "config" / "fastdds_localhost.xml"

try:
    import rclpy  # noqa: F401

    from lisa_ros.msg import SegmentationResult  # noqa: F401  (colcon-built interfaces)

    # Only on loopback: a shell with the robot's networking would put the tests on the robot's network.
    ROS_AVAILABLE = Path(os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE", "/")).resolve() == LOOPBACK_PROFILE
    ROS_SKIP_REASON = "run through scripts/test.sh (or source scripts/ros_env.sh --isolated): DDS on loopback"
except ImportError as error:
    ROS_AVAILABLE = False
    ROS_SKIP_REASON = f"ROS 2 / lisa_ros interfaces not importable ({error}); run scripts/test.sh"


def pytest_collection_modifyitems(config, items):
    if ROS_AVAILABLE:
        return
    skip = pytest.mark.skip(reason=ROS_SKIP_REASON)
    for item in items:
        if "ros" in item.keywords:
            item.add_marker(skip)


def make_image_msg(width=64, height=48, encoding="rgb8", stamp=None, frame_id="camera", fill=None):
    """A sensor_msgs/Image with a deterministic gradient (or a constant ``fill``) and the given stamp."""
    from sensor_msgs.msg import Image

    channels = {"rgb8": 3, "bgr8": 3, "mono8": 1}[encoding]
    if fill is None:
        pixels = (np.arange(width * height * channels) % 251).astype(np.uint8)
    else:
        pixels = np.full(width * height * channels, fill, np.uint8)
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=0, step=width * channels)
    msg.data = pixels.tobytes()
    msg.header.frame_id = frame_id
    if stamp is not None:
        msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    return msg


class RosProbe:
    """A plain rclpy node spinning in a background thread, for talking to nodes under test."""

    def __init__(self, context, name: str) -> None:
        from lisa_ros.tools.spinning_node import SpinningNode

        self._spinning = SpinningNode(name, context)
        self.context, self.node = context, self._spinning.node

    def collect(self, topic: str, msg_type, qos=100) -> list:
        """Subscribe and return the list the messages are appended to."""
        received: list = []
        self.node.create_subscription(msg_type, topic, received.append, qos)
        return received

    def publisher(self, topic: str, msg_type, qos=10, wait_for_subscribers: int = 1, timeout: float = 15.0):
        """A publisher, returned once ``wait_for_subscribers`` subscriptions have matched it."""
        publisher = self.node.create_publisher(msg_type, topic, qos)
        wait_for(lambda: publisher.get_subscription_count() >= wait_for_subscribers, timeout,
                 f"a subscriber on {topic}")
        return publisher

    def client(self, service: str, srv_type, timeout: float = 15.0):
        client = self.node.create_client(srv_type, service)
        if not client.wait_for_service(timeout_sec=timeout):
            pytest.fail(f"service {service} not available after {timeout} s")
        return client

    def call(self, client, request, timeout: float = 20.0, resend_every: float | None = None):
        """The response within ``timeout`` s. ``resend_every`` (idempotent services only): see
        resend_until_answered."""
        future = resend_until_answered(lambda: client.call_async(request), timeout, resend_every or timeout,
                                       client.remove_pending_request)
        if future is None:
            pytest.fail(f"timed out after {timeout} s waiting for a response from {client.srv_name}")
        return future.result()

    def close(self):
        self._spinning.close()


@pytest.fixture(scope="session")
def ros_context():
    """An rclpy context for the test process (initialised once per session)."""
    if not ROS_AVAILABLE:
        pytest.skip(ROS_SKIP_REASON)
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    yield context
    rclpy.try_shutdown(context=context)


@pytest.fixture(scope="session")
def ros_probe(ros_context):
    """A RosProbe shared by the session (create entities freely; topics are namespaced per node)."""
    probe = RosProbe(ros_context, f"lisa_test_probe_{os.getpid()}")
    yield probe
    probe.close()


@pytest.fixture(scope="session")
def tiny_lisa_checkpoint(tmp_path_factory):
    """A tiny random LISA checkpoint (untrained: fast to write; answers are arbitrary). Returns its path."""
    pytest.importorskip("torch")
    from lisa_ros.model.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_lisa"), layout="7b", seed=0, train_steps=0).lisa_dir


@pytest.fixture(scope="session")
def answering_tiny_lisa_checkpoint(tmp_path_factory):
    """A tiny LISA checkpoint trained as `lisa-ros make-tiny-checkpoint` trains it (the demo's; a few seconds): it
    answers in LISA's format, e.g. "Sure, [SEG].", so its answers carry masks (meaningless ones). Returns its path."""
    pytest.importorskip("torch")
    from lisa_ros.model.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_lisa_answering"), layout="7b", seed=0).lisa_dir


class LisaNodeProcess(NodeProcess):
    """A lisa_node running as its own process (like `ros2 run`), in a namespace of its own."""

    def wait_for_state(self, probe: RosProbe, label: str = "active", timeout: float = 60.0) -> None:
        """Wait until the node reports the lifecycle state ``label`` (it answers only once spinning,
        i.e. after auto-configure has loaded the model)."""
        from lifecycle_msgs.srv import GetState

        deadline = time.monotonic() + timeout
        client = probe.client(self.topic("~/get_state"), GetState, timeout)
        while True:
            if self.popen.poll() is not None:
                pytest.fail(f"lisa_node exited with {self.popen.returncode}; log:\n{self.log}")
            answered = resend_until_answered(lambda: client.call_async(GetState.Request()), 2.0, 2.0,
                                             client.remove_pending_request)
            if answered is not None and answered.result().current_state.label == label:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"lisa_node not {label} after {timeout} s; log:\n{self.log}")
            time.sleep(0.1)

    def change_state(self, probe: RosProbe, transition: str) -> bool:
        """Trigger a lifecycle transition by label (configure, activate, deactivate, cleanup, shutdown)."""
        from lifecycle_msgs.srv import ChangeState

        client = probe.client(self.topic("~/change_state"), ChangeState)
        request = ChangeState.Request()
        request.transition.label = transition
        return probe.call(client, request, timeout=30.0).success


@pytest.fixture
def lisa_node_process(ros_probe, tmp_path):
    """Factory: start lisa_node as a separate process; every one started is stopped at teardown.

    Arguments: params_file (default config/plumbing_test.yaml), params (dict of
    extra parameters, written to a second params file), remaps (dict), extra_args,
    wait_active (default True: returns once the node reports the active state, within
    start_timeout seconds).
    """
    started: list[LisaNodeProcess] = []
    counter = itertools.count()

    def start(params_file=PLUMBING_CONFIG, params: dict | None = None, remaps: dict | None = None,
              extra_args: list[str] | None = None, wait_active: bool = True,
              start_timeout: float = 60.0) -> LisaNodeProcess:
        index = next(counter)
        namespace = f"/lisa_test_{os.getpid()}_{index}_{int(time.monotonic() * 1000) % 100000}"
        process = LisaNodeProcess(namespace=namespace, params_files=[] if params_file is None else [params_file],
                                  params=params, remaps=remaps, ros_args=extra_args or [],
                                  workdir=tmp_path / f"lisa_node_{index}")
        started.append(process)
        if wait_active:
            process.wait_for_state(ros_probe, "active", start_timeout)
        return process

    yield start
    for process in started:
        process.stop()



# -- parameters, as `ros2 param set/get` reach them ----------------------------------------------------------

def set_parameters(io, **values):
    """Set through the node's SetParameters service, as `ros2 param set` does; returns {name: (successful, reason)}."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    client = io.probe.client(io.node.topic("~/set_parameters"), SetParameters)
    request = SetParameters.Request(parameters=[Parameter(n, value=v).to_parameter_msg() for n, v in values.items()])
    results = io.probe.call(client, request).results
    return {name: (r.successful, r.reason) for name, r in zip(values, results, strict=True)}


def get_parameters(io, *names):
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    client = io.probe.client(io.node.topic("~/get_parameters"), GetParameters)
    values = io.probe.call(client, GetParameters.Request(names=list(names))).values
    return {name: parameter_value_to_python(v) for name, v in zip(names, values, strict=True)}


class NodeIO:
    """Talks to one LisaNodeProcess: publishers, collectors and the services, ready to use."""

    def __init__(self, probe: RosProbe, node: LisaNodeProcess) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        from lisa_ros.msg import SegmentationResult
        from lisa_ros.srv import Segment

        self.probe, self.node = probe, node
        self.results = probe.collect(node.topic("~/result"), SegmentationResult)
        self.masks = probe.collect(node.topic("~/mask"), Image)
        self.explanations = probe.collect(node.topic("~/explanation"), String)
        self._diagnostics = probe.collect("/diagnostics", DiagnosticArray)
        self.images = probe.publisher(node.topic("image"), Image)
        self.instructions = probe.publisher(node.topic("instruction"), String, qos=100)
        self.segment_client = probe.client(node.topic("~/segment"), Segment)
        self.frames_published = 0

    def diagnostics(self) -> dict[str, str]:
        """Values of the newest /diagnostics status from this node ({} before the first)."""
        name = f"{self.node.namespace}/lisa_node: segmentation"
        for array in reversed(self._diagnostics):
            for status in array.status:
                if status.name == name:
                    return {kv.key: kv.value for kv in status.values} | {"_message": status.message,
                                                                         "_level": status.level}
        return {}

    def publish_frame(self, msg, timeout: float = 10.0, publisher=None) -> None:
        """Publish a frame and wait until the node reports having received it (/diagnostics).

        The image subscription is best effort: a frame sent while the node's reader is still
        matching the publisher is lost, so it is sent again (every second) until it arrives.
        ``publisher``: another one than ``self.images`` (e.g. on <image>/compressed).
        """
        target = self.frames_published + 1
        deadline = time.monotonic() + timeout
        while True:
            (publisher or self.images).publish(msg)
            retry_at = min(deadline, time.monotonic() + 1.0)
            while time.monotonic() < retry_at:
                received = int(self.diagnostics().get("frames_received", 0))
                if received >= target:
                    self.frames_published = received
                    return
                time.sleep(0.01)
            if time.monotonic() >= deadline:
                pytest.fail(f"the node did not receive frame {target} within {timeout} s")

    def ask(self, text: str) -> None:
        from std_msgs.msg import String

        self.instructions.publish(String(data=text))

    def results_for(self, text: str, count: int = 1, timeout: float = 15.0) -> list:
        """Wait for ``count`` results whose instruction echo starts with ``text``."""
        return wait_for(lambda: (found := [r for r in list(self.results) if r.instruction.startswith(text)])
                        and len(found) >= count and found, timeout, f"{count} result(s) for {text!r}")

    def diagnostics_stamps(self, count: int, after: float, timeout: float) -> list[float]:
        """Header stamps (s, the node's clock) of this node's first ``count`` /diagnostics messages stamped
        after ``after`` (time.time(): the same clock on one machine)."""
        name = f"{self.node.namespace}/lisa_node: segmentation"

        def stamps() -> list[float]:
            return [t for a in list(self._diagnostics) if any(s.name == name for s in a.status)
                    if (t := a.header.stamp.sec + a.header.stamp.nanosec * 1e-9) > after]

        return wait_for(lambda: len(found := stamps()) >= count and found[:count], timeout,
                        f"{count} /diagnostics messages")

    def call(self, text: str, image=None, reset: bool = False, conversation_id: str = "", timeout: float = 20.0):
        from lisa_ros.srv import Segment

        request = Segment.Request(instruction=text, reset_conversation=reset, conversation_id=conversation_id)
        if image is not None:
            request.image = image
        return self.probe.call(self.segment_client, request, timeout).result


@pytest.fixture
def lisa_io(lisa_node_process, ros_probe):
    """Factory: start a lisa_node process (same arguments as lisa_node_process) and return its NodeIO."""

    def start(**kwargs) -> NodeIO:
        return NodeIO(ros_probe, lisa_node_process(**kwargs))

    return start
