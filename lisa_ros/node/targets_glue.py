"""The node's 3D-target and tracking outputs: ROS glue around lisa_ros.core.depth and .tracking.

One :class:`TargetsGlue` lives from activate to deactivate. It owns the depth subscriptions, the
``~/targets_3d``, ``~/target_point``, ``~/target_cloud``, ``~/markers`` and ``~/tracked``
publishers and two threads, so that nothing here runs on the worker thread beyond handing an
answer over: the 3D step of an answer runs on the ``lisa-targets`` thread after the result is
out, tracking on the TrackingRunner's thread, and the image callback only hands the undecoded
frame to the runner's one-slot buffer.

Depth pairing outlives inference: the answer comes seconds after its frame, when a short depth
buffer has long moved on. So when the worker takes a colour frame (``pinning`` wraps its decode),
the depth frames within the tolerance of that frame's stamp (already here, or arriving while
the model runs) are kept aside for the answer.
"""
from __future__ import annotations

import collections
import copy
import dataclasses
import functools
import queue
import threading
import time

from geometry_msgs.msg import PointStamped, Vector3
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from lisa_ros.core.depth import DepthMessage, DepthStatus, Measurement, StampBuffer, TargetLocator
from lisa_ros.core.image import image_message_to_rgb
from lisa_ros.core.node_config import TargetsConfig
from lisa_ros.core.tracking import TrackedState, TrackingRunner
from lisa_ros.core.types import Answer
from lisa_ros.msg import Targets3D, TrackedTargets
from lisa_ros.node.targets_messages import point_cloud, point_stamped, targets3d_msg, tracked_msg

OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
# A depth frame of the colour frame's instant can arrive just after a fast answer (it travels on its own
# topic); the 3D step, on its own thread, waits this long for it before saying NO_DEPTH. Not without camera
# info (Measurement.awaits_depth): a depth frame alone cannot give a point, and a node whose camera-info
# topic is mis-remapped would otherwise add the wait to every answer.
DEPTH_GRACE_S = 0.25
PINNED_DEPTH_FRAMES = 16  # depth frames kept aside for frames in inference (max_queue + 1 frames, 1-2 each)
MARKER_COLOURS = [(0.9, 0.2, 0.2), (0.2, 0.8, 0.2), (0.2, 0.4, 0.9), (0.9, 0.8, 0.1), (0.8, 0.2, 0.8)]


