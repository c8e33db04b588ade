"""``lisa_node``: a managed (lifecycle) node that answers segmentation instructions.

Thin by design: messages are converted here and handed to the ROS-free pieces
in ``lisa_ros.core`` (validation, the newest-frame slot, the request worker,
statistics). configure loads the engine, activate subscribes, deactivate
unsubscribes, cleanup frees the model. Callbacks never run inference.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import math
import os
import re
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.exceptions import InvalidHandle, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions
from rclpy.subscription import Subscription
from rclpy.task import Future
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from lisa_ros.core.engine import Engine, create_engine
from lisa_ros.core.engine_options import (
    option_default,
    option_description,
    option_keys,
    undeclared_parameter_reason,
)
from lisa_ros.core.engine_runner import CallTimeout, EngineRunner
from lisa_ros.core.frames import Frame, LatestFrame
from lisa_ros.core.image import image_message_to_rgb
from lisa_ros.core.instruction import InstructionError, validate_instruction
from lisa_ros.core.lifecycle import NodeState, frozen_parameter_advice, not_ready_message
from lisa_ros.core.masks import overlay_masks
from lisa_ros.core.node_config import (
    BOUNDS,
    LIVE_PARAMETERS,
    PARAMETERS,
    RECONFIGURE_GROUPS,
    RECONFIGURE_PARAMETERS,
    START_UP_PARAMETERS,
    ConfigError,
    NodeConfig,
)
from lisa_ros.core.stats import RequestStats
from lisa_ros.core.types import Answer, PairingPolicy, Request, Status
from lisa_ros.core.worker import RequestWorker, WorkerSettings, answer_request
from lisa_ros.msg import Instruction, SegmentationResult
from lisa_ros.node.detections import installed_detection_types, result_to_detections
from lisa_ros.node.exit_signals import ExitSignals
from lisa_ros.node.messages import answer_to_result, array_to_image_msg, frame_key, union_mask_msg
from lisa_ros.node.qos_overrides import QosOverrideError, qos_override_problems
from lisa_ros.node.rclpy_internals import declare_qos_overrides, parameter_overrides
from lisa_ros.node.segment_action import SegmentActionServer
from lisa_ros.node.semantic_glue import SemanticGlue
from lisa_ros.node.targets_glue import TargetsGlue
from lisa_ros.srv import Segment

# REP 2003: sensor data in (best effort, newest only), results out reliable.
IMAGE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                       durability=DurabilityPolicy.VOLATILE)
# Instructions must never be dropped by DDS before the node can answer them: reliable, keep all
# (the publisher is slowed down instead); the bounded request queue answers floods with BUSY.
INSTRUCTION_QOS = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)
RESULT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
SPIN_PERIOD_S = 0.1
SERVICE_QOS = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)
SERVICE_DEADLINE_MARGIN_S = 5.0
LOAD_POLL_S = 0.05  # how often configure looks for an exit request while the model loads
EXIT_WAIT_S = 1.0  # at exit, how long an in-flight transition may take to see the exit request and end
EXIT_ANSWERS_WAIT_S = 3.0  # at exit, how long the answers owed (service responses, action results) may take to go out
# Callbacks that may hold a thread at once: one per mutually exclusive group (images, instructions,
# transitions, ~/reset, the default group: get_state, parameters, diagnostics) plus ~/segment's coroutine
# steps, which never wait on a thread: a call waiting for its answer holds none, whatever max_queue is.
EXECUTOR_THREADS = 8


def _qos(profile: QoSProfile) -> QoSProfile:
    """A copy for one entity: rclpy applies qos_overrides to the profile it is given, in place."""
    return copy.copy(profile)


def _when_applied(name: str) -> str:
    """Tells `ros2 param describe` readers when a change takes effect."""
    if name in LIVE_PARAMETERS:
        return " [applied at once]"
    if name in START_UP_PARAMETERS:
        return " [read at start-up]"
    return " [settable while unconfigured; read at configure]"


def _reported(transition: str):
    """rclpy turns an exception in a transition callback into ERROR without a word: log it with the
    reason and keep it for /diagnostics and NOT_READY answers."""
    def decorate(callback):
        @functools.wraps(callback)
        def run(self, state: LifecycleState) -> TransitionCallbackReturn:
            try:
                return callback(self, state)
            except Exception as error:
                self._problem = f"{transition} failed: {type(error).__name__}: {error}"
                self.get_logger().error(self._problem)
                return TransitionCallbackReturn.ERROR
        return run
    return decorate


class LisaNode(LifecycleNode):
    def __init__(self, node_name: str = "lisa_node", *, exit_requested: threading.Event | None = None,
                 **kwargs) -> None:
        """exit_requested: set by SIGINT/SIGTERM (see main); every step of start-up looks at it."""
        super().__init__(node_name, **kwargs)
        self._exit_requested = exit_requested or threading.Event()
        # Held while the state, the engine and the subscriptions change: an exit (main thread) and a
        # transition (an executor thread) never interleave.
        self._state_lock = threading.RLock()
        dynamic = dict(dynamic_typing=True)  # types are checked at configure, with clear errors
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(
                description=description + _when_applied(name), read_only=name in START_UP_PARAMETERS, **dynamic),
                ignore_override=self._override_means_unset(name, default))
            if name in BOUNDS:
                self._declare_range(name)
        self._engine_option_names: list[str] = []  # the model.* parameters declared now
        self.add_on_set_parameters_callback(self._check_parameters)
        self._declare_engine_options(self.get_parameter("engine").value)
        self.add_post_set_parameters_callback(self._apply_live_parameters)
        self.add_post_set_parameters_callback(self._follow_engine)

        self._config: NodeConfig | None = None
        self._engine: Engine | None = None
        self._runner: EngineRunner | None = None
        self._worker: RequestWorker | None = None
        self._state = NodeState.UNCONFIGURED
        self._problem = ""  # why the last transition failed ("" after a success): shown until fixed
        self._frames = LatestFrame()
        self._stats = RequestStats()
        # Node-assigned request_ids: "lisa-<8 hex drawn at start>-<n>", never a client's "1", "2", ... nor an id
        # of this node's earlier runs.
        self._request_id_prefix = f"lisa-{uuid.uuid4().hex[:8]}-"
        self._request_ids = itertools.count(1)
        self._unstamped_ids = itertools.count(1)
        self._image_subscriptions: list = []  # created on activate, destroyed on deactivate
        self._targets: TargetsGlue | None = None  # 3D targets and tracking: activate to deactivate
        self._loading: tuple[Engine, float] | None = None  # (engine, monotonic start) while configure loads it

        overridable = QoSOverridingOptions.with_default_policies()
        # One group each, so a flood of frames cannot starve the instructions.
        self._image_group = MutuallyExclusiveCallbackGroup()
        self._instruction_group = MutuallyExclusiveCallbackGroup()
        self._service_group = ReentrantCallbackGroup()
        self._reset_group = MutuallyExclusiveCallbackGroup()  # a reset may wait up to 5 s for a busy engine
        self._waiting_service_calls = 0  # ~/segment calls awaiting their answer (for a clean exit)
        self._waiting_lock = threading.Lock()
        # Transitions (change_state, the auto-start) run in a group of their own: a configure that loads
        # the model for minutes must not hold the default group, where get_state, the parameter services
        # and the diagnostics timer run.
        self._transition_group = MutuallyExclusiveCallbackGroup()
        change_state = self._change_state_service = self._lifecycle_service("change_state")
        self.default_callback_group.entities.discard(weakref.ref(change_state))
        change_state.callback_group = self._transition_group
        self._transition_group.add_entity(change_state)
        change_state.callback = self._refusing_unavailable_transitions(change_state.callback)
        self._auto_start_timer = None
        detections_on = self.get_parameter("detections.enabled").value is True
        self._detection_types = installed_detection_types() if detections_on else None
        outputs = ["~/result", "~/mask", "~/explanation", "~/overlay"] + ["~/detections"] * (
            self._detection_types is not None)
        instructions = [self.resolve_topic_name("instruction") + suffix for suffix in ("", "/structured")]
        if problems := qos_override_problems(self, [(self.resolve_topic_name(t), "publisher") for t in outputs]
                                             + [(t, "subscription") for t in instructions]):
            raise QosOverrideError("; ".join(problems))  # main prints it: lisa_node cannot start without them
        self._result_pub = self.create_publisher(SegmentationResult, "~/result", _qos(RESULT_QOS),
                                                 qos_overriding_options=overridable)
        self._mask_pub = self.create_publisher(Image, "~/mask", _qos(RESULT_QOS), qos_overriding_options=overridable)
        self._explanation_pub = self.create_publisher(String, "~/explanation", _qos(RESULT_QOS),
                                                      qos_overriding_options=overridable)
        self._overlay_pub = self.create_publisher(Image, "~/overlay", _qos(RESULT_QOS),
                                                  qos_overriding_options=overridable)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._detections_pub = None
        if not detections_on:
            self.get_logger().info("detections.enabled is false: ~/detections is off")
        elif self._detection_types is None:
            self.get_logger().info("vision_msgs not installed: ~/detections is off")
        else:
            self._detections_pub = self.create_publisher(self._detection_types.detection_array, "~/detections",
                                                         _qos(RESULT_QOS), qos_overriding_options=overridable)
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
        self.create_subscription(String, "instruction", self._on_instruction, _qos(INSTRUCTION_QOS),
                                 callback_group=self._instruction_group, qos_overriding_options=overridable)
        # Beside it, like <image>/compressed: remapping "instruction" moves both topics.
        self.create_subscription(Instruction, self.resolve_topic_name("instruction") + "/structured",
                                 self._on_structured_instruction, _qos(INSTRUCTION_QOS),
                                 callback_group=self._instruction_group, qos_overriding_options=overridable)
        # Until the first configure has validated diagnostics_period (each configure and live change applies it).
        period = self.get_parameter("diagnostics_period").value
        self._diagnostics_timer = self.create_timer(period if isinstance(period, (int, float)) and period > 0
                                                    else 1.0, self._publish_diagnostics)

    # -- parameters -------------------------------------------------------------------
    def _declare_range(self, name: str) -> None:
        """The range configure checks, in the descriptor. Added after declaring: a params-file value out of
        range would otherwise stop the node at start-up instead of failing configure with every problem named."""
        kind, minimum, maximum, _ = BOUNDS[name]
        descriptor = self.describe_parameter(name)
        if kind is int:
            descriptor.integer_range = [IntegerRange(from_value=int(minimum), to_value=2**63 - 1 if maximum is None
                                                     else int(maximum), step=0)]
        else:
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(minimum), to_value=math.inf if maximum is None else float(maximum), step=0.0)]
        try:
            self.set_descriptor(name, descriptor)
        except InvalidParameterValueException:
            pass  # configure names the problem

    def _declare_engine_options(self, engine: str) -> None:
        """``model.<key>`` for the options of ``engine`` only (a production node has no fault-injection keys);
        another engine's are undeclared. An unknown engine gets every engine's, for configure to name it.

        Each is declared with the engine's default, never unset: `ros2 param dump` writes an unset parameter as
        ``null``, which a params file gives back as the string 'null' (ros2cli#965), so a dump could not be
        relaunched."""
        wanted = [f"model.{key}" for key in option_keys(engine)]
        for name in self._engine_option_names:
            if name not in wanted:
                self.undeclare_parameter(name)
        for name in wanted:
            if self.has_parameter(name):
                continue
            key, default = name.removeprefix("model."), option_default(name.removeprefix("model."), engine)
            self.declare_parameter(name, default, ParameterDescriptor(
                description=option_description(key) + _when_applied("model."), dynamic_typing=True),
                ignore_override=self._override_means_unset(name, default))
        self._engine_option_names = wanted

    def _override_means_unset(self, name: str, default) -> bool:
        """A params-file value that stands for "no value", so the default is declared instead: the string 'null'
        (`ros2 param dump` writes an unset parameter as null, read back as a string: ros2cli#965), or an empty list
        (rcl reads `[]` as no value, which a later dump would write as null)."""
        override = parameter_overrides(self).get(name)
        if override is None:
            return False
        if override.value == "null":
            self.get_logger().warning(f"{name}: 'null' (how ros2 param dump writes an unset parameter) taken as "
                                      f"unset: the default {default!r} applies")
            return True
        return override.type_ is Parameter.Type.NOT_SET

    def _follow_engine(self, parameters: list[Parameter]) -> None:
        """A new ``engine`` (set while unconfigured) brings its own ``model.*`` options."""
        for parameter in parameters:
            if parameter.name == "engine":
                self._declare_engine_options(parameter.value)

    def _check_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Refuses deletions, model/camera settings while configured, and live values configure would refuse."""
        own = set(PARAMETERS) | set(self._engine_option_names)
        mine = [p for p in parameters if p.name in own]
        # NOT_SET on a declared parameter is a deletion; on a new one, its declaration (an unset model.* option)
        deleted = [p.name for p in mine if p.type_ is Parameter.Type.NOT_SET and self.has_parameter(p.name)]
        if deleted:  # `ros2 param delete` undeclared it, and every later configure failed reading it
            return self._refused(f"{', '.join(deleted)} cannot be deleted: lisa_node reads it at every configure. "
                                 "Set the value you want instead (a model.* option left unset in the params file "
                                 "takes the engine default)")
        frozen = [p.name for p in mine
                  if p.name in RECONFIGURE_PARAMETERS or p.name.split(".")[0] in RECONFIGURE_GROUPS]
        if frozen and self._state is not NodeState.UNCONFIGURED:
            return self._refused(f"{', '.join(frozen)} take effect when the model loads; lisa_node is "
                                 f"{self._state.value}. To change it: {frozen_parameter_advice(self._state)}")
        live = {p.name: p.value for p in mine if p.name in LIVE_PARAMETERS}
        if live:
            try:
                NodeConfig.from_parameters(self._parameter_values() | live)
            except ConfigError as error:
                if problems := error.about(live):
                    return self._refused("; ".join(problems))
        return SetParametersResult(successful=True)

    def set_parameters_atomically(self, parameter_list: list[Parameter]) -> SetParametersResult:
        """What the set_parameters services call (`ros2 param set`, `ros2 param load`): a name the node does not
        declare is refused with what can be set instead (rclpy's reason was "Invalid access to undeclared
        parameter(s): []")."""
        undeclared = [p.name for p in parameter_list if not self.has_parameter(p.name)]
        if undeclared:
            engine = self.get_parameter("engine").value
            names = self.list_parameters([], 0).names
            return self._refused("; ".join(undeclared_parameter_reason(name, engine, names) for name in undeclared))
        return super().set_parameters_atomically(parameter_list)

    def _refused(self, reason: str) -> SetParametersResult:
        self.get_logger().warning(f"parameter change refused: {reason}")
        return SetParametersResult(successful=False, reason=reason)

    def _parameter_values(self) -> dict:
        values = {name: self.get_parameter(name).value for name in PARAMETERS}
        values.update({name: self.get_parameter(name).value for name in self._engine_option_names})
        return values

    def _apply_live_parameters(self, parameters: list[Parameter]) -> None:
        """A live change reaches the node at once: /diagnostics is retimed in every state; once configured, the
        worker's settings are swapped whole (the worker thread reads one settings object or the other, never a
        half-updated one). Unconfigured, the next configure reads the rest; a configure already loading the
        model reads them again when the load ends (``_with_live_values``)."""
        live = {p.name: p.value for p in parameters if p.name in LIVE_PARAMETERS}
        if not live:
            return
        with self._state_lock:
            if "diagnostics_period" in live:  # checked in _check_parameters
                self._retime_diagnostics(live["diagnostics_period"])
            config = self._config
            if config is None or self._state is NodeState.UNCONFIGURED:
                return
            config = self._config = self._with_live_values(config)
            worker = self._worker
            if worker is not None:
                worker.settings = self._worker_settings(config)
        self.get_logger().info("applied " + ", ".join(f"{name} = {value!r}" for name, value in live.items()))

    def _with_live_values(self, config: NodeConfig) -> NodeConfig:
        """``config`` with the live parameters' current values (each checked in _check_parameters when set)."""
        try:
            fresh = NodeConfig.from_parameters(self._parameter_values())
        except ConfigError as error:  # not expected: only live values change while configured
            self.get_logger().error(f"live parameters not applied: {error}")
            return config
        return dataclasses.replace(config, **{name: getattr(fresh, name) for name in LIVE_PARAMETERS})

    def _retime_diagnostics(self, period: float) -> None:
        """/diagnostics every ``period`` s, the next one ``period`` s from now."""
        self._diagnostics_timer.timer_period_ns = int(period * 1e9)
        self._diagnostics_timer.reset()

    def _worker_settings(self, config: NodeConfig) -> WorkerSettings:
        return WorkerSettings(
            pairing_policy=config.pairing_policy,
            max_queue=config.max_queue,
            max_image_age=config.max_image_age,
            next_frame_timeout=config.next_frame_timeout,
            inference_timeout=config.inference_timeout,
            max_masks=config.max_masks,
            image_topic=self.resolve_topic_name("image"),
        )

    def _activate_qos_problems(self, values: dict) -> list[str]:
        """The qos_overrides of what activate creates (camera, depth, 3D targets, tracking), checked at configure
        with the other problems, before the model loads. The camera's parameters are declared now as rclpy would
        when subscribing."""
        image_topic = self.resolve_topic_name("image")
        cameras = [image_topic] + ([f"{image_topic}/compressed"] if values["compressed"] is True else [])
        entities = [(topic, "subscription") for topic in cameras]
        if values["depth.enabled"] is True:
            entities += [(self.resolve_topic_name(t), "subscription") for t in ("depth", "depth_camera_info")]
            entities += [(self.resolve_topic_name(t), "publisher")
                         for t in ("~/targets_3d", "~/target_point", "~/target_cloud", "~/markers")]
        if values["tracking.enabled"] is True:
            entities.append((self.resolve_topic_name("~/tracked"), "publisher"))
        problems = qos_override_problems(self, entities)
        if not problems:
            for topic in cameras:
                declare_qos_overrides(self, Subscription, topic, _qos(IMAGE_QOS))
        return problems

    # -- lifecycle ------------------------------------------------------------------
    def _lifecycle_service(self, name: str):
        """The ``~/<name>`` service rclpy's LifecycleNode created, found by its name among the node's services."""
        full_name = f"{self.get_fully_qualified_name()}/{name}"
        return next(service for service in self.services if service.service_name == full_name)

    def _refusing_unavailable_transitions(self, change_state):
        """change_state by the id of a transition the current state lacks raised rcl's error out of rclpy's
        service callback, which ended the process with a traceback; it is refused like a bad label.

        rclpy raises an RCLError, whose class is public only as the RuntimeError it derives from; the
        transition callbacks never raise (``_reported``), so any RuntimeError here is rcl's refusal.
        """
        def callback(request, response):
            try:
                return change_state(request, response)
            except RuntimeError as error:
                self.get_logger().error(
                    f"change_state to transition {request.transition.id} {request.transition.label!r} refused "
                    f"in state {self._state.value!r}: {error}")
                response.success = False
                return response
        return callback

    @_reported("configure")
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """unconfigured -> inactive: check every parameter (all problems at once), then load the model off the
        executor (get_state and /diagnostics keep answering). A failure leaves the node unconfigured with the reason."""
        if self._exit_requested.is_set():
            return TransitionCallbackReturn.FAILURE
        values = self._parameter_values()
        problems = self._activate_qos_problems(values)
        try:
            config = NodeConfig.from_parameters(values)
        except ConfigError as error:
            problems = error.problems + problems
        problems += self._semantic.check_parameters(values)
        if problems:
            return self._configure_failed("invalid parameters: " + "; ".join(problems))
        self._retime_diagnostics(config.diagnostics_period)
        engine = create_engine(config.engine, config.model_options)
        if config.engine == "plumbing":
            self.get_logger().warning(
                "engine 'plumbing' is a deterministic stand-in for testing the node; it understands neither "
                "images nor language. Set engine: lisa for real segmentation")
        self.get_logger().info(f"loading engine {config.engine!r} with options {config.model_options}")
        started = time.monotonic()
        with self._state_lock:
            if self._exit_requested.is_set():
                return TransitionCallbackReturn.FAILURE
            self._state, self._loading = NodeState.LOADING, (engine, started)
        error = self._load(engine)
        with self._state_lock:
            self._loading = None
            if self._exit_requested.is_set():  # the process is exiting: the model is left to its end
                return TransitionCallbackReturn.FAILURE
            if error is not None:
                self._unload_quietly(engine)  # free whatever the failed load allocated
                return self._configure_failed(f"loading the model failed: {type(error).__name__}: {error}")
            # Live values set while it loaded were accepted but had no config to reach yet.
            self._config, self._engine, self._runner = self._with_live_values(config), engine, EngineRunner()
            self._state, self._problem = NodeState.INACTIVE, ""
        self.get_logger().info(f"model {engine.model_id!r} loaded in {time.monotonic() - started:.1f} s")
        return TransitionCallbackReturn.SUCCESS

    def _load(self, engine: Engine) -> BaseException | None:
        """engine.load() on a daemon thread, waited for until it ends (its error) or exit is requested.

        A model load cannot be interrupted in general (reading a checkpoint), so configure stops waiting
        for it instead: a daemon thread does not hold the process, and cancel() ends it where it can.
        """
        outcome: list[BaseException | None] = []

        def load() -> None:
            try:
                engine.load()
                outcome.append(None)
            except BaseException as error:  # reported by configure
                outcome.append(error)

        thread = threading.Thread(target=load, name="lisa-load", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(LOAD_POLL_S)
            if self._exit_requested.is_set() and thread.is_alive():
                engine.cancel()
                return None
        return outcome[0]

    def _unload_quietly(self, engine: Engine) -> None:
        try:
            engine.unload()
        except Exception as error:
            self.get_logger().debug(f"unload after a failed load: {error!r}")

    def _configure_failed(self, reason: str) -> TransitionCallbackReturn:
        self._state, self._problem = NodeState.UNCONFIGURED, f"configure failed: {reason}"
        self.get_logger().error(f"configure failed: {reason}. Fix the parameter and trigger configure again.")
        return TransitionCallbackReturn.FAILURE

    @_reported("activate")
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """inactive -> active: start the request worker and subscribe to the camera (the model is already loaded)."""
        with self._state_lock:
            if self._exit_requested.is_set():
                return TransitionCallbackReturn.FAILURE
            return self._activate()

    def _activate(self) -> TransitionCallbackReturn:
        config = self._config
        image_topic = self.resolve_topic_name("image")
        self._frames.clear()
        self._targets = TargetsGlue(self, config.targets, image_qos=IMAGE_QOS, max_image_pixels=config.max_image_pixels)
        self._worker = RequestWorker(
            engine=self._engine,
            runner=self._runner,
            frames=self._frames,
            decode=self._targets.pinning(
                lambda frame: image_message_to_rgb(frame.payload, max_pixels=config.max_image_pixels)),
            on_answer=self._publish_answer,
            settings=self._worker_settings(config),
            logger=self.get_logger(),
        )
        overridable = QoSOverridingOptions.with_default_policies()
        self._image_subscriptions = [
            self.create_subscription(Image, "image", self._on_image, _qos(IMAGE_QOS),
                                     callback_group=self._image_group, qos_overriding_options=overridable),
        ]
        if config.compressed:
            self._image_subscriptions.append(self.create_subscription(
                CompressedImage, f"{image_topic}/compressed", self._on_image, _qos(IMAGE_QOS),
                callback_group=self._image_group, qos_overriding_options=overridable))
        self._semantic.start(config.engine, self._engine, self._runner, self._frames, config, image_topic,
                             lambda frame: image_message_to_rgb(frame.payload, max_pixels=config.max_image_pixels))
        self._state, self._problem = NodeState.ACTIVE, ""
        self.get_logger().info(
            f"active: images on {image_topic}{' (+/compressed)' if config.compressed else ''}, "
            f"instructions on {self.resolve_topic_name('instruction')}, "
            f"results on {self.resolve_topic_name('~/result')}")
        return TransitionCallbackReturn.SUCCESS

    @_reported("deactivate")
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """active -> inactive: refuse new instructions, answer every pending one, drop the camera; the model stays."""
        with self._state_lock:
            self._state, self._problem = NodeState.INACTIVE, ""  # first: what arrives meanwhile is refused
            self._stop_processing("node deactivated")
        return TransitionCallbackReturn.SUCCESS

    @_reported("cleanup")
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """inactive -> unconfigured: free the model (GPU memory included), so parameters can change."""
        with self._state_lock:
            self._unload_engine()
            self._state, self._problem = NodeState.UNCONFIGURED, ""
        return TransitionCallbackReturn.SUCCESS

    @_reported("shutdown")
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """any -> finalized: answer what is pending and free the model; the process keeps answering NOT_READY."""
        self.release("node shut down (lifecycle shutdown)", NodeState.FINALIZED)
        return TransitionCallbackReturn.SUCCESS

    @_reported("error processing")
    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: stop and free everything, back to unconfigured (configure can be tried again)."""
        self.release("node error", NodeState.UNCONFIGURED)
        return TransitionCallbackReturn.SUCCESS

    def release(self, reason: str, state: NodeState = NodeState.EXITING) -> None:
        """Stop everything and free the model (shutdown paths); safe to call twice."""
        with self._state_lock:
            self._state = state  # first: what arrives meanwhile is refused with this state's advice
            self._stop_processing(reason)
            self._unload_engine()

    def exit(self, executor: NodeExecutor, signal_name: str) -> None:
        """Process exit (SIGINT/SIGTERM, or the context shut down): answer what is pending, spin until those
        answers have gone out (the ~/segment service responses and action results, each an executor task of
        its own), let an in-flight transition see the exit request and end, then destroy the node.

        The model is left to the process's end: freeing it (garbage collection over torch's objects)
        took seconds of the 2 s an exit may take, for memory the OS reclaims anyway.
        """
        self._exit_requested.set()
        if signal_name:
            self.get_logger().info(f"{signal_name}: shutting down")
        with self._state_lock:
            self._state = NodeState.EXITING  # first: what arrives meanwhile is refused with this state's advice
            self._stop_processing("node shutting down")  # its running engine call is cancelled
        started = time.monotonic()
        answers_deadline, transition_deadline = started + EXIT_ANSWERS_WAIT_S, started + EXIT_WAIT_S
        while True:
            now = time.monotonic()
            answers_owed = (self._waiting_service_calls or self._semantic.waiting_calls
                            or self._segment_action.results_owed)
            transition_running = not self._transition_group.can_execute(self._change_state_service)
            if not (answers_owed and now < answers_deadline or transition_running and now < transition_deadline):
                break
            executor.spin_once(timeout_sec=LOAD_POLL_S)
        # Destroying the node under a running callback would make that callback fail.
        executor.wait_for_callbacks(max(0.0, transition_deadline - time.monotonic()))
        self.destroy_node()

    def _stop_processing(self, reason: str) -> None:
        for subscription in self._image_subscriptions:
            self.destroy_subscription(subscription)
        self._image_subscriptions = []
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop(reason)
        targets, self._targets = self._targets, None
        if targets is not None:
            targets.close()
        self._semantic.stop(reason)
        self._frames.clear()

    def _unload_engine(self) -> None:
        engine, runner = self._engine, self._runner
        self._engine = self._runner = None
        if runner is not None:
            runner.close()
        if engine is not None:
            try:
                engine.unload()
            except Exception as error:
                self.get_logger().error(f"unloading the model failed: {error!r}")
        if engine is not None and rclpy.ok(context=self.context):
            self.get_logger().info("model unloaded")

    # -- inputs -----------------------------------------------------------------------
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

    # -- outputs ----------------------------------------------------------------------
    def _publish_answer(self, answer: Answer) -> None:
        """Publishes the single answer of a request (``on_answer`` of the worker and of ``answer_request``)."""
        engine = self._engine
        model_id = engine.model_id if engine is not None else ""
        request = answer.request
        config = self._config
        mask_encoding = config.result_mask_encoding if config is not None else "raw"  # no masks before configure
        try:
            result = answer_to_result(answer, model_id, mask_encoding)
        except Exception as error:  # the one answer still goes out, as an explained failure
            answer = self._failed_answer(answer, "made into a result message", error)
            result = answer_to_result(answer, model_id, mask_encoding)
        if answer.frame is None and request.stamp is not None:  # refused before reaching a frame
            result.header.stamp = request.stamp  # frame_id stays empty: no frame was used
        label = f"request {request.request_id} ({request.instruction[:60]!r})"
        try:
            self._publish_images_and_text(answer)
        except Exception as error:  # the result below must still go out
            self.get_logger().error(f"{label}: publishing mask/explanation/overlay failed: {error!r}")
        if self._detections_pub is not None and answer.status.answered:
            try:
                self._detections_pub.publish(result_to_detections(self._detection_types, result))
            except Exception as error:  # the result below must still go out
                self.get_logger().error(f"{label}: publishing ~/detections failed: {error!r}")
        # Taken last so that total_ms covers building the result and the other outputs, not only the engine.
        result.total_ms = 1000.0 * (time.monotonic() - request.received)
        try:
            try:
                self._result_pub.publish(result)
            except Exception as error:  # e.g. text that cannot be serialized: the answer goes out without it
                answer = self._failed_answer(answer, "published", error)
                fallback = answer_to_result(answer, model_id, mask_encoding)
                fallback.header, fallback.total_ms = result.header, result.total_ms
                result = fallback
                self._result_pub.publish(result)
            targets = self._targets
            if targets is not None:
                targets.on_answer(answer)  # hands over: the 3D step and tracking run on their own threads
        finally:
            self._stats.record(answer.status, answer.output.timings_ms if answer.output is not None else None,
                               total=result.total_ms, inference=answer.inference_ms, queue_wait=answer.queue_wait_ms)
            if answer.status.answered:
                self.get_logger().info(f"{label}: {answer.status.name}, {answer.message}, {result.total_ms:.0f} ms")
            else:
                self.get_logger().warning(f"{label}: {answer.status.name}: {answer.message}")
            if isinstance(request.context, Future):
                request.context.set_result(result)
                executor = self.executor
                if executor is not None:
                    executor.wake()  # the awaiting ~/segment coroutine resumes at once

    def _failed_answer(self, answer: Answer, could_not_be: str, error: Exception) -> Answer:
        """The answer as an ENGINE_ERROR without the engine's output, saying why."""
        self.get_logger().error(f"request {answer.request.request_id}: its result could not be {could_not_be}: "
                                f"{error!r}")
        return dataclasses.replace(answer, status=Status.ENGINE_ERROR, output=None,
                                   message=f"the answer could not be {could_not_be}: {type(error).__name__}: {error}")

    def _publish_images_and_text(self, answer: Answer) -> None:
        if self._mask_pub.get_subscription_count() > 0:  # the union costs a full-frame pass: skip it unread
            mask = union_mask_msg(answer)
            if mask is not None:
                self._mask_pub.publish(mask)
        if answer.output is not None:
            self._explanation_pub.publish(String(data=answer.output.text))
            config = self._config
            if config is not None and (config.publish_overlay or self._overlay_pub.get_subscription_count() > 0):
                drawn = overlay_masks(answer.image, answer.output.masks, config.overlay_alpha)
                self._overlay_pub.publish(array_to_image_msg(drawn, "rgb8", answer.frame.header))

    def _publish_diagnostics(self) -> None:
        engine, config, worker = self._engine, self._config, self._worker
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: segmentation",
                                  hardware_id=engine.model_id if engine is not None else "")
        if self._problem:
            status.level = DiagnosticStatus.ERROR
        elif self._state is NodeState.ACTIVE:
            status.level = DiagnosticStatus.OK
        else:
            status.level = DiagnosticStatus.WARN
        status.message = self._problem or self._state.value
        loading = self._loading
        if loading is not None and self._state is NodeState.LOADING:
            status.message = f"loading the model {loading[0].model_id!r} ({time.monotonic() - loading[1]:.0f} s so far)"
        values = {
            "engine": config.engine if config is not None else "",
            "model_id": engine.model_id if engine is not None else "",
            "queue_depth": worker.queue_depth if worker is not None else 0,
            "max_queue": config.max_queue if config is not None else 0,
            "frames_received": self._frames.received_count,
            "frames_dropped": self._frames.dropped_count,  # replaced by a newer frame before being used
            # Readers this node's ~/result writer has matched: a client sure to get its first answer waits
            # for its own here (its side of discovery can finish before the node's; lisa-ros replay does).
            "result_subscribers": self._result_pub.get_subscription_count(),
        }
        targets = self._targets
        values.update(targets.diagnostics() if targets is not None else {})
        for kind in ("total", "inference", "queue_wait"):
            percentiles = self._stats.percentiles(kind)
            for q, value in (percentiles or {}).items():
                values[f"{kind}_ms_p{q}"] = f"{value:.1f}"
        values.update({f"phase_{phase}_ms_mean": f"{mean:.1f}" for phase, mean in self._stats.phase_means().items()})
        values.update({f"answers_{name.lower()}": count for name, count in self._stats.counts().items()})
        if engine is not None:
            try:
                values.update(engine.memory_stats())
            except Exception as error:
                values["memory_stats_error"] = repr(error)
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)

    def schedule_auto_start(self) -> None:
        """Configure and activate once the executor spins, when the parameters ask for it (the default).

        As a callback of the transition group (like change_state), so the node answers get_state and
        publishes /diagnostics while the model loads.
        """
        self._auto_start_timer = self.create_timer(0.0, self._auto_start, callback_group=self._transition_group)

    def _auto_start(self) -> None:
        self._auto_start_timer.cancel()  # once
        if self._exit_requested.is_set() or self.get_parameter("auto_configure").value is not True:
            return
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return
        if not self._exit_requested.is_set() and self.get_parameter("auto_activate").value is True:
            self.trigger_activate()


