"""ROS messages from the ROS-free 3D and tracking cores (lisa_ros.core.depth / .tracking).

Targets3D, TrackedTargets, PointStamped (~/target_point) and PointCloud2 (~/target_cloud). The
cloud is packed by hand (x, y, z float32, 12-byte points) because sensor_msgs_py is not on PyPI.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, PointStamped
from sensor_msgs.msg import Image, PointCloud2, PointField, RegionOfInterest
from std_msgs.msg import Header

from lisa_ros.core.depth import Measurement, best_target
from lisa_ros.core.depth import Target3D as CoreTarget3D
from lisa_ros.core.tracking import TrackedState
from lisa_ros.msg import Target3D, Targets3D, TrackedTargets
from lisa_ros.node.messages import array_to_image_msg

_XYZ_FIELDS = [PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
               for i, name in enumerate("xyz")]


def stamp_msg(stamp_ns: int | None) -> Time:
    sec, nanosec = divmod(int(stamp_ns or 0), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def _point(values: np.ndarray | None) -> Point:
    return Point() if values is None else Point(x=float(values[0]), y=float(values[1]), z=float(values[2]))


def target_msg(target: CoreTarget3D) -> Target3D:
    return Target3D(status=int(target.status), status_message=target.message, centroid=_point(target.centroid),
                    box_min=_point(target.box_min), box_max=_point(target.box_max),
                    distance=float(target.distance or 0.0), median_depth=float(target.median_depth or 0.0),
                    valid_pixels=target.valid_pixels, mask_pixels=target.mask_pixels, surfaces=target.surfaces,
                    surface_fraction=float(target.surface_fraction))


def targets3d_msg(measurement: Measurement, colour_header: Header, request_id: str, conversation_id: str,
                  scores: Sequence[float], depth_frame_id: str = "") -> Targets3D:
    """The colour frame's stamp; the depth camera's frame_id whatever the statuses (msg/Targets3D.msg): the paired
    depth image's, else ``depth_frame_id`` (the last one received), else the colour frame's (none received yet)."""
    frame_id = measurement.frame_id or depth_frame_id or colour_header.frame_id
    header = Header(stamp=colour_header.stamp, frame_id=frame_id)
    best = best_target(measurement.targets, scores)
    return Targets3D(header=header, request_id=request_id, conversation_id=conversation_id,
                     depth_stamp=stamp_msg(measurement.depth_stamp_ns), status_message=measurement.message,
                     targets=[target_msg(t) for t in measurement.targets], best_index=-1 if best is None else best)


def point_stamped(targets: Targets3D) -> PointStamped | None:
    """~/target_point: the best target's centroid, None when no target has a point."""
    if targets.best_index < 0:
        return None
    return PointStamped(header=targets.header, point=targets.targets[targets.best_index].centroid)


def point_cloud(points: np.ndarray, header: Header) -> PointCloud2:
    """(N, 3) float32 points -> an unorganised, dense PointCloud2 (x, y, z)."""
    points = np.ascontiguousarray(points, dtype="<f4").reshape(-1, 3)
    return PointCloud2(header=header, height=1, width=len(points), fields=_XYZ_FIELDS, is_bigendian=False,
                       point_step=12, row_step=12 * len(points), data=points.tobytes(), is_dense=True)


def tracked_msg(state: TrackedState, header: Header, source_stamp_ns: int,
                targets_3d: Targets3D | None = None) -> TrackedTargets:
    """~/tracked for one TrackedState; ``header`` is the current camera frame's."""
    msg = TrackedTargets(header=header, request_id=state.request_id, conversation_id=state.conversation_id,
                         source_stamp=stamp_msg(source_stamp_ns), age=float(state.age_s), finished=state.finished,
                         finished_reason=state.finished_reason)
    for target in state.targets:
        if target.mask is None:
            msg.masks.append(Image(header=header, encoding="mono8"))
        else:
            mono8 = np.where(target.mask, np.uint8(255), np.uint8(0))
            msg.masks.append(array_to_image_msg(mono8, "mono8", header))
        x, y, w, h = target.box
        msg.boxes.append(RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h))
        msg.scores.append(float(target.score))
        msg.confidences.append(float(target.confidence))
        msg.lost.append(bool(target.lost))
        msg.lost_reasons.append(target.lost_reason)
    if targets_3d is not None:
        msg.targets_3d = targets_3d
    return msg