def stamp_ns(header: Header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def depth_message(msg: Image) -> DepthMessage:
    return DepthMessage(stamp_ns(msg.header), msg.header.frame_id, msg.encoding, msg.width, msg.height, msg.step,
                        bool(msg.is_bigendian), msg.data)


def markers_msg(targets: Targets3D) -> MarkerArray:
    """rviz markers: a box (CUBE) and a centroid (SPHERE) per measured target; DELETEALL clears older ones."""
    array = MarkerArray(markers=[Marker(header=targets.header, ns="lisa_targets", action=Marker.DELETEALL)])
    for index, target in enumerate(targets.targets):
        if target.status != DepthStatus.OK:
            continue
        red, green, blue = MARKER_COLOURS[index % len(MARKER_COLOURS)]
        low, high = target.box_min, target.box_max
        box = Marker(header=targets.header, ns="lisa_targets", id=2 * index, type=Marker.CUBE, action=Marker.ADD,
                     scale=Vector3(x=max(high.x - low.x, 0.001), y=max(high.y - low.y, 0.001),
                                   z=max(high.z - low.z, 0.001)),
                     color=ColorRGBA(r=red, g=green, b=blue, a=0.4))
        box.pose.position.x, box.pose.position.y = (low.x + high.x) / 2, (low.y + high.y) / 2
        box.pose.position.z = (low.z + high.z) / 2
        box.pose.orientation.w = 1.0
        centre = Marker(header=targets.header, ns="lisa_targets", id=2 * index + 1, type=Marker.SPHERE,
                        action=Marker.ADD, scale=Vector3(x=0.02, y=0.02, z=0.02),
                        color=ColorRGBA(r=red, g=green, b=blue, a=1.0))
        centre.pose.position = target.centroid
        centre.pose.orientation.w = 1.0
        array.markers += [box, centre]
    return array


class TargetsGlue:
    """Created by lisa_node at activate (``node``: the LisaNode), ``close``d at deactivate."""

    def __init__(self, node, config: TargetsConfig, *, image_qos: QoSProfile, max_image_pixels: int) -> None:
        self._node, self._config, self._max_image_pixels = node, config, max_image_pixels
        self._logger = node.get_logger()
        self._closed = False
        self._subscriptions, self._publishers = [], []
        overridable = QoSOverridingOptions.with_default_policies()

        def publisher(msg_type, topic: str):  # a copy per entity: rclpy applies qos_overrides in place
            created = node.create_publisher(msg_type, topic, copy.copy(OUTPUT_QOS),
                                            qos_overriding_options=overridable)
            self._publishers.append(created)
            return created

        self._live: TargetLocator | None = None
        self._depth_received = self._camera_infos_received = 0
        self._depth_frame_id = self._camera_info_frame_id = ""  # the last received (Targets3D's frame_id rule)
        if config.depth_enabled:
            tolerance = config.depth_tolerance
            self._tolerance_ns = int(round(tolerance * 1e9))
            self._live = TargetLocator(tolerance, options=config.depth)  # tracked frames: the newest depth
            self._answers = TargetLocator(tolerance, buffer_size=PINNED_DEPTH_FRAMES, options=config.depth)
            self._recent = StampBuffer(8)
            self._pending: collections.deque[int] = collections.deque(maxlen=PINNED_DEPTH_FRAMES)
            self._pending_lock = threading.Lock()
            self._depth_kept = threading.Condition()
            self._targets_pub = publisher(Targets3D, "~/targets_3d")
            self._point_pub = publisher(PointStamped, "~/target_point")
            self._cloud_pub = publisher(PointCloud2, "~/target_cloud")
            self._markers_pub = publisher(MarkerArray, "~/markers")
            group = MutuallyExclusiveCallbackGroup()  # depth traffic never holds the colour images' group
            for msg_type, topic, callback in ((Image, "depth", self._on_depth),
                                              (CameraInfo, "depth_camera_info", self._on_camera_info)):
                self._subscriptions.append(node.create_subscription(
                    msg_type, topic, callback, copy.copy(image_qos), callback_group=group,
                    qos_overriding_options=overridable))
            self._answer_queue: queue.SimpleQueue = queue.SimpleQueue()
            self._answer_thread = threading.Thread(target=self._measure_answers, name="lisa-targets", daemon=True)
            self._answer_thread.start()
        self._runner: TrackingRunner | None = None
        self._stamps_warned = False  # the frozen-stamp warning is logged once per activation
        self._sources: dict[str, tuple[str, int]] = {}  # conversation -> (tracked request_id, its frame's stamp)
        if config.tracking_enabled:
            self._tracked_pub = publisher(TrackedTargets, "~/tracked")
            self._runner = TrackingRunner(self._on_tracked, config.tracking)

    # -- hooks called by lisa_node ----------------------------------------------------
    def pinning(self, decode):
        """The worker's decode, which first keeps aside the depth frames paired with the frame it takes."""
        if self._live is None:
            return decode

        @functools.wraps(decode)
        def pinned(frame):
            self._pin(stamp_ns(frame.header))
            return decode(frame)
        return pinned

    def on_image(self, msg) -> None:
        """A camera frame (Image or CompressedImage): handed to tracking undecoded; never blocks."""
        runner = self._runner
        if runner is not None and not self._closed:
            runner.put_frame(functools.partial(image_message_to_rgb, msg, max_pixels=self._max_image_pixels),
                             stamp_ns(msg.header), msg.header)

    def on_answer(self, answer: Answer) -> None:
        """After the result is published (worker thread): hand the answer over; returns at once."""
        if self._closed or not answer.status.answered or answer.frame is None:
            return
        output = answer.output
        masks, scores = (output.masks, output.scores) if output is not None else ([], [])
        request, stamp = answer.request, stamp_ns(answer.frame.header)
        if self._runner is not None:
            self._sources[request.conversation_id] = (request.request_id, stamp)
            self._runner.track(request.request_id, request.conversation_id, masks, scores, stamp,
                               image=answer.image)
        if self._live is not None and masks:
            self._answer_queue.put(answer)

    def diagnostics(self) -> dict[str, int]:
        values = {}
        if self._live is not None:
            values |= {"depth_frames_received": self._depth_received,
                       "depth_camera_infos_received": self._camera_infos_received}
        runner = self._runner
        if runner is not None:
            values |= {"tracking_frames_processed": runner.frames_processed,
                       "tracking_frames_dropped": runner.frames_dropped,
                       "tracked_answers": len(runner.tracked_conversations)}
        return values

    def close(self) -> None:
        """Stop the threads, then destroy the entities (nothing is published after this returns)."""
        self._closed = True
        if self._runner is not None:
            self._runner.close()
        if self._live is not None:
            self._answer_queue.put(None)
            self._answer_thread.join(5.0)
        for subscription in self._subscriptions:
            self._node.destroy_subscription(subscription)
        for created in self._publishers:
            self._node.destroy_publisher(created)
        self._subscriptions, self._publishers = [], []

    # -- depth ------------------------------------------------------------------------
    def _on_camera_info(self, msg: CameraInfo) -> None:
        roi = (msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height)
        for locator in (self._live, self._answers):
            locator.on_camera_info(k=msg.k, width=msg.width, height=msg.height, distortion_model=msg.distortion_model,
                                   d=msg.d, binning_x=msg.binning_x, binning_y=msg.binning_y, roi=roi)
        self._camera_info_frame_id = msg.header.frame_id
        self._camera_infos_received += 1

    def _on_depth(self, msg: Image) -> None:
        depth = depth_message(msg)
        self._depth_frame_id = depth.frame_id
        self._live.on_depth(depth)
        self._recent.put(depth.stamp_ns, depth)
        with self._pending_lock:
            wanted = any(abs(depth.stamp_ns - pinned) <= self._tolerance_ns for pinned in self._pending)
        if wanted:  # arrived after its colour frame was taken for inference
            self._answers.on_depth(depth)
            with self._depth_kept:
                self._depth_kept.notify_all()
        self._depth_received += 1

    def _depth_frame(self) -> str:
        """The depth camera's frame when no depth image is paired: the last depth image's, else camera info's."""
        return self._depth_frame_id or self._camera_info_frame_id

    def _pin(self, colour_stamp_ns: int) -> None:
        with self._pending_lock:
            self._pending.append(colour_stamp_ns)
        paired = self._recent.nearest(colour_stamp_ns, self._tolerance_ns)
        if paired is not None:
            self._answers.on_depth(paired[1])

    def _measure_answers(self) -> None:
        while (answer := self._answer_queue.get()) is not None:
            try:
                self._publish_answer_targets(answer)
            except Exception as error:  # noqa: BLE001 (one bad answer must not end the 3D outputs)
                self._logger.error(f"request {answer.request.request_id}: 3D targets failed: {error!r}")

    def _publish_answer_targets(self, answer: Answer) -> None:
        header, output, request = answer.frame.header, answer.output, answer.request
        want_cloud = self._cloud_pub.get_subscription_count() > 0
        measurement = self._answers.measure(output.masks, stamp_ns(header), keep_points=want_cloud)
        deadline = time.monotonic() + DEPTH_GRACE_S
        while measurement.awaits_depth and not self._closed and time.monotonic() < deadline:
            with self._depth_kept:
                self._depth_kept.wait(max(0.0, deadline - time.monotonic()))
            measurement = self._answers.measure(output.masks, stamp_ns(header), keep_points=want_cloud)
        measurement = self._explained(measurement, stamp_ns(header))
        targets = targets3d_msg(measurement, header, request.request_id, request.conversation_id, output.scores,
                                self._depth_frame())
        if self._closed:
            return
        self._targets_pub.publish(targets)
        point = point_stamped(targets)
        if point is not None:
            self._point_pub.publish(point)
        else:
            self._logger.warning(f"request {request.request_id}: no 3D point: {targets.status_message}",
                                 throttle_duration_sec=5.0)
        if want_cloud and point is not None:
            self._cloud_pub.publish(point_cloud(measurement.targets[targets.best_index].points, targets.header))
        self._markers_pub.publish(markers_msg(targets))

    def _explained(self, measurement: Measurement, colour_stamp_ns: int) -> Measurement:
        """NO_DEPTH / NO_CAMERA_INFO said in terms of the node's topics (the kept-aside buffer only holds pairs)."""
        statuses = {t.status for t in measurement.targets}
        if DepthStatus.NO_CAMERA_INFO in statuses:
            status = DepthStatus.NO_CAMERA_INFO
            text = (f"no camera info received on {self._node.resolve_topic_name('depth_camera_info')} (the depth "
                    "image's CameraInfo: check that topic's remapping); without it no depth frame can give a "
                    "point, so none was waited for")
        elif measurement.depth_stamp_ns is None and DepthStatus.NO_DEPTH in statuses:
            status = DepthStatus.NO_DEPTH
            newest = self._recent.newest_stamp()
            topic = self._node.resolve_topic_name("depth")
            detail = (f"no depth frame received on {topic}" if newest is None else
                      f"newest depth frame on {topic} is {abs(newest - colour_stamp_ns) / 1e6:.1f} ms from it")
            text = f"no depth frame within {self._tolerance_ns / 1e6:.1f} ms of the colour frame ({detail})"
        else:
            return measurement
        targets = [dataclasses.replace(t, message=text) if t.status == status else t for t in measurement.targets]
        return dataclasses.replace(measurement, targets=targets, message=f"{status.name}: {text}")

    # -- tracking ---------------------------------------------------------------------
    def _on_tracked(self, state: TrackedState) -> None:
        """On the tracking thread: one ~/tracked per tracker and frame, with the 3D targets when depth is on; built
        only while someone reads ~/tracked (full-resolution masks and a 3D step for every camera frame)."""
        if self._closed:
            return
        if state.finished_reason == "stamp_not_advancing" and not self._stamps_warned:
            self._stamps_warned = True
            stamp = f"{state.stamp_ns // 1_000_000_000}.{state.stamp_ns % 1_000_000_000:09d} s"
            self._logger.warning(
                f"tracking of request {state.request_id} ended: a new camera frame carries the stamp {stamp} of the "
                "frame its masks are on" + (" (zero: the camera driver leaves header.stamp unset)"
                                            if state.stamp_ns == 0 else "") + "; tracking needs frame stamps that "
                "advance, so every answer's tracking ends this way (~/tracked: finished_reason "
                "'stamp_not_advancing') until they do. Said once.")
        if self._tracked_pub.get_subscription_count() == 0:
            return
        request_id, source = self._sources.get(state.conversation_id, ("", 0))
        if request_id != state.request_id:
            source = state.stamp_ns - round(state.age_s * 1e9)
        targets_3d = None
        if self._live is not None:
            measurement = self._live.measure([t.mask for t in state.targets], state.stamp_ns)
            targets_3d = targets3d_msg(measurement, state.header, state.request_id, state.conversation_id,
                                       [t.confidence for t in state.targets], self._depth_frame())
        self._tracked_pub.publish(tracked_msg(state, state.header, source, targets_3d))

