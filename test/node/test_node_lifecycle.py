"""Lifecycle: transitions over the standard services, configure failure and retry, the engine freed."""
import gc
import time
import weakref

import pytest

from conftest import make_image_msg, set_parameters, wait_for

pytestmark = pytest.mark.ros


def test_transitions_stop_and_restart_processing(lisa_io, ros_probe):
    from std_srvs.srv import Trigger

    from lisa_ros.msg import SegmentationResult

    io = lisa_io()
    node = io.node
    assert node.change_state(ros_probe, "deactivate")
    wait_for(lambda: io.images.get_subscription_count() == 0, 10, "image subscription removed")
    refused = io.call("cup")
    assert refused.status == SegmentationResult.STATUS_NOT_READY and "activate" in refused.status_message
    io.ask("while inactive")  # instructions stay subscribed: answered NOT_READY, never dropped
    assert io.results_for("while inactive")[0].status == SegmentationResult.STATUS_NOT_READY
    # Each refusal went out once on ~/result too (the service's through the same exactly-once path)
    assert [(r.instruction, r.status) for r in io.results] == [("cup", SegmentationResult.STATUS_NOT_READY),
                                                               ("while inactive", SegmentationResult.STATUS_NOT_READY)]
    assert node.change_state(ros_probe, "cleanup")
    wait_for(lambda: io.diagnostics().get("_message") == "unconfigured" and io.diagnostics()["model_id"] == "",
             5, "diagnostics to show the model unloaded")
    reset = ros_probe.call(ros_probe.client(node.topic("~/reset"), Trigger), Trigger.Request())
    assert not reset.success and "no model loaded" in reset.message
    assert node.change_state(ros_probe, "configure") and node.change_state(ros_probe, "activate")
    wait_for(lambda: io.images.get_subscription_count() == 1, 10, "image subscription back")
    io.publish_frame(make_image_msg(stamp=(3, 0)))
    io.ask("cup again")
    assert io.results_for("cup again")[0].status == SegmentationResult.STATUS_OK
    assert "model unloaded" in node.log


def test_failed_model_load_fails_configure_with_the_reason_and_can_be_retried(lisa_io, lisa_node_process, ros_probe):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    node = lisa_node_process(params={"model.load_error": "no weights at /models/missing"}, wait_active=False)
    node.wait_for_state(ros_probe, "unconfigured")
    assert "configure failed: loading the model failed: EngineError: no weights at /models/missing" in node.log
    set_parameters = ros_probe.client(node.topic("~/set_parameters"), SetParameters)
    value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="")
    reply = ros_probe.call(set_parameters, SetParameters.Request(parameters=[Parameter(name="model.load_error",
                                                                                       value=value)]))
    assert reply.results[0].successful
    assert node.change_state(ros_probe, "configure") and node.change_state(ros_probe, "activate")
    node.wait_for_state(ros_probe, "active")


def test_invalid_parameters_fail_configure_naming_each(lisa_node_process, ros_probe):
    node = lisa_node_process(params={"max_queue": 0, "pairing_policy": "oldest"}, wait_active=False)
    node.wait_for_state(ros_probe, "unconfigured")
    assert "max_queue must be >= 1, got 0" in node.log and "pairing_policy must be 'newest' or 'next'" in node.log


def test_transitions_run_in_their_own_group_whatever_change_state_is_remapped_to(ros_context):
    """change_state leaves the default group (get_state and /diagnostics answer while configure loads the model),
    found among the node's services by its type: a remapped service name does not stop the node."""
    from lisa_ros.node.lisa_node import LisaNode

    node = LisaNode("lisa_remapped_change_state", context=ros_context, cli_args=[
        "--ros-args", "-r", "~/change_state:=/elsewhere/change_state", "-p", "engine:=plumbing"])
    try:
        change_state = node._change_state_service
        assert change_state.service_name == "/elsewhere/change_state"
        assert change_state.callback_group is node._transition_group
        assert not any(ref() is change_state for ref in node.default_callback_group.entities)
    finally:
        node.destroy_node()


