"""Semantic mode in ``lisa_node``: the ``~/segment_semantic`` service, ``~/semantic`` and ``~/semantic_overlay``.

Kept out of lisa_node.py: the node calls ``check_parameters`` at configure, ``start``
at activate and ``stop`` when processing stops. The requests run on the engine's
single thread (the node's EngineRunner) through a ``SemanticWorker``; the service
awaits its answer without holding an executor thread, like ``~/segment``.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future
from sensor_msgs.msg import Image

from lisa_ros.core.bounded_worker import deliver_once
from lisa_ros.core.frames import Frame, LatestFrame
from lisa_ros.core.lifecycle import NodeState, not_ready_message
from lisa_ros.core.semantic import SemanticOptions, SemanticResult, label_overlay
from lisa_ros.core.semantic_worker import (
    SemanticAnswer,
    SemanticConfig,
    SemanticJob,
    SemanticSettings,
    SemanticWorker,
    refusal,
    semantic_config,
)
from lisa_ros.core.types import Status
from lisa_ros.msg import SemanticSegmentation
from lisa_ros.node.messages import array_to_image_msg, frame_key
from lisa_ros.srv import SegmentSemantic

RESULT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
SERVICE_QOS = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)


def label_image_msg(label: np.ndarray, header) -> Image:
    """(H, W) uint8 -> mono8, uint16 -> 16UC1 (little-endian), with the source header."""
    if label.dtype == np.uint8:
        return array_to_image_msg(label, "mono8", header)
    data = np.ascontiguousarray(label, dtype="<u2")
    msg = Image(header=header, height=data.shape[0], width=data.shape[1], encoding="16UC1", is_bigendian=0,
                step=data.shape[1] * 2)
    msg.data = data.tobytes()
    return msg


def result_to_msg(answer: SemanticAnswer) -> SemanticSegmentation:
    """The SemanticSegmentation message of one answer (total_ms is set by the publisher)."""
    result: SemanticResult = answer.result
    msg = SemanticSegmentation()
    if answer.frame is not None:
        msg.header = answer.frame.header
    msg.request_id = answer.job.request_id
    msg.status = int(result.status)
    msg.status_message = result.message
    msg.label = label_image_msg(result.label, msg.header)
    msg.label_ids = [int(i) for i in result.label_ids]
    msg.label_names = list(result.label_names)
    msg.scores = [float(s) for s in result.scores]
    msg.presence = [float(p) for p in result.presence]
    msg.pixel_fractions = [float(f) for f in result.fractions]
    msg.filtered_out = list(result.filtered_out)
    msg.filtered_reasons = list(result.filtered_reasons)
    msg.descriptions = list(result.descriptions)
    msg.description_sources = list(result.description_sources)
    msg.timing_names = list(result.timings_ms)
    msg.timing_ms = [float(v) for v in result.timings_ms.values()]
    msg.queue_wait_ms = float(answer.queue_wait_ms)
    msg.inference_ms = float(answer.inference_ms)
    msg.model_id = result.model_id
    return msg


def make_segmenter(engine_type: str, engine, config: SemanticConfig):
    """The LISA engine's SemanticSegmenter (with the descriptions parsed at configure), or the plumbing
    engine's band stand-in."""
    options = config.options
    if engine_type == "plumbing":
        from lisa_ros.core.plumbing_engine import PlumbingSemanticSegmenter

        return PlumbingSemanticSegmenter(engine, options)
    from lisa_ros.model.semantic import SemanticSegmenter

    segmenter = SemanticSegmenter(engine, options, descriptions=config.descriptions)
    segmenter.model_id = engine.model_id
    return segmenter


