"""Robot-stack interfaces of lisa_node over real DDS: the correlated instruction topic."""
import itertools
import re
import time
import types

import pytest

import action_goals as goals
from conftest import get_parameters, make_image_msg, set_parameters, wait_for

pytestmark = pytest.mark.ros


def structured_publisher(io):
    from lisa_ros.msg import Instruction

    return io.probe.publisher(io.node.topic("instruction") + "/structured", Instruction, qos=100)


def results_with_id(io, request_id, timeout=15.0):
    return wait_for(lambda: [r for r in list(io.results) if r.request_id == request_id], timeout,
                    f"a result for request_id {request_id!r}")


def test_structured_instruction_echoes_the_client_id_and_the_text_exactly(lisa_io):
    """The String topic's echo is stripped and cut at 500 characters, its ids the node's: a client could not tell
    which result answered what. lisa_ros/Instruction carries the client's id and comes back verbatim."""
    from lisa_ros.msg import Instruction

    io = lisa_io(params={"max_instruction_chars": 2000})
    io.publish_frame(make_image_msg(stamp=(5, 0)))
    publish = structured_publisher(io).publish
    long = "  " + ("the cup " * 250)[:1996] + "  "
    sent = {"client-1": "  the cup\n", "client-2": long, "client-3": "the cup"}
    for request_id, text in sent.items():
        publish(Instruction(request_id=request_id, text=text, conversation_id="kitchen"))
    for request_id, text in sent.items():
        result, = results_with_id(io, request_id)
        assert result.status == result.STATUS_OK, result.status_message
        assert result.instruction == text and result.conversation_id == "kitchen"
    first, = results_with_id(io, "client-1")
    assert "'the cup'" in first.explanation  # the engine was asked the stripped text
    third, = results_with_id(io, "client-3")
    assert third.explanation.startswith("turn 3")  # one conversation, in order
    publish(Instruction(request_id="client-4", text="the cup", conversation_id="kitchen", reset_conversation=True))
    assert results_with_id(io, "client-4")[0].explanation.startswith("turn 1")


def test_structured_refusals_keep_the_id_and_the_string_topic_keeps_node_ids(lisa_io):
    from lisa_ros.msg import Instruction

    io = lisa_io()
    io.publish_frame(make_image_msg(stamp=(5, 0)))
    publish = structured_publisher(io).publish
    publish(Instruction(request_id="blank", text="  \t "))
    blank, = results_with_id(io, "blank")
    assert blank.status == blank.STATUS_INVALID_INSTRUCTION and blank.instruction == "  \t "
    too_long = "x" * 300  # plumbing_test.yaml: max_instruction_chars 200
    publish(Instruction(request_id="long", text=too_long))
    refused, = results_with_id(io, "long")
    assert refused.status == refused.STATUS_INVALID_INSTRUCTION and refused.instruction == too_long
    publish(Instruction(request_id="", text="the mug"))  # no id: the node assigns one
    io.ask("  the plate  ")  # the uncorrelated convenience path, as before
    publish(Instruction(request_id="1", text="the fork"))  # a client numbering its own requests
    publish(Instruction(request_id="2", text="the knife"))
    assigned = [io.results_for(text)[0] for text in ("the mug", "the plate")]
    io.results_for("the fork"), io.results_for("the knife")
    # The node's ids were "1", "2", ...: a client's "1" and "2" each got a second result with its id.
    assert [r.instruction for r in results_with_id(io, "1")] == ["the fork"]
    assert [r.instruction for r in results_with_id(io, "2")] == ["the knife"]
    for result in assigned:
        assert result.status == result.STATUS_OK and re.fullmatch(r"lisa-[0-9a-f]{8}-\d+", result.request_id)
    assert assigned[0].request_id != assigned[1].request_id


# -- live parameters ----------------------------------------------------------------------------------------------

