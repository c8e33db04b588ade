"""~/detections: a result as vision_msgs/Detection2DArray, for consumers and rviz plugins built on vision_msgs.

vision_msgs is optional (not on PyPI, absent from minimal installs), so the message classes are handed in
rather than imported here: the node passes the real ones, the tests pass classes generated from the
message definitions. Every nested message is built with all its fields as keywords, which both kinds accept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

POSE_COVARIANCE_SIZE = 36  # geometry_msgs/PoseWithCovariance: a 6x6 row-major matrix, unknown = zeros


@dataclasses.dataclass(frozen=True)
class DetectionTypes:
    """The message classes the converter builds (vision_msgs and the geometry_msgs it embeds)."""

    detection_array: Any
    detection: Any
    bounding_box: Any
    pose_2d: Any
    point_2d: Any
    hypothesis_with_pose: Any
    hypothesis: Any
    pose_with_covariance: Any
    pose: Any
    point: Any
    quaternion: Any

    @classmethod
    def from_modules(cls, vision: ModuleType, geometry: ModuleType) -> DetectionTypes:
        """From `vision_msgs.msg` and `geometry_msgs.msg` (or anything with the same class names)."""
        return cls(vision.Detection2DArray, vision.Detection2D, vision.BoundingBox2D, vision.Pose2D,
                   vision.Point2D, vision.ObjectHypothesisWithPose, vision.ObjectHypothesis,
                   geometry.PoseWithCovariance, geometry.Pose, geometry.Point, geometry.Quaternion)


def installed_detection_types() -> DetectionTypes | None:
    """The real vision_msgs classes, or None where vision_msgs is not installed."""
    try:
        import geometry_msgs.msg
        import vision_msgs.msg
    except ImportError:
        return None
    return DetectionTypes.from_modules(vision_msgs.msg, geometry_msgs.msg)


def detections_message(types: DetectionTypes, header: Any, boxes: Sequence[tuple[int, int, int, int]],
                       scores: Sequence[float], label: str, request_id: str) -> Any:
    """One Detection2D per mask: its tight box (x, y, width, height in pixels), its score, the instruction
    as class_id. The centre is in pixel-edge coordinates (a box covering pixels 2..4 is centred at 3.5),
    matching the masks' grid; the id is "<request_id>/<mask index>" so a detection leads back to its mask.
    """
    if len(boxes) != len(scores):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    detections = []
    for index, ((x, y, width, height), score) in enumerate(zip(boxes, scores)):
        centre = types.pose_2d(position=types.point_2d(x=x + width / 2.0, y=y + height / 2.0), theta=0.0)
        no_pose = types.pose_with_covariance(
            pose=types.pose(position=types.point(x=0.0, y=0.0, z=0.0),
                            orientation=types.quaternion(x=0.0, y=0.0, z=0.0, w=1.0)),
            covariance=np.zeros(POSE_COVARIANCE_SIZE, dtype=np.float64))
        hypothesis = types.hypothesis_with_pose(hypothesis=types.hypothesis(class_id=label, score=float(score)),
                                                pose=no_pose)
        detections.append(types.detection(
            header=header, results=[hypothesis],
            bbox=types.bounding_box(center=centre, size_x=float(width), size_y=float(height)),
            id=f"{request_id}/{index}"))
    return types.detection_array(header=header, detections=detections)


def result_to_detections(types: DetectionTypes, result: Any) -> Any:
    """The Detection2DArray of a lisa_ros/SegmentationResult (its header is the source frame's)."""
    boxes = [(box.x_offset, box.y_offset, box.width, box.height) for box in result.boxes]
    return detections_message(types, result.header, boxes, list(result.scores), result.instruction,
                              result.request_id)
