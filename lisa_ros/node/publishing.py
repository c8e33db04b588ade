"""LisaNode's outputs: each request's one answer on ~/result, with its mask, explanation, overlay and detections;
the result goes out even when another output fails."""
from __future__ import annotations

import dataclasses
import time

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.task import Future
from sensor_msgs.msg import Image
from std_msgs.msg import String

from lisa_ros.core.masks import overlay_masks
from lisa_ros.core.types import Answer, Status
from lisa_ros.msg import SegmentationResult
from lisa_ros.node.detections import installed_detection_types, result_to_detections
from lisa_ros.node.messages import answer_to_result, array_to_image_msg, union_mask_msg
from lisa_ros.node.qos_overrides import entity_qos

# REP 2003: results out reliable.
RESULT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)


class ResultPublishing:
    """LisaNode's result publishing (a mixin: the engine and config it reads are LisaNode's)."""

    def _output_topics(self) -> list[str]:
        """What ``_create_outputs`` will publish: ~/detections only when enabled and vision_msgs is installed."""
        self._detections_on = self.get_parameter("detections.enabled").value is True
        self._detection_types = installed_detection_types() if self._detections_on else None
        return ["~/result", "~/mask", "~/explanation", "~/overlay"] + ["~/detections"] * (
            self._detection_types is not None)

    def _create_outputs(self) -> None:
        overridable = QoSOverridingOptions.with_default_policies()
        self._result_pub = self.create_publisher(SegmentationResult, "~/result", entity_qos(RESULT_QOS),
                                                 qos_overriding_options=overridable)
        self._mask_pub = self.create_publisher(Image, "~/mask", entity_qos(RESULT_QOS),
                                               qos_overriding_options=overridable)
        self._explanation_pub = self.create_publisher(String, "~/explanation", entity_qos(RESULT_QOS),
                                                      qos_overriding_options=overridable)
        self._overlay_pub = self.create_publisher(Image, "~/overlay", entity_qos(RESULT_QOS),
                                                  qos_overriding_options=overridable)
        self._detections_pub = None
        if not self._detections_on:
            self.get_logger().info("detections.enabled is false: ~/detections is off")
        elif self._detection_types is None:
            self.get_logger().info("vision_msgs not installed: ~/detections is off")
        else:
            self._detections_pub = self.create_publisher(self._detection_types.detection_array, "~/detections",
                                                         entity_qos(RESULT_QOS), qos_overriding_options=overridable)

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