class SemanticGlue:
    """Owns the semantic interfaces of one LisaNode (created with it, started on each activate)."""

    def __init__(self, node, callback_group) -> None:
        self._node = node
        self._config = SemanticConfig(SemanticOptions(), {}, 0.0, [])  # the last configure's, once it passed
        self._worker: SemanticWorker | None = None
        self._timer = None
        self._last_periodic_seq = 0
        self._frames: LatestFrame | None = None
        self._overlay_alpha = 0.5
        self.waiting_calls = 0  # service calls awaiting their answer (the node's exit waits for them)
        self._waiting_lock = threading.Lock()  # the service's coroutines run on several executor threads
        self._keys = itertools.count(1)
        self._result_pub = node.create_publisher(SemanticSegmentation, "~/semantic", RESULT_QOS)
        self._overlay_pub = node.create_publisher(Image, "~/semantic_overlay", RESULT_QOS)
        self._timer_group = MutuallyExclusiveCallbackGroup()
        node.create_service(SegmentSemantic, "~/segment_semantic", self._on_segment_semantic,
                            callback_group=callback_group, qos_profile=SERVICE_QOS)

    def check_parameters(self, values: Mapping[str, Any]) -> list[str]:
        """At configure: reads the ``semantic.*`` values and parses the description file; the problems found
        (each naming its parameter)."""
        config = semantic_config(values)
        if not config.problems:
            self._config = config
        return config.problems

    def start(self, engine_type: str, engine, runner, frames: LatestFrame, config, image_topic: str, decode) -> None:
        """At activate: a worker on the node's engine thread, and the periodic timer when asked for."""
        semantic = self._config
        options = semantic.options
        self._frames, self._last_periodic_seq = frames, 0
        self._worker = SemanticWorker(
            make_segmenter(engine_type, engine, semantic), runner, frames, decode, self._publish,
            SemanticSettings(categories=options.categories, max_categories=options.max_categories,
                             max_queue=config.max_queue, max_image_age=config.max_image_age,
                             inference_timeout=config.inference_timeout, image_topic=image_topic),
            logger=self._node.get_logger())
        self._overlay_alpha = config.overlay_alpha
        if semantic.rate_hz > 0:
            self._timer = self._node.create_timer(1.0 / semantic.rate_hz, self._on_tick,
                                                  callback_group=self._timer_group)

    def stop(self, reason: str) -> None:
        """Answers everything pending with NOT_READY; the periodic mode ends."""
        timer, self._timer = self._timer, None
        if timer is not None:
            self._node.destroy_timer(timer)
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop(reason)

    # -- inputs -----------------------------------------------------------------------
    def _on_tick(self) -> None:
        """Labels the newest frame, once per frame; skipped while the previous tick's request runs."""
        worker, frames = self._worker, self._frames
        if worker is None or frames is None or frames.seq == self._last_periodic_seq:
            return
        job = self._job(SemanticJob(periodic=True))
        if worker.submit(job) and job.frame is not None:
            self._last_periodic_seq = job.frame.seq

    async def _on_segment_semantic(self, request: SegmentSemantic.Request,
                                   response: SegmentSemantic.Response) -> SegmentSemantic.Response:
        """Awaits the worker's answer without holding an executor thread; never runs inference."""
        image, frame = request.image, None
        if image.width or image.height or len(image.data):
            frame = Frame(payload=image, header=image.header, received=time.monotonic(),
                          key=frame_key(image.header, f"semantic-{next(self._keys)}"))
        answered = Future()
        job = self._job(SemanticJob(categories=list(request.categories) or None, frame=frame, context=answered))
        with self._waiting_lock:
            self.waiting_calls += 1
        try:
            worker = self._worker
            if worker is None or self._node._state is not NodeState.ACTIVE:
                deliver_once(job, refusal(job, Status.NOT_READY, not_ready_message(self._node._state,
                                                                                   self._node._problem)),
                             self._publish, self._node.get_logger())
            else:
                worker.submit(job)
            response.result = await answered
        finally:
            with self._waiting_lock:
                self.waiting_calls -= 1
        return response

    def _job(self, job: SemanticJob) -> SemanticJob:
        job.request_id = self._node.new_request_id()
        return job

    # -- outputs ----------------------------------------------------------------------
    def _publish(self, answer: SemanticAnswer) -> None:
        """The single answer of a job: the service's response, or ~/semantic for the periodic mode."""
        job, result = answer.job, answer.result
        msg = result_to_msg(answer)
        if answer.frame is None:
            msg.header.stamp = self._node.get_clock().now().to_msg()  # refused before reaching a frame
        logger = self._node.get_logger()
        label = f"semantic request {job.request_id} ({len(result.label_names)} categories)"
        try:
            if answer.image is not None and result.status.answered and self._overlay_pub.get_subscription_count():
                drawn = label_overlay(answer.image, result.label, self._overlay_alpha)
                self._overlay_pub.publish(array_to_image_msg(drawn, "rgb8", msg.header))
        except Exception as error:  # the answer below must still go out
            logger.error(f"{label}: publishing ~/semantic_overlay failed: {error!r}")
        msg.total_ms = 1000.0 * (time.monotonic() - job.received)
        try:
            if job.periodic:
                self._result_pub.publish(msg)
        finally:
            if result.status.answered:
                sources = ", ".join(f"{n}: {d!r} ({s})" for n, d, s in zip(
                    result.label_names, result.descriptions, result.description_sources) if d)
                logger.info(f"{label}: {result.status.name}, {result.message}, {msg.total_ms:.0f} ms"
                            + (f"; descriptions {sources}" if sources and not job.periodic else ""))
            else:
                logger.warning(f"{label}: {result.status.name}: {result.message}")
            if isinstance(job.context, Future):
                job.context.set_result(msg)
                executor = self._node.executor
                if executor is not None:
                    executor.wake()