LIVE_VALID = {"max_queue": 2, "max_image_age": 1.5, "next_frame_timeout": 0.5, "inference_timeout": 0.0,
              "publish_overlay": True, "overlay_alpha": 0.25, "pairing_policy": "next", "max_instruction_chars": 50,
              "max_masks": 3, "min_mask_score": 0.35, "diagnostics_period": 0.2}
LIVE_INVALID = [("max_queue", 0, "range"), ("max_queue", "four", "max_queue must be an integer"),
                ("max_image_age", -1.0, "range"), ("next_frame_timeout", 0.0, "next_frame_timeout must be > 0"),
                ("inference_timeout", -0.5, "range"),
                ("publish_overlay", "yes", "publish_overlay must be true or false"),
                ("overlay_alpha", 1.5, "range"), ("pairing_policy", "oldest", "pairing_policy must be 'newest' or"),
                ("max_instruction_chars", 0, "range"), ("max_masks", 1.5, "max_masks must be an integer"),
                ("min_mask_score", 1.5, "range"), ("min_mask_score", "high", "min_mask_score must be a number"),
                ("diagnostics_period", 0.0, "diagnostics_period must be > 0")]


def test_live_parameters_apply_at_once_and_invalid_values_are_refused_with_the_reason(lisa_io):
    """`ros2 param set max_queue -3` was accepted while active and only checked at the next configure."""
    io = lisa_io()
    io.publish_frame(make_image_msg(stamp=(1, 0)))
    for name, value in LIVE_VALID.items():
        assert set_parameters(io, **{name: value})[name] == (True, ""), name
    assert get_parameters(io, *LIVE_VALID) == LIVE_VALID
    # Applied to the running node: the worker's queue limit, the instruction limit, the pairing policy.
    wait_for(lambda: io.diagnostics().get("max_queue") == "2", 5, "max_queue 2 in diagnostics")
    io.ask("x" * 60)
    refused, = io.results_for("x" * 60)
    assert refused.status == refused.STATUS_INVALID_INSTRUCTION
    assert "max_instruction_chars = 50" in refused.status_message
    io.ask("the next frame")
    late, = io.results_for("the next frame")
    assert late.status == late.STATUS_NO_IMAGE and "next_frame_timeout = 0.5" in late.status_message
    for name, value, reason in LIVE_INVALID:
        successful, said = set_parameters(io, **{name: value})[name]
        assert not successful and reason in said and name in said, (name, value, said)
    assert get_parameters(io, *LIVE_VALID) == LIVE_VALID  # nothing changed


def test_model_and_camera_parameters_are_refused_while_configured_and_accepted_when_unconfigured(lisa_io):
    """`model.path` could be "changed" while active, with no effect."""
    io = lisa_io()
    frozen = {"engine": "plumbing", "model.delay_s": 0.2, "compressed": True, "max_image_pixels": 1000}
    for name, value in frozen.items():
        successful, reason = set_parameters(io, **{name: value})[name]
        assert not successful and name in reason and "Deactivate, clean up" in reason and "configure" in reason, reason
    assert io.node.change_state(io.probe, "deactivate")
    successful, reason = set_parameters(io, **{"model.delay_s": 0.2})["model.delay_s"]  # still configured (inactive)
    assert not successful and "clean up (ros2 lifecycle set <node> cleanup)" in reason and "Deactivate" not in reason
    assert io.node.change_state(io.probe, "cleanup")
    assert all(ok for ok, _ in set_parameters(io, **frozen).values())
    assert io.node.change_state(io.probe, "configure") and io.node.change_state(io.probe, "activate")
    io.publish_frame(make_image_msg(width=20, height=10, stamp=(2, 0)))
    result = io.call("the cup")
    assert result.status == result.STATUS_OK and result.inference_ms >= 200  # model.delay_s took effect
    assert "max_image_pixels" in io.call("the cup", image=make_image_msg(width=64, height=48)).status_message


