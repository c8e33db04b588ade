"""LisaNode's entry points: camera frames, the instruction topics, the ~/segment service and action, semantic
mode and ~/reset. Each request goes to the one request worker and gets exactly one answer; none runs inference
in a callback."""
from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.task import Future
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from lisa_ros.core.engine_runner import CallTimeout
from lisa_ros.core.frames import Frame
from lisa_ros.core.instruction import InstructionError, validate_instruction
from lisa_ros.core.lifecycle import NodeState, not_ready_message
from lisa_ros.core.types import PairingPolicy, Request, Status
from lisa_ros.core.worker import answer_request
from lisa_ros.msg import Instruction, SegmentationResult
from lisa_ros.node.messages import frame_key
from lisa_ros.node.qos_overrides import entity_qos
from lisa_ros.node.segment_action import SegmentActionServer
from lisa_ros.node.semantic_glue import SemanticGlue
from lisa_ros.srv import Segment

# REP 2003: sensor data in (best effort, newest only).
IMAGE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                       durability=DurabilityPolicy.VOLATILE)
# Instructions must never be dropped by DDS before the node can answer them: reliable, keep all
# (the publisher is slowed down instead); the bounded request queue answers floods with BUSY.
INSTRUCTION_QOS = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)
SERVICE_QOS = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)
SERVICE_DEADLINE_MARGIN_S = 5.0


class RequestEntryPoints:
    """LisaNode's inputs (a mixin: the worker and state it hands requests to are LisaNode's)."""

    def _instruction_topics(self) -> list[str]:
        """The instruction topics, the structured one beside the plain one (remapping "instruction" moves both)."""
        return [self.resolve_topic_name("instruction") + suffix for suffix in ("", "/structured")]

    def _create_entry_points(self) -> None:
        """The services, the action and the instruction subscriptions, for the node's whole life."""
        # Node-assigned request_ids: "lisa-<8 hex drawn at start>-<n>", never a client's "1", "2", ... nor an id
        # of this node's earlier runs.
        self._request_id_prefix = f"lisa-{uuid.uuid4().hex[:8]}-"
        self._request_ids = itertools.count(1)
        self._unstamped_ids = itertools.count(1)
        self._waiting_service_calls = 0  # ~/segment calls awaiting their answer (for a clean exit)
        self._waiting_lock = threading.Lock()
        overridable = QoSOverridingOptions.with_default_policies()
        # Keep all pending requests: with the default depth of 10, DDS drops the oldest requests
        # while the executor's threads wait on earlier ones, and those callers never get a reply.
        self.create_service(Segment, "~/segment", self._on_segment, callback_group=self._service_group,
                            qos_profile=SERVICE_QOS)
        self.create_service(Trigger, "~/reset", self._on_reset, callback_group=self._reset_group)
        self._semantic = SemanticGlue(self, self._service_group)  # ~/segment_semantic, ~/semantic(_overlay)
        self._segment_action = SegmentActionServer(self, SERVICE_QOS)  # the ~/segment action (~/segment/_action/)
        # Instructions are subscribed for the node's whole life (images only while active):
        # an instruction that arrives while inactive is answered NOT_READY instead of being
        # dropped by a destroyed subscription, so every instruction gets its one answer.
        self.create_subscription(String, "instruction", self._on_instruction, entity_qos(INSTRUCTION_QOS),
                                 callback_group=self._instruction_group, qos_overriding_options=overridable)
        # Beside it, like <image>/compressed: remapping "instruction" moves both topics.
        self.create_subscription(Instruction, self.resolve_topic_name("instruction") + "/structured",
                                 self._on_structured_instruction, entity_qos(INSTRUCTION_QOS),
                                 callback_group=self._instruction_group, qos_overriding_options=overridable)

    def _on_image(self, msg: Image | CompressedImage) -> None:
        """Only keeps the newest frame; decoding happens on the worker, for frames that get used."""
        self._frames.put(Frame(payload=msg, header=msg.header, received=time.monotonic(),
                               key=frame_key(msg.header, next(self._unstamped_ids))))
        targets = self._targets
        if targets is not None:
            targets.on_image(msg)

    def _on_instruction(self, msg: String) -> None:
        self._submit(Request(instruction=msg.data))

    def _on_structured_instruction(self, msg: Instruction) -> None:
        """The correlated path: the client's request_id and the text exactly as sent come back in the result."""
        self._submit(Request(instruction=msg.text, echo=msg.text, request_id=msg.request_id,
                             conversation_id=msg.conversation_id or "default",
                             reset_conversation=msg.reset_conversation))

    def _submit(self, request: Request) -> None:
        request.request_id = request.request_id or self.new_request_id()
        request.stamp = self.get_clock().now().to_msg()
        worker, config = self._worker, self._config
        if worker is None or self._state is not NodeState.ACTIVE:
            answer_request(request, Status.NOT_READY, not_ready_message(self._state, self._problem),
                           self._publish_answer, self.get_logger(), frame=request.frame)
            return
        try:
            request.instruction = validate_instruction(request.instruction, config.max_instruction_chars)
        except InstructionError as error:
            request.error = (Status.INVALID_INSTRUCTION, str(error))
        worker.submit(request)

    def new_request_id(self) -> str:
        return f"{self._request_id_prefix}{next(self._request_ids)}"

    async def _on_segment(self, request: Segment.Request, response: Segment.Response) -> Segment.Response:
        """Awaits the worker's answer without holding an executor thread; never runs inference."""
        answered = Future()  # resolved by _publish_answer, from the worker thread or right here
        pending = self.service_request(request.instruction, request.image, request.conversation_id,
                                       request.reset_conversation, answered, PairingPolicy.NEWEST)
        response.result = await self.await_answer(pending, answered)
        return response

    def service_request(self, instruction: str, image: Image, conversation_id: str, reset: bool, answered: Future,
                        pairing_policy: PairingPolicy | None) -> Request:
        """A request of the ~/segment service or action: a given image pins the frame."""
        frame = None
        if image.width or image.height or len(image.data):
            frame = Frame(payload=image, header=image.header, received=time.monotonic(),
                          key=frame_key(image.header, f"service-{next(self._unstamped_ids)}"))
        return Request(instruction=instruction, conversation_id=conversation_id or "default",
                       reset_conversation=reset, frame=frame, context=answered, pairing_policy=pairing_policy)

    async def await_answer(self, request: Request, answered: Future,
                           submitted: Callable[[], None] | None = None) -> SegmentationResult:
        """Submits (then calls ``submitted``) and awaits the one answer (counted, so an exit waits for its reply
        to go out)."""
        with self._waiting_lock:
            self._waiting_service_calls += 1
        try:
            self._submit(request)
            if submitted is not None:
                submitted()
            return await answered
        finally:
            with self._waiting_lock:
                self._waiting_service_calls -= 1

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        engine, runner = self._engine, self._runner
        if engine is None or runner is None:
            response.success, response.message = False, f"no model loaded (node is {self._state.value})"
            return response
        try:
            runner.call(lambda: engine.reset(None), SERVICE_DEADLINE_MARGIN_S, self._exit_requested)
            response.success, response.message = True, "conversation history cleared"
        except CallTimeout:
            response.success, response.message = False, "the engine is busy; retry"
        except Exception as error:
            response.success, response.message = False, f"reset failed: {error}"
        return response
