"""The ``~/segment`` action: a segmentation with progress feedback and cancel, for behaviour trees.

Its services and topics live under ``~/segment/_action/``, so it shares its name with the ``~/segment``
service without clashing. Goals go through the node's one request worker: the same queue, the same
exactly-once answer (also published on ~/result) as the topic and the service.
"""
from __future__ import annotations

import time

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.task import Future

from lisa_ros.action import Segment
from lisa_ros.core.lifecycle import NodeState
from lisa_ros.core.types import Status
from lisa_ros.core.worker import PairingPolicy, Request, Stage

CANCEL_STATE_WAIT_S = 1.0  # rclpy marks a goal CANCELING only after the cancel callback has returned


class SegmentActionServer:
    def __init__(self, node) -> None:
        """node: the LisaNode (its worker, state and request building)."""
        self._node = node
        self._requests: dict[bytes, Request] = {}  # goal id -> its request, for cancel
        self._server = ActionServer(node, Segment, "~/segment", execute_callback=self._execute,
                                    goal_callback=self._on_goal, cancel_callback=self._on_cancel,
                                    callback_group=ReentrantCallbackGroup())

    def _on_goal(self, goal: Segment.Goal) -> GoalResponse:
        """Refused at goal time (the action protocol carries no reason: it is logged) when it could not run."""
        worker, state = self._node._worker, self._node._state
        if worker is None or state is not NodeState.ACTIVE:
            reason = f"lisa_node is {state.value}, not active"
        elif goal.pairing_policy not in ("", *PairingPolicy):
            reason = f"pairing_policy must be '', 'newest' or 'next', got {goal.pairing_policy!r}"
        elif worker.waiting >= worker.settings.max_queue:
            reason = f"request queue full ({worker.settings.max_queue} waiting); slow down or raise max_queue"
        else:
            return GoalResponse.ACCEPT
        self._node.get_logger().warning(f"~/segment goal {goal.instruction[:60]!r} rejected: {reason}")
        return GoalResponse.REJECT

    def _on_cancel(self, goal_handle) -> CancelResponse:
        request = self._requests.get(bytes(goal_handle.goal_id.uuid))
        if request is not None:
            worker = self._node._worker
            if worker is not None:
                worker.cancel(request)
            else:
                request.cancelled.set()
        return CancelResponse.ACCEPT

    async def _execute(self, goal_handle) -> Segment.Result:
        goal = goal_handle.request
        answered = Future()
        request = self._node.service_request(goal.instruction, goal.image, goal.conversation_id,
                                             goal.reset_conversation, answered,
                                             PairingPolicy(goal.pairing_policy) if goal.pairing_policy else None)

        def progress(stage: Stage, position: int) -> None:
            goal_handle.publish_feedback(Segment.Feedback(stage=int(stage), queue_position=position))

        request.progress = progress
        key = bytes(goal_handle.goal_id.uuid)
        self._requests[key] = request
        try:
            result = await self._node.await_answer(request, answered)
        finally:
            self._requests.pop(key, None)
        if result.status == Status.CANCELLED:
            deadline = time.monotonic() + CANCEL_STATE_WAIT_S
            while not goal_handle.is_cancel_requested and time.monotonic() < deadline:
                time.sleep(0.001)
        if goal_handle.is_cancel_requested and result.status == Status.CANCELLED:
            goal_handle.canceled()
        elif Status.is_answered(result.status):
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return Segment.Result(result=result)