def test_an_undeclared_parameter_is_refused_naming_it_and_what_can_be_set(lisa_node_process, ros_probe):
    """rclpy's reason was "Invalid access to undeclared parameter(s): []", naming nothing."""
    node = lisa_node_process(params={"auto_configure": False}, wait_active=False)  # engine plumbing, unconfigured
    node.wait_for_state(ros_probe, "unconfigured")
    io = types.SimpleNamespace(probe=ros_probe, node=node)  # what set_parameters talks to
    reasons = {name: set_parameters(io, **{name: value})[name]
               for name, value in {"model.precision": "fp16", "model.bogus": 1, "max_qeue": 3}.items()}
    assert not any(successful for successful, _ in reasons.values())
    successful, reason = reasons["model.precision"]  # a LISA option on the plumbing engine
    assert "model.precision is an option of engine lisa, not of engine 'plumbing'" in reason
    assert "set engine first" in reason and "model.delay_s, model.raise_on" in reason, reason
    assert "model.bogus is not an option of engine 'plumbing'; its options are model.delay_s" in reasons[
        "model.bogus"][1]
    assert "max_qeue is not a lisa_node parameter; did you mean max_queue?" in reasons["max_qeue"][1]
    assert "Invalid access" not in " ".join(reason for _, reason in reasons.values())
    assert set_parameters(io, **{"engine": "lisa"})["engine"][0]  # the LISA options come with the engine
    assert set_parameters(io, **{"model.precision": "fp16"})["model.precision"] == (True, "")


def test_descriptors_carry_ranges_and_read_only_flags(lisa_io):
    """So `ros2 param describe` tells what configure checks."""
    import math

    from rcl_interfaces.srv import DescribeParameters

    io = lisa_io()
    client = io.probe.client(io.node.topic("~/describe_parameters"), DescribeParameters)
    names = ["max_queue", "overlay_alpha", "next_frame_timeout", "auto_configure", "model.delay_s", "pairing_policy"]
    described = {d.name: d for d in io.probe.call(client, DescribeParameters.Request(names=names)).descriptors}
    assert described["max_queue"].integer_range[0].from_value == 1
    alpha = described["overlay_alpha"].floating_point_range[0]
    assert (alpha.from_value, alpha.to_value) == (0.0, 1.0)
    assert math.isinf(described["next_frame_timeout"].floating_point_range[0].to_value)
    assert described["auto_configure"].read_only and not described["model.delay_s"].read_only
    assert "[applied at once]" in described["pairing_policy"].description
    assert "unconfigured" in described["model.delay_s"].description
    assert described["model.delay_s"].description.startswith("plumbing engine option: s each segment() takes")


def test_model_parameters_are_the_running_engine_s_options_only(lisa_io):
    """The plumbing engine's fault injection (model.raise_on, ...) is no parameter of a LISA node, and LISA's
    options none of a plumbing node; a new engine (set while unconfigured) brings its own."""
    from rcl_interfaces.srv import ListParameters

    from lisa_ros.core.engine_options import LISA_OPTIONS, PLUMBING_OPTIONS

    io = lisa_io()
    client = io.probe.client(io.node.topic("~/list_parameters"), ListParameters)

    def model_parameters():
        listed = io.probe.call(client, ListParameters.Request(prefixes=["model"], depth=0)).result.names
        return sorted(listed)

    assert model_parameters() == sorted(f"model.{key}" for key in PLUMBING_OPTIONS)
    assert io.node.change_state(io.probe, "deactivate") and io.node.change_state(io.probe, "cleanup")
    assert set_parameters(io, engine="lisa")["engine"][0]
    assert model_parameters() == sorted(f"model.{key}" for key in LISA_OPTIONS)
    assert set_parameters(io, engine="plumbing")["engine"][0]
    assert get_parameters(io, "model.hang_on") == {"model.hang_on": "#hang"}  # the params file's value again
    assert io.node.change_state(io.probe, "configure") and io.node.change_state(io.probe, "activate")
    io.publish_frame(make_image_msg(stamp=(2, 0)))
    result = io.call("the cup")
    assert result.status == result.STATUS_OK, result.status_message