def test_cleanup_frees_the_engine(ros_context, tmp_path):
    """In-process: after cleanup nothing holds the engine (what frees GPU memory for LISA)."""
    from rclpy.lifecycle import TransitionCallbackReturn

    from lisa_ros.node.lisa_node import LisaNode

    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters:\n    engine: plumbing\n")
    node = LisaNode("lisa_lifecycle_probe", context=ros_context,
                    cli_args=["--ros-args", "--params-file", str(params)])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        engine = weakref.ref(node._engine)
        assert engine().loaded
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert engine() is not None and engine().loaded  # deactivate keeps the model
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        gc.collect()
        assert engine() is None
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    finally:
        node.release("test over")
        node.destroy_node()


def test_after_a_lifecycle_shutdown_requests_are_told_to_restart_the_node(lisa_io, ros_probe):
    """It used to answer "node is node shutting down; activate it": a finalized node can never be activated."""
    from lisa_ros.msg import SegmentationResult

    io = lisa_io()
    assert io.node.change_state(ros_probe, "shutdown")
    io.node.wait_for_state(ros_probe, "finalized")
    io.ask("after the shutdown")
    answers = [io.results_for("after the shutdown")[0], io.call("after the shutdown too")]
    for answer in answers:
        assert answer.status == SegmentationResult.STATUS_NOT_READY
        assert "restart lisa_node" in answer.status_message and "activate" not in answer.status_message
        assert "node is node" not in answer.status_message
    wait_for(lambda: io.diagnostics().get("_message") == "finalized (lifecycle shutdown)", 5, "diagnostics")


def test_deactivate_cancels_the_running_inference_and_the_next_request_is_not_delayed(lisa_io, ros_probe):
    """The hung call used to run on after deactivate: the first request after activate waited behind it,
    reported as inference time."""
    from lisa_ros.msg import SegmentationResult

    io = lisa_io(params={"model.hang_s": 30.0, "inference_timeout": 60.0})
    io.publish_frame(make_image_msg(stamp=(1, 0)))
    io.ask("cup #hang")
    wait_for(lambda: io.diagnostics().get("queue_depth") == "1", 5, "the hung request in progress")
    assert io.node.change_state(ros_probe, "deactivate")
    assert io.results_for("cup #hang")[0].status == SegmentationResult.STATUS_NOT_READY
    assert io.node.change_state(ros_probe, "activate")
    wait_for(lambda: io.images.get_subscription_count() == 1, 10, "image subscription back")
    io.publish_frame(make_image_msg(stamp=(2, 0)))
    after = io.call("cup after", timeout=10)
    assert after.status == SegmentationResult.STATUS_OK, after.status_message
    assert after.total_ms < 1000 and after.queue_wait_ms < 1000 and after.inference_ms < 500


