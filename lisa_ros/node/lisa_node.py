"""``lisa_node``: a managed (lifecycle) node that answers segmentation instructions.

Thin by design: messages are converted and handed to the ROS-free pieces
in ``lisa_ros.core`` (validation, the newest-frame slot, the request worker,
statistics). This module holds the lifecycle: configure loads the engine, activate
subscribes, deactivate unsubscribes, cleanup frees the model; and the process
(``main``, the exit). Beside it, one concern each: ``parameters``, ``requests``
(the entry points), ``publishing`` (the answers), ``diagnostics``. Callbacks never
run inference.
"""
from __future__ import annotations

import functools
import os
import re
import sys
import threading
import time
import weakref

import rclpy
from lifecycle_msgs.srv import ChangeState
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.exceptions import InvalidHandle
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image

from lisa_ros.core.engine import Engine, create_engine
from lisa_ros.core.engine_runner import EngineRunner
from lisa_ros.core.frames import LatestFrame
from lisa_ros.core.image import image_message_to_rgb
from lisa_ros.core.lifecycle import NodeState
from lisa_ros.core.node_config import ConfigError, NodeConfig
from lisa_ros.core.stats import RequestStats
from lisa_ros.core.worker import RequestWorker
from lisa_ros.node.diagnostics import NodeDiagnostics
from lisa_ros.node.exit_signals import ExitSignals
from lisa_ros.node.parameters import NodeParameters
from lisa_ros.node.publishing import ResultPublishing
from lisa_ros.node.qos_overrides import QosOverrideError, entity_qos, qos_override_problems
from lisa_ros.node.requests import IMAGE_QOS, RequestEntryPoints
from lisa_ros.node.targets_glue import TargetsGlue

SPIN_PERIOD_S = 0.1
LOAD_POLL_S = 0.05  # how often configure looks for an exit request while the model loads
EXIT_WAIT_S = 1.0  # at exit, how long an in-flight transition may take to see the exit request and end
EXIT_ANSWERS_WAIT_S = 3.0  # at exit, how long the answers owed (service responses, action results) may take to go out
# Callbacks that may hold a thread at once: one per mutually exclusive group (images, instructions,
# transitions, ~/reset, the default group: get_state, parameters, diagnostics) plus ~/segment's coroutine
# steps, which never wait on a thread: a call waiting for its answer holds none, whatever max_queue is.
EXECUTOR_THREADS = 8


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


class LisaNode(NodeParameters, RequestEntryPoints, ResultPublishing, NodeDiagnostics, LifecycleNode):
    """The node: its lifecycle transitions here; parameters, entry points, publishing and diagnostics in the
    mixins beside this module, each about one concern."""

    def __init__(self, node_name: str = "lisa_node", *, exit_requested: threading.Event | None = None,
                 **kwargs) -> None:
        """exit_requested: set by SIGINT/SIGTERM (see main); every step of start-up looks at it."""
        super().__init__(node_name, **kwargs)
        self._exit_requested = exit_requested or threading.Event()
        # Held while the state, the engine and the subscriptions change: an exit (main thread) and a
        # transition (an executor thread) never interleave.
        self._state_lock = threading.RLock()
        self._declare_parameters()

        self._config: NodeConfig | None = None
        self._engine: Engine | None = None
        self._runner: EngineRunner | None = None
        self._worker: RequestWorker | None = None
        self._state = NodeState.UNCONFIGURED
        self._problem = ""  # why the last transition failed ("" after a success): shown until fixed
        self._frames = LatestFrame()
        self._stats = RequestStats()
        self._image_subscriptions: list = []  # created on activate, destroyed on deactivate
        self._targets: TargetsGlue | None = None  # 3D targets and tracking: activate to deactivate
        self._loading: tuple[Engine, float] | None = None  # (engine, monotonic start) while configure loads it

        # One group each, so a flood of frames cannot starve the instructions.
        self._image_group = MutuallyExclusiveCallbackGroup()
        self._instruction_group = MutuallyExclusiveCallbackGroup()
        self._service_group = ReentrantCallbackGroup()
        self._reset_group = MutuallyExclusiveCallbackGroup()  # a reset may wait up to 5 s for a busy engine
        # Transitions (change_state, the auto-start) run in a group of their own: a configure that loads
        # the model for minutes must not hold the default group, where get_state, the parameter services
        # and the diagnostics timer run.
        self._transition_group = MutuallyExclusiveCallbackGroup()
        change_state = self._change_state_service = self._change_state()
        self.default_callback_group.entities.discard(weakref.ref(change_state))
        change_state.callback_group = self._transition_group
        self._transition_group.add_entity(change_state)
        change_state.callback = self._refusing_unavailable_transitions(change_state.callback)
        self._auto_start_timer = None
        outputs, instructions = self._output_topics(), self._instruction_topics()
        if problems := qos_override_problems(self, [(self.resolve_topic_name(t), "publisher") for t in outputs]
                                             + [(t, "subscription") for t in instructions]):
            raise QosOverrideError("; ".join(problems))  # main prints it: lisa_node cannot start without them
        self._create_outputs()
        self._create_entry_points()
        self._start_diagnostics()

    # -- lifecycle ------------------------------------------------------------------
    def _change_state(self):
        """The ~/change_state service rclpy's LifecycleNode created: the node's one ChangeState service (found by
        type, so a remapped name does not matter)."""
        return next(service for service in self.services if service.srv_type is ChangeState)

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
            self.create_subscription(Image, "image", self._on_image, entity_qos(IMAGE_QOS),
                                     callback_group=self._image_group, qos_overriding_options=overridable),
        ]
        if config.compressed:
            self._image_subscriptions.append(self.create_subscription(
                CompressedImage, f"{image_topic}/compressed", self._on_image, entity_qos(IMAGE_QOS),
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