# -- the ~/segment action -----------------------------------------------------------------------------------------

def action_client(io):
    return goals.action_client(io.probe, io.node.topic("~/segment"))


def running_goal(lisa_io, instruction, **params):
    """A node whose engine hangs 20 s on '#hang', a camera frame, and a first goal running on the engine:
    (io, action client, that goal)."""
    from lisa_ros.action import Segment

    io = lisa_io(params={"inference_timeout": 30.0, "model.hang_s": 20.0, "max_queue": 2} | params)
    io.publish_frame(make_image_msg(stamp=(3, 0)))
    client = action_client(io)
    running = goals.Goal(client, instruction)
    wait_for(lambda: (Segment.Feedback.STAGE_ENCODING, 0) in running.stages(), 10, "the first goal running")
    return io, client, running


def assert_feedback_streams(goal, result, *, decoding):
    """QUEUED* -> ENCODING -> GENERATING+ (tokens strictly increasing, from the first; the text a prefix of the
    explanation, the last all of it) -> DECODING when masks were decoded, with the whole text and its tokens."""
    from lisa_ros.action import Segment

    stage = Segment.Feedback
    done = (lambda f: f.stage == stage.STAGE_DECODING) if decoding else (
        lambda f: f.stage == stage.STAGE_GENERATING and f.partial_text == result.explanation)
    # Feedback and the result travel apart: the last feedback may arrive after the result.
    feedback = wait_for(lambda: goal.feedback and done(goal.feedback[-1]) and list(goal.feedback), 5,
                        f"the last feedback of {result.instruction!r}")
    stages = [f.stage for f in feedback]
    assert stages == sorted(stages) and stages.count(stage.STAGE_ENCODING) == 1, stages
    assert stages.count(stage.STAGE_DECODING) == decoding, stages
    generating = [f for f in feedback if f.stage == stage.STAGE_GENERATING]
    assert generating and generating[0].tokens == 1
    assert all(a.tokens < b.tokens for a, b in itertools.pairwise(generating)), [f.tokens for f in generating]
    assert all(result.explanation.startswith(f.partial_text) for f in generating)
    assert generating[-1].partial_text == result.explanation
    # partial_text never shrinks: DECODING (after the last token) carries the whole text (it carried "" and 0)
    after = feedback[max(i for i, f in enumerate(feedback) if f.stage == stage.STAGE_GENERATING) + 1:]
    assert all((f.partial_text, f.tokens) == (result.explanation, generating[-1].tokens) for f in after), after


def test_feedback_throttle_sends_stages_at_once_and_generating_at_most_every_interval():
    from lisa_ros.core.types import Progress, Stage
    from lisa_ros.node.segment_action import FeedbackThrottle

    now, sent = [0.0], []
    throttle = FeedbackThrottle(sent.append, interval=0.05, clock=lambda: now[0])

    def generating(tokens):
        return Progress(Stage.GENERATING, tokens=tokens, text="w" * tokens)

    throttle(Progress(Stage.ENCODING))
    throttle(generating(1))  # the first token: at once
    now[0] = 0.02
    throttle(generating(2))  # held, then replaced by the next
    throttle(generating(3))
    assert [p.tokens for p in sent] == [0, 1]
    now[0] = 0.06
    throttle(generating(4))  # the interval has passed: sent; the held 3 is dropped (4 says more)
    now[0] = 0.07
    throttle(generating(5))
    throttle(Progress(Stage.DECODING))  # a stage change sends the held token first
    throttle(generating(6))
    throttle.close()  # before the result: the held token goes out
    throttle(generating(7))  # a cancelled call still generating after the answer: dropped
    assert [(p.stage, p.tokens) for p in sent] == [
        (Stage.ENCODING, 0), (Stage.GENERATING, 1), (Stage.GENERATING, 4), (Stage.GENERATING, 5),
        (Stage.DECODING, 5), (Stage.GENERATING, 6)]
    assert sent[4].partial_text == "w" * 5  # a later stage keeps the text generated so far