def _median_gap(stamps: list[float]) -> float:
    gaps = sorted(b - a for a, b in zip(stamps, stamps[1:]))
    return gaps[len(gaps) // 2]


def test_a_diagnostics_period_set_while_unconfigured_applies_at_once_and_configure_keeps_it(lisa_io, ros_probe):
    """The timer used to keep the period read at start-up, then to wait for the next configure (the README
    says live changes apply at once)."""
    io = lisa_io()  # diagnostics_period 0.1 (config/plumbing_test.yaml)
    assert io.node.change_state(ros_probe, "deactivate") and io.node.change_state(ros_probe, "cleanup")
    assert set_parameters(io, diagnostics_period=0.5) == {"diagnostics_period": (True, "")}
    changed = time.time()  # the timer was retimed before the reply
    assert 0.4 < _median_gap(io.diagnostics_stamps(5, changed, 10)) < 0.7
    assert io.diagnostics().get("_message") == "unconfigured"  # measured before the configure
    assert io.node.change_state(ros_probe, "configure")
    configured = time.time()
    assert 0.4 < _median_gap(io.diagnostics_stamps(5, configured, 10)) < 0.7


def test_a_live_diagnostics_period_retimes_diagnostics_at_once_while_active(lisa_io):
    """Generous bounds (2 s, then 0.2 s, from the config's 0.1 s): the next message comes a new period after
    the change, never a whole old period later."""
    io = lisa_io()
    assert set_parameters(io, diagnostics_period=2.0) == {"diagnostics_period": (True, "")}
    stamps = io.diagnostics_stamps(3, time.time(), 15)  # the timer was retimed before the reply
    assert all(1.5 < b - a < 4.0 for a, b in zip(stamps, stamps[1:])), stamps
    assert set_parameters(io, diagnostics_period=0.2) == {"diagnostics_period": (True, "")}
    changed = time.time()
    stamps = io.diagnostics_stamps(6, changed, 10)
    assert stamps[0] - changed < 1.0 and 0.1 < _median_gap(stamps) < 0.6, (changed, stamps)
    assert io.diagnostics()["_message"] == "active"


def test_a_live_value_set_while_the_model_loads_reaches_the_worker(lisa_node_process, ros_probe):
    """It was accepted but lost: configure had read the parameters before the load, and there was no config
    to apply it to until the load ended."""
    from diagnostic_msgs.msg import DiagnosticArray
    from lifecycle_msgs.srv import ChangeState
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    from conftest import NodeIO

    node = lisa_node_process(params={"model.load_delay_s": 6.0, "auto_configure": False}, wait_active=False)
    node.wait_for_state(ros_probe, "unconfigured")
    client = ros_probe.client(node.topic("~/set_parameters"), SetParameters)  # found before the load starts
    diagnostics = ros_probe.collect("/diagnostics", DiagnosticArray)
    configure = ChangeState.Request()
    configure.transition.label = "configure"
    configured = ros_probe.client(node.topic("~/change_state"), ChangeState).call_async(configure)
    wait_for(lambda: any(s.name == f"{node.namespace}/lisa_node: segmentation" and "loading the model" in s.message
                         for a in list(diagnostics) for s in a.status), 10, "the load to start")
    request = SetParameters.Request(parameters=[Parameter("max_masks", value=2).to_parameter_msg()])
    assert ros_probe.call(client, request).results[0].successful
    assert not configured.done(), "the load ended before the change: raise model.load_delay_s"
    assert wait_for(configured.done, 30, "the configure reply") and configured.result().success
    assert node.change_state(ros_probe, "activate")
    io = NodeIO(ros_probe, node)
    io.publish_frame(make_image_msg(width=8, height=30, stamp=(1, 0)))
    result = io.call("a and b and c")  # the plumbing engine: one mask per part
    assert len(result.masks) == 2 and result.status_message.startswith("2 of 3 masks kept"), result.status_message


def test_an_answer_that_cannot_become_a_message_is_still_answered_once_as_an_engine_error(ros_context, ros_probe):
    """In-process: a result that fails to build (here a mask of the wrong kind) or to serialize used to raise
    out of the publisher, leaving the topic without an answer (and, when building failed, a service or action
    caller waiting forever)."""
    from rclpy.task import Future

    from lisa_ros.core.types import Answer, EngineOutput, Request, Status
    from lisa_ros.msg import SegmentationResult
    from lisa_ros.node.lisa_node import LisaNode

    node = LisaNode("lisa_unbuildable_probe", namespace="/unbuildable_probe", context=ros_context,
                    cli_args=["--ros-args", "-p", "engine:=plumbing"])
    try:
        results = ros_probe.collect("/unbuildable_probe/lisa_unbuildable_probe/result", SegmentationResult)
        wait_for(lambda: node._result_pub.get_subscription_count() >= 1, 10, "the probe subscribed to ~/result")
        answered = Future()
        request = Request("segment the cup", request_id="unbuildable-1", context=answered)
        unbuildable = EngineOutput(masks=[object()], scores=[0.9], text="Sure, [SEG].")
        node._publish_answer(Answer(request, Status.OK, "1 mask", output=unbuildable))
        assert answered.done()
        result = answered.result()
        assert result.status == SegmentationResult.STATUS_ENGINE_ERROR and not result.masks
        assert "could not be made into a result message" in result.status_message
        wait_for(lambda: [r.request_id for r in results] == ["unbuildable-1"], 10, "the answer on ~/result")
        assert results[0].status == SegmentationResult.STATUS_ENGINE_ERROR

        # Text that cannot be serialized (a lone surrogate): the answer goes out without it.
        answered = Future()
        request = Request("segment the cup", request_id="unpublishable-1", context=answered)
        unpublishable = EngineOutput(masks=[], scores=[], text="Sure \ud800")
        node._publish_answer(Answer(request, Status.NOT_FOUND, "no [SEG]", output=unpublishable))
        assert answered.done() and answered.result().status == SegmentationResult.STATUS_ENGINE_ERROR
        assert "could not be published: UnicodeEncodeError" in answered.result().status_message
        wait_for(lambda: len(results) == 2, 10, "the second answer on ~/result")
        assert results[1].request_id == "unpublishable-1" and results[1].explanation == ""
    finally:
        node.release("test over")
        node.destroy_node()
