"""The ~/segment action under load over real DDS: a burst of goals, and cancel-all of a full queue, repeated.

Every goal gets a goal response (accepted or rejected) and every accepted goal exactly one result. Found from
outside, fixed at the action server's QoS: rclpy keeps 10 requests and responses per action service, so 75-105
of 200 goals sent 15 ms apart got no goal response, and after a cancel-all of 31 goals some results never came.
"""
from __future__ import annotations

import os
import time
import uuid

import numpy as np
import pytest

import action_goals as goals
from lisa_ros.core.types import Status
from rel_support import collect_all, image_msg, settle, wait_for

CATEGORY = "Action goals (DDS)"
pytestmark = pytest.mark.ros

ANSWER_SETTLE_S = 60.0  # the last goal response or result, on a loaded machine (at once when all have come)


def _send(client, instruction: str, feedback=None):
    from unique_identifier_msgs.msg import UUID

    from lisa_ros.action import Segment

    return client.send_goal_async(Segment.Goal(instruction=instruction), goal_uuid=UUID(uuid=list(uuid.uuid4().bytes)),
                                  feedback_callback=feedback)


def _request_results(sent: dict, results: dict) -> None:
    """Asks the result of each accepted goal whose goal response has come (as a client does, at once)."""
    for text, future in sent.items():
        if text not in results and future.done() and future.result().accepted:
            results[text] = future.result().get_result_async()


def test_a_burst_of_200_goals_gets_every_goal_response_and_one_result_per_accepted_goal(case, lisa_io, ros_probe):
    """200 goals 15 ms apart, engine 50 ms, max_queue 64: each accepted or rejected, each accepted one answered
    once (its action result, and one ~/result with its instruction), and answered OK: the queue limit is applied at
    goal time (rclpy runs an accepted goal later, as a task: 14 of 180 accepted were answered BUSY)."""
    results_topic = f"/reliability_action_burst_results_{os.getpid()}"
    io = lisa_io(params={"model.delay_s": 0.05, "max_queue": 64, "max_image_age": 600.0, "inference_timeout": 60.0,
                         f"qos_overrides.{results_topic}.publisher.depth": 1000},
                 remaps={"~/result": results_topic})
    on_topic = collect_all(ros_probe, results_topic, _result_type())
    io.publish_frame(image_msg(np.full((24, 32, 3), 90, np.uint8), "rgb8", stamp=(1, 0)))
    client = goals.action_client(ros_probe, io.node.topic("~/segment"))
    sent, results = {}, {}
    for index in range(200):
        text = f"burst goal {index}"
        sent[text] = _send(client, text)
        _request_results(sent, results)
        time.sleep(0.015)
    deadline = time.monotonic() + ANSWER_SETTLE_S
    while time.monotonic() < deadline and not all(f.done() for f in sent.values()):
        _request_results(sent, results)
        time.sleep(0.05)
    _request_results(sent, results)
    settle(lambda: all(f.done() for f in results.values()), max(deadline - time.monotonic(), 1.0))
    settle(lambda: len(on_topic) >= len(results), 5)
    time.sleep(0.3)  # a duplicate would come right after

    no_response = [text for text, future in sent.items() if not future.done()]
    rejected = [text for text, future in sent.items() if future.done() and not future.result().accepted]
    no_result = [text for text, future in results.items() if not future.done()]
    wrong = [(text, future.result().result.result.instruction) for text, future in results.items()
             if future.done() and future.result().result.result.instruction != text]
    for text in sent:
        case.check(text not in no_response and text not in no_result and text not in dict(wrong), text,
                   error=text in rejected)
    # Goals accepted but not yet queued count against max_queue: an accepted goal is not answered BUSY.
    accounting = case.account(list(results), on_topic, expected_statuses={int(Status.OK)})
    answered_rejected = [r.instruction for r in on_topic if r.instruction in rejected]
    statuses = [Status.name_of(f.result().result.result.status) for f in results.values() if f.done()]
    case.note(f"200 goals: {len(results)} accepted ({statuses.count('OK')} OK, {statuses.count('BUSY')} BUSY), "
              f"{len(rejected)} rejected, {len(no_response)} without goal response, {len(no_result)} accepted "
              f"without result")
    assert not no_response, f"{len(no_response)} of 200 goals got no goal response: {no_response[:5]}"
    assert not no_result, f"{len(no_result)} of {len(results)} accepted goals got no result: {no_result[:5]}"
    assert not wrong, wrong[:5]
    assert not accounting["lost"] and not accounting["duplicates"] and not accounting["unexpected"], accounting
    assert not answered_rejected, answered_rejected[:5]  # a goal rejected at goal time is not run