def test_action_feedback_streams_the_answer_and_decoding_only_before_masks(lisa_io):
    from action_msgs.msg import GoalStatus

    io = lisa_io()
    io.publish_frame(make_image_msg(stamp=(3, 0)))
    client = action_client(io)
    for instruction, decoding in (("the cup and the plate", True), ("nothing at all", False)):
        goal = goals.Goal(client, instruction)
        status, result = goal.result()
        assert status == GoalStatus.STATUS_SUCCEEDED and len(result.masks) == (2 if decoding else 0)
        assert_feedback_streams(goal, result, decoding=decoding)
    # The feedback and status topics take the standard qos_overrides (rclpy's ActionServer declares none).
    topics = io.node.topic("~/segment") + "/_action/"
    assert get_parameters(io, f"qos_overrides.{topics}feedback.publisher.depth",
                          f"qos_overrides.{topics}feedback.publisher.reliability",
                          f"qos_overrides.{topics}status.publisher.depth") == {
        f"qos_overrides.{topics}feedback.publisher.depth": 100,
        f"qos_overrides.{topics}feedback.publisher.reliability": "reliable",
        f"qos_overrides.{topics}status.publisher.depth": 1}


def test_action_feedback_order_and_cancel_while_queued(lisa_io):
    from action_msgs.msg import GoalStatus

    from lisa_ros.action import Segment

    io, client, running = running_goal(lisa_io, "#hang the cup")
    second, third = goals.Goal(client, "the cup"), goals.Goal(client, "the mug")
    wait_for(lambda: (Segment.Feedback.STAGE_QUEUED, 2) in third.stages(), 10, "the third goal queued second")
    second.cancel()
    status, result = second.result()
    assert status == GoalStatus.STATUS_CANCELED and result.status == result.STATUS_CANCELLED
    assert "queued" in result.status_message
    wait_for(lambda: third.stages()[-1] == (Segment.Feedback.STAGE_QUEUED, 1), 10, "the third goal moving up")
    running.cancel()
    status, first = running.result()
    assert status == GoalStatus.STATUS_CANCELED and first.status == first.STATUS_CANCELLED
    status, last = third.result()
    assert status == GoalStatus.STATUS_SUCCEEDED and last.status == last.STATUS_OK and last.instruction == "the mug"
    assert_feedback_streams(third, last, decoding=True)
    assert Segment.Feedback.STAGE_QUEUED in [stage for stage, _ in third.stages()]
    assert [r.status for r in io.results_for("the cup", 1)] == [result.STATUS_CANCELLED]  # also on ~/result


def test_action_cancel_while_running_stops_the_engine_and_the_next_goal_succeeds(lisa_io):
    from action_msgs.msg import GoalStatus

    io, client, running = running_goal(lisa_io, "#hang for twenty seconds")
    started = time.monotonic()
    running.cancel()
    status, result = running.result()
    assert status == GoalStatus.STATUS_CANCELED and result.status == result.STATUS_CANCELLED
    after = goals.Goal(client, "the plate")
    status, answer = after.result(timeout=10)
    assert status == GoalStatus.STATUS_SUCCEEDED and answer.status == answer.STATUS_OK, answer.status_message
    assert time.monotonic() - started < 5  # the hang (20 s) was stopped, not waited out


def test_action_goals_beyond_the_queue_are_rejected_at_goal_time(lisa_io):
    from lisa_ros.action import Segment

    io, client, running = running_goal(lisa_io, "#hang the cup", max_queue=1)
    queued = goals.Goal(client, "the cup")
    rejected = goals.Goal(client, "one too many")
    assert queued.handle.accepted and not rejected.handle.accepted
    wait_for(lambda: "rejected: request queue full (1 waiting)" in io.node.log, 5, "the rejection logged")
    queued.cancel()  # first: once the running goal is cancelled, the queued one runs (and may finish) at once
    assert queued.result()[1].status == Segment.Result().result.STATUS_CANCELLED
    running.cancel()