class NodeExecutor(MultiThreadedExecutor):
    """Keeps the callbacks it hands to its threads, so an exit can wait for the running ones."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._handed_out: list = []  # the tasks wait_for_ready_callbacks returned (spin_once runs each)
        self._handed_out_lock = threading.Lock()

    def wait_for_ready_callbacks(self, *args, **kwargs):
        handler, entity, node = super().wait_for_ready_callbacks(*args, **kwargs)
        with self._handed_out_lock:
            self._handed_out = [task for task in self._handed_out if not task.done()] + [handler]
        return handler, entity, node

    def wait_for_callbacks(self, timeout_s: float) -> bool:
        """Wait until every callback handed to the thread pool has run; True if they all did in time.

        Jazzy's shutdown() means to wait for them but skips the wait, and then destroys the guard
        condition that a callback just starting still triggers.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            with self._handed_out_lock:
                running = [task for task in self._handed_out if not task.done()]
            if not running:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)


def _rcl_reason(error: Exception, argv: list[str]) -> str:
    """What is wrong with the command line, in one line: rcl's message without its C source locations."""
    missing = [path for flag, path in zip(argv, argv[1:]) if flag == "--params-file" and not os.path.isfile(path)]
    if missing:
        return f"--params-file {missing[0]}: no such file"
    reason = re.sub(r", at \S+:\d+", "", str(error)).removeprefix("failed to initialize rcl: ")
    return f"{reason} (check the --ros-args: --params-file, -p name:=value, -r from:=to)"


