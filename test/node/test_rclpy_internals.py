"""The private rclpy parts lisa_ros.node.rclpy_internals wraps (and NodeExecutor's reliance on spin_once) still
exist and behave as used: an rclpy release that changes one fails here, naming it."""
from __future__ import annotations

import inspect
import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.action import ActionClient, ActionServer  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.subscription import Subscription  # noqa: E402

from lisa_ros.node import rclpy_internals  # noqa: E402
from lisa_ros.node.rclpy_internals import (  # noqa: E402
    ResultCountingActionServer,
    declare_qos_overrides,
    parameter_overrides,
)

DECLARE = "rclpy.qos_overriding_options._declare_qos_parameters"
OVERRIDES = "rclpy.node.Node._parameter_overrides"


def _parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


@pytest.fixture
def node(ros_context):
    made = []

    def make(name: str, **kwargs):
        made.append(rclpy.create_node(name, context=ros_context, start_parameter_services=False,
                                      enable_rosout=False, **kwargs))
        return made[-1]
    yield make
    for each in made:
        each.destroy_node()


def test_declare_qos_parameters_applies_the_overrides_to_the_profile(node):
    assert _parameters(rclpy_internals._declare_qos_parameters) == [
        "entity_type", "node", "topic_name", "qos", "options"], f"{DECLARE} changed its signature"
    probe = node("internals_qos", parameter_overrides=[
        Parameter("qos_overrides./camera.subscription.depth", value=7),
        Parameter("qos_overrides./camera.subscription.reliability", value="best_effort")])
    profile = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    declare_qos_overrides(probe, Subscription, "/camera", profile)
    assert (profile.depth, profile.reliability) == (7, ReliabilityPolicy.BEST_EFFORT), \
        f"{DECLARE} no longer applies qos_overrides to the profile it is given"
    declared = probe.describe_parameter("qos_overrides./camera.subscription.depth")
    assert declared.read_only, f"{DECLARE} no longer declares the overrides read-only"


def test_parameter_overrides_holds_undeclared_values_from_the_command_line_and_the_constructor(node):
    probe = node("internals_overrides", parameter_overrides=[Parameter("engine", value="null")],
                 cli_args=["--ros-args", "-p", "max_queue:=3"])
    overrides = parameter_overrides(probe)
    assert isinstance(overrides, dict), f"{OVERRIDES} is no longer a dict"
    assert overrides.get("engine") is not None and overrides["engine"].value == "null", \
        f"{OVERRIDES} no longer holds the constructor's parameter_overrides"
    assert overrides.get("max_queue") is not None and overrides["max_queue"].value == 3, \
        f"{OVERRIDES} no longer holds the --ros-args -p values before they are declared"
    assert not probe.has_parameter("max_queue")


def test_action_server_private_result_methods_are_as_overridden():
    get_result = getattr(ActionServer, "_execute_get_result_request", None)
    send_result = getattr(ActionServer, "_send_result_response", None)
    assert inspect.iscoroutinefunction(get_result) and _parameters(get_result) == [
        "self", "request_header_and_message"], "rclpy ActionServer._execute_get_result_request changed"
    assert send_result is not None and _parameters(send_result) == ["self", "request_header", "future"], \
        "rclpy ActionServer._send_result_response changed"


def test_result_counting_action_server_counts_a_result_until_its_response_is_sent(ros_context):
    from lisa_ros.action import Segment

    server_node = rclpy.create_node("internals_action_server", context=ros_context)
    client_node = rclpy.create_node("internals_action_client", context=ros_context)
    release = threading.Event()

    def execute(goal_handle):
        release.wait(15.0)
        goal_handle.succeed()
        return Segment.Result()

    server = ResultCountingActionServer(server_node, Segment, "internals_segment", execute_callback=execute)
    assert isinstance(server._result_futures, dict), "rclpy ActionServer._result_futures is no longer a dict"
    client = ActionClient(client_node, Segment, "internals_segment")
    executor = MultiThreadedExecutor(num_threads=4, context=ros_context)
    executor.add_node(server_node)
    executor.add_node(client_node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        assert client.wait_for_server(timeout_sec=15.0)
        sent = client.send_goal_async(Segment.Goal(instruction="x"))
        deadline = time.monotonic() + 15.0
        while not sent.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        goal = sent.result()
        assert goal.accepted
        result = goal.get_result_async()
        while server.results_owed != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.results_owed == 1, \
            "ActionServer._execute_get_result_request is no longer called for a known goal's result request"
        release.set()
        while not result.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert result.done()
        assert server.results_owed == 0, "ActionServer._send_result_response is no longer how a result goes out"
    finally:
        release.set()
        executor.shutdown(timeout_sec=2.0)
        server.destroy()
        client.destroy()
        server_node.destroy_node()
        client_node.destroy_node()
        spinner.join(timeout=2.0)


def test_node_executor_waits_for_a_running_callback(ros_context):
    """NodeExecutor learns the callbacks it runs from wait_for_ready_callbacks: a running one is waited for."""
    from lisa_ros.node.lisa_node import NodeExecutor

    probe = rclpy.create_node("internals_executor", context=ros_context)
    started, release = threading.Event(), threading.Event()

    def busy() -> None:
        timer.cancel()
        started.set()
        release.wait(10.0)

    timer = probe.create_timer(0.0, busy)
    executor = NodeExecutor(num_threads=2, context=ros_context)
    executor.add_node(probe)
    try:
        deadline = time.monotonic() + 10.0
        while not started.is_set() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        assert started.is_set()
        assert not executor.wait_for_callbacks(0.2), \
            "MultiThreadedExecutor no longer runs what wait_for_ready_callbacks returns: NodeExecutor cannot wait"
        release.set()
        assert executor.wait_for_callbacks(5.0)
    finally:
        release.set()
        executor.shutdown(timeout_sec=2.0)
        probe.destroy_node()
