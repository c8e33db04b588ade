"""Lifecycle: transitions over the standard services, configure failure and retry, the engine freed."""
import gc
import weakref

import pytest

from conftest import make_image_msg, wait_for

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


def test_a_new_diagnostics_period_takes_effect_at_the_next_configure(lisa_io, ros_probe):
    """The diagnostics timer used to keep the period read at start-up."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    io = lisa_io()  # diagnostics_period 0.1 (config/plumbing_test.yaml)
    assert io.node.change_state(ros_probe, "deactivate") and io.node.change_state(ros_probe, "cleanup")
    client = ros_probe.client(io.node.topic("~/set_parameters"), SetParameters)
    period = Parameter(name="diagnostics_period",
                       value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=0.5))
    assert ros_probe.call(client, SetParameters.Request(parameters=[period])).results[0].successful
    assert io.node.change_state(ros_probe, "configure")
    name = f"{io.node.namespace}/lisa_node: segmentation"
    first = len(io._diagnostics)
    arrays = wait_for(lambda: (new := [a for a in io._diagnostics[first:] if any(s.name == name for s in a.status)])
                      and len(new) >= 5 and new, 10, "5 diagnostics messages after configure")
    stamps = [a.header.stamp.sec + a.header.stamp.nanosec * 1e-9 for a in arrays]
    gaps = sorted(b - a for a, b in zip(stamps[1:], stamps[2:]))  # the first gap may straddle the change
    assert 0.4 < gaps[len(gaps) // 2] < 0.7, gaps


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
