"""ROS message <-> NumPy conversions for the node (validation lives in lisa_ros.core.image)."""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest

from lisa_ros.core.masks import PNG_MASK_FORMAT, bounding_box, mask_to_mono8, mask_to_png, union_mono8
from lisa_ros.core.types import Answer
from lisa_ros.msg import SegmentationResult

MAX_ECHOED_INSTRUCTION_CHARS = 500


def array_to_image_msg(array: np.ndarray, encoding: str, header) -> Image:
    """(H, W) mono8 or (H, W, 3) rgb8 array -> sensor_msgs/Image with the given header."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    msg = Image(header=header, height=array.shape[0], width=array.shape[1], encoding=encoding, is_bigendian=0)
    msg.step = array.shape[1] * (array.shape[2] if array.ndim == 3 else 1)
    msg.data = array.tobytes()
    return msg


def frame_key(header, fallback) -> tuple:
    """Names a frame for engine caches: its stamp and frame_id, or ``fallback`` when unstamped.

    A name, not an identity: the engine compares the pixels on a cache hit (cheaper than hashing
    every frame here), so two images with one header are never answered on each other's features.
    """
    if header.stamp.sec == 0 and header.stamp.nanosec == 0:
        return ("unstamped", fallback)
    return (header.stamp.sec, header.stamp.nanosec, header.frame_id)


def answer_to_result(answer: Answer, model_id: str, mask_encoding: str = "raw") -> SegmentationResult:
    """The SegmentationResult message for one answer (masks at source resolution, source header; total_ms is set
    by the publisher, once everything else is out). ``mask_encoding``: "raw" (masks[]) or "png"
    (compressed_masks[])."""
    request = answer.request
    result = SegmentationResult(mask_encoding=mask_encoding)
    if answer.frame is not None:
        result.header = answer.frame.header
    result.request_id = request.request_id
    result.conversation_id = request.conversation_id
    # Echo what was asked, made serializable (a refused instruction may hold lone surrogates). A correlated
    # instruction (lisa_ros/Instruction) comes back exactly as sent; the String topic's is shortened.
    if request.echo is not None:
        instruction = request.echo.encode("utf-8", "replace").decode("utf-8")
    else:
        instruction = request.instruction.encode("utf-8", "replace").decode("utf-8")
        if len(instruction) > MAX_ECHOED_INSTRUCTION_CHARS:
            instruction = instruction[:MAX_ECHOED_INSTRUCTION_CHARS] + "..."
    result.instruction = instruction
    result.status = int(answer.status)
    result.status_message = answer.message
    result.model_id = model_id
    result.queue_wait_ms = float(answer.queue_wait_ms)
    result.inference_ms = float(answer.inference_ms)
    if answer.output is not None:
        result.explanation = answer.output.text
        result.timing_names = list(answer.output.timings_ms)
        result.timing_ms = [float(v) for v in answer.output.timings_ms.values()]
        if mask_encoding == "png":
            result.compressed_masks = [CompressedImage(header=result.header, format=PNG_MASK_FORMAT,
                                                       data=mask_to_png(m).tobytes()) for m in answer.output.masks]
        elif mask_encoding == "raw":
            result.masks = [array_to_image_msg(mask_to_mono8(m), "mono8", result.header)
                            for m in answer.output.masks]
        else:
            raise ValueError(f"mask_encoding must be 'raw' or 'png', got {mask_encoding!r}")
        result.scores = [float(s) for s in answer.output.scores]
        result.boxes = [_roi(bounding_box(m)) for m in answer.output.masks]
    return result


def union_mask_msg(answer: Answer) -> Image | None:
    """~/mask: the union of the answer's masks (all zero for NOT_FOUND), or None without a decoded frame."""
    if answer.image is None or not answer.status.answered:
        return None
    masks = answer.output.masks if answer.output is not None else []
    height, width = answer.image.shape[:2]
    return array_to_image_msg(union_mono8(masks, height, width), "mono8", answer.frame.header)


def _roi(box: tuple[int, int, int, int]) -> RegionOfInterest:
    x, y, w, h = box
    return RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h, do_rectify=False)