def main(args: list[str] | None = None, signals: ExitSignals | None = None) -> int:
    """signals: installed by the entry script before its imports (installed here otherwise)."""
    # Our own signal handlers: rclpy's would shut the context down first, and the
    # NOT_READY answers to pending instructions could then no longer be published.
    signals = signals or ExitSignals().install()
    if signals.requested.is_set():  # during the imports
        return 0
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as error:  # RCLError: a bad --ros-args (a missing --params-file, a typo in -p, bad YAML)
        print(f"lisa_node: cannot start: {_rcl_reason(error, sys.argv if args is None else args)}",
              file=sys.stderr)
        return 2
    try:
        node = LisaNode(exit_requested=signals.requested)
    except Exception as error:  # e.g. a bad qos_overrides value for ~/result or the instruction topic
        print(f"lisa_node: cannot start: {type(error).__name__}: {error}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = NodeExecutor(num_threads=EXECUTOR_THREADS)
    executor.add_node(node)
    node.schedule_auto_start()
    try:
        while not signals.requested.is_set() and rclpy.ok(context=node.context):
            try:
                executor.spin_once(timeout_sec=SPIN_PERIOD_S)  # returns often so a signal is seen at once
            except InvalidHandle:
                # deactivate destroyed a subscription while this thread was building the wait
                # set (an rclpy race under traffic); the next wait set no longer holds it.
                continue
            except Exception as error:  # raised by a callback: one bad request must not end the node
                node.get_logger().error(f"a callback failed: {type(error).__name__}: {error}")
    except ExternalShutdownException:
        pass
    finally:
        node.exit(executor, signals.name)
        rclpy.try_shutdown()
        signals.ignore_from_now_on()
    return 0