def _result_type():
    from lisa_ros.msg import SegmentationResult

    return SegmentationResult


def _cancel_all_round(case, io, client, cancel_all, round_index: int) -> int:
    """One goal running on the engine's hang, 30 queued, one cancel request for all: how many results never came.

    Every goal hangs: rclpy cancels the goals one after the other, and a queued goal that starts meanwhile must
    still be running (not finished) when its turn comes."""
    from action_msgs.msg import GoalStatus
    from action_msgs.srv import CancelGoal

    from lisa_ros.action import Segment

    running_stages: list[int] = []
    running = f"#hang round {round_index} goal 0"
    sent = {running: _send(client, running, feedback=lambda msg: running_stages.append(msg.feedback.stage))}
    wait_for(lambda: Segment.Feedback.STAGE_ENCODING in running_stages, 15, "the first goal running")
    for index in range(1, 31):  # one after the other: the burst test covers goal responses
        text = f"#hang round {round_index} goal {index}"
        sent[text] = _send(client, text)
        wait_for(sent[text].done, 15, f"the goal response to {text!r}")
    assert all(f.result().accepted for f in sent.values()), [t for t, f in sent.items() if not f.result().accepted]
    results = {text: future.result().get_result_async() for text, future in sent.items()}
    wait_for(lambda: int(io.diagnostics().get("queue_depth", 0)) == 31, 15, "31 goals in the queue")
    response = cancel_all.call_async(CancelGoal.Request())  # zero goal id and stamp: cancel every goal
    wait_for(response.done, 15, "the cancel response")
    assert len(response.result().goals_canceling) == 31, response.result()
    settle(lambda: all(f.done() for f in results.values()), 20)
    for text, future in results.items():
        done = future.done() and future.result()
        case.check(bool(done) and done.status == GoalStatus.STATUS_CANCELED
                   and done.result.result.status == int(Status.CANCELLED), text)
    return sum(1 for future in results.values() if not future.done())


def test_cancel_all_of_a_running_and_30_queued_goals_answers_all_31_ten_times_in_a_row(case, lisa_io, ros_probe):
    """One goal running (an engine hang), 30 queued, one cancel request for all goals: the node answered all 31,
    but in 3 of 7 runs 4-6 results never reached the client (the result service kept 10 responses)."""
    from action_msgs.srv import CancelGoal

    io = lisa_io(params={"model.hang_s": 60.0, "inference_timeout": 120.0, "max_queue": 30, "max_image_age": 600.0})
    io.publish_frame(image_msg(np.full((24, 32, 3), 90, np.uint8), "rgb8", stamp=(1, 0)))
    action = io.node.topic("~/segment")
    client = goals.action_client(ros_probe, action)
    cancel_all = ros_probe.node.create_client(CancelGoal, action + "/_action/cancel_goal", qos_profile=goals.keep_all())
    assert cancel_all.wait_for_service(timeout_sec=10)
    lost_by_round = [_cancel_all_round(case, io, client, cancel_all, round_index) for round_index in range(10)]
    case.note(f"results lost per round of 31 cancelled goals: {lost_by_round}")
    assert lost_by_round == [0] * 10, f"results lost per round of 31 cancelled goals: {lost_by_round}"
