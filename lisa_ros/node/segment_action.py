"""The ``~/segment`` action: a segmentation with progress feedback and cancel, for behaviour trees.

Its services and topics live under ``~/segment/_action/``, so it shares its name with the ``~/segment``
service without clashing. Goals go through the node's one request worker: the same queue, the same
exactly-once answer (also published on ~/result) as the topic and the service.

rclpy's action QoS keeps 10 requests and responses: a burst of goals lost most of its goal responses
and a cancel-all some of its results. The services here keep them all, as the ``~/segment`` service does.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from rclpy.action import CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.publisher import Publisher
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_action_status_default
from rclpy.task import Future

from lisa_ros.action import Segment
from lisa_ros.core.lifecycle import NodeState
from lisa_ros.core.types import PairingPolicy, Progress, Request, Stage, Status
from lisa_ros.node.rclpy_internals import ResultCountingActionServer, declare_qos_overrides

CANCEL_STATE_WAIT_S = 1.0  # rclpy marks a goal CANCELING only after the cancel callback has returned
GENERATING_FEEDBACK_INTERVAL_S = 0.05  # per-token feedback at most this often (20 Hz)
# Feedback is progress: a reader that lags loses the oldest, never the newest (which holds the answer so far).
# 100 deep, not rclpy's 10: every queued goal gets a QUEUED each time the queue moves.
FEEDBACK_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)


class FeedbackThrottle:
    """A goal's feedback: every stage change at once, GENERATING at most every ``interval`` s.

    The first token's GENERATING goes out at once; a later one within ``interval`` of the
    last sent waits, replaced by the next token's, and is sent before the next stage or on
    ``close`` (before the result): the last GENERATING a client sees holds the whole answer.
    A later stage (DECODING) carries the tokens and text generated so far: ``partial_text``
    never shrinks. Called from the worker's and the engine's threads.
    """

    def __init__(self, publish: Callable[[Progress], None], interval: float = GENERATING_FEEDBACK_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._publish, self._interval, self._clock = publish, interval, clock
        self._lock = threading.Lock()
        self._pending: Progress | None = None
        self._generating_sent: float | None = None
        self._generated: Progress | None = None  # the newest GENERATING
        self._closed = False

    def __call__(self, progress: Progress) -> None:
        with self._lock:
            if self._closed:
                return
            if progress.stage is Stage.GENERATING:
                now = self._clock()
                self._generated = progress
                if self._generating_sent is not None and now - self._generating_sent < self._interval:
                    self._pending = progress
                    return
                self._generating_sent, self._pending = now, None
            elif self._generated is not None:
                progress = dataclasses.replace(progress, tokens=self._generated.tokens, text=self._generated.text)
            self._send_pending()
            self._publish(progress)

    def close(self) -> None:
        """Sends what waits; later reports (a cancelled call still generating) are dropped. Never raises:
        the result must still go out."""
        with self._lock:
            self._closed = True
            try:
                self._send_pending()
            except Exception as error:
                logging.getLogger(__name__).warning(f"the last ~/segment feedback was not sent: {error!r}")

    def _send_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self._publish(pending)


def _overridable(node, topic: str, profile: QoSProfile) -> QoSProfile:
    """A copy of ``profile`` with the standard ``qos_overrides.<topic>.publisher.*`` parameters applied (rclpy's
    ActionServer takes no QoSOverridingOptions)."""
    profile = copy.copy(profile)
    declare_qos_overrides(node, Publisher, topic, profile)
    return profile


class SegmentActionServer:
    def __init__(self, node, service_qos: QoSProfile) -> None:
        """node: the LisaNode (its worker, state and request building); service_qos: of the goal, cancel and
        result services (keep all: no goal response or result dropped)."""
        self._node = node
        self._requests: dict[bytes, Request] = {}  # goal id -> its request, for cancel
        # Goals accepted and not yet in the worker's queue (rclpy runs each as a task of its own, later): counted
        # against max_queue, or a burst was accepted beyond it and answered BUSY.
        self._starting = 0
        self._starting_lock = threading.Lock()
        topics = node.resolve_topic_name("~/segment") + "/_action/"
        self._server = ResultCountingActionServer(
            node, Segment, "~/segment", execute_callback=self._execute, goal_callback=self._on_goal,
            cancel_callback=self._on_cancel, callback_group=ReentrantCallbackGroup(),
            goal_service_qos_profile=copy.copy(service_qos), result_service_qos_profile=copy.copy(service_qos),
            cancel_service_qos_profile=copy.copy(service_qos),
            feedback_pub_qos_profile=_overridable(node, topics + "feedback", FEEDBACK_QOS),
            status_pub_qos_profile=_overridable(node, topics + "status", qos_profile_action_status_default))

    @property
    def results_owed(self) -> int:
        """Result requests of accepted goals whose response has not been sent yet."""
        return self._server.results_owed

    def _on_goal(self, goal: Segment.Goal) -> GoalResponse:
        """Refused at goal time (the action protocol carries no reason: it is logged) when it could not run."""
        worker, state = self._node._worker, self._node._state
        if worker is None or state is not NodeState.ACTIVE:
            reason = f"lisa_node is {state.value}, not active"
        elif goal.pairing_policy not in ("", *PairingPolicy):
            reason = f"pairing_policy must be '', 'newest' or 'next', got {goal.pairing_policy!r}"
        else:
            with self._starting_lock:
                if worker.waiting + self._starting < worker.settings.max_queue:
                    self._starting += 1
                    return GoalResponse.ACCEPT
            reason = f"request queue full ({worker.settings.max_queue} waiting); slow down or raise max_queue"
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
        started = threading.Event()

        def submitted() -> None:
            """Once: the goal is in the worker's queue (or answered), no longer counted as starting."""
            if not started.is_set():
                started.set()
                with self._starting_lock:
                    self._starting -= 1

        try:
            return await self._run(goal_handle, submitted)
        finally:
            submitted()

    async def _run(self, goal_handle, submitted: Callable[[], None]) -> Segment.Result:
        goal = goal_handle.request
        answered = Future()
        request = self._node.service_request(goal.instruction, goal.image, goal.conversation_id,
                                             goal.reset_conversation, answered,
                                             PairingPolicy(goal.pairing_policy) if goal.pairing_policy else None)

        def publish(progress: Progress) -> None:
            goal_handle.publish_feedback(Segment.Feedback(
                stage=int(progress.stage), queue_position=progress.queue_position, tokens=progress.tokens,
                partial_text=progress.partial_text))

        feedback = request.progress = FeedbackThrottle(publish)
        key = bytes(goal_handle.goal_id.uuid)
        self._requests[key] = request
        try:
            result = await self._node.await_answer(request, answered, submitted)
        finally:
            self._requests.pop(key, None)
            feedback.close()
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
