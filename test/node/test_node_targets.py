"""lisa_node's 3D targets and tracking over real DDS (loopback), with the plumbing engine and LISA's own code.

The plumbing engine answers "a and b" with horizontal bands (top and bottom half), so the
expected 3D points follow analytically from synthetic depth planes and known intrinsics. The
tiny LISA checkpoint's masks are arbitrary: its 3D targets are checked against what any mask
on that scene must give.
"""
import time

import numpy as np
import pytest

from conftest import REPO, wait_for

pytestmark = pytest.mark.ros

WIDTH, HEIGHT, F, CX, CY = 160, 120, 500.0, 70.0, 50.0
DEPTH_FRAME = "camera_depth_optical_frame"


def camera_info(stamp, k=(F, 0.0, CX, 0.0, F, CY, 0.0, 0.0, 1.0)):
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo(width=WIDTH, height=HEIGHT, distortion_model="plumb_bob", d=[0.0] * 5, k=list(k))
    info.header.stamp.sec, info.header.stamp.nanosec = stamp
    info.header.frame_id = DEPTH_FRAME
    return info


def depth_msg(metres: np.ndarray, stamp):
    """16UC1 millimetres (REP 118), 0 = no return."""
    from sensor_msgs.msg import Image

    millimetres = np.round(np.nan_to_num(metres, nan=0.0) * 1000).astype("<u2")
    msg = Image(width=WIDTH, height=HEIGHT, encoding="16UC1", is_bigendian=0, step=2 * WIDTH,
                data=millimetres.tobytes())
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = DEPTH_FRAME
    return msg


def colour_msg(rgb: np.ndarray, stamp):
    from sensor_msgs.msg import Image

    msg = Image(width=rgb.shape[1], height=rgb.shape[0], encoding="rgb8", step=3 * rgb.shape[1],
                data=np.ascontiguousarray(rgb).tobytes())
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = "camera_color_optical_frame"
    return msg


def textured(height, width, seed=0):
    """Smooth random texture: corners and flow that Lucas-Kanade can follow."""
    import cv2

    noise = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    grey = cv2.GaussianBlur(noise, (0, 0), 1.5)
    grey = cv2.normalize(grey, None, 0, 255, cv2.NORM_MINMAX)
    return np.repeat(grey[..., None], 3, axis=2)


def surface_centroid(metres: np.ndarray, rows: range, cols: range = range(WIDTH)) -> np.ndarray:
    """The published point's definition: the mean 3D point of the valid pixels (rows x cols of the already eroded
    mask, all on one surface), each deprojected at its own depth (pinhole)."""
    vs, us = np.mgrid[rows.start:rows.stop, cols.start:cols.stop]
    z = metres[vs, us].astype(np.float64)
    valid = np.isfinite(z)
    vs, us, z = vs[valid], us[valid], z[valid]
    return np.array([np.mean((us - CX) / F * z), np.mean((vs - CY) / F * z), np.mean(z)])


class DepthIO:
    def __init__(self, io, probe):
        from geometry_msgs.msg import PointStamped
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from visualization_msgs.msg import MarkerArray

        from lisa_ros.msg import Targets3D, TrackedTargets

        node = io.node
        self.io = io
        self.targets = probe.collect(node.topic("~/targets_3d"), Targets3D)
        self.points = probe.collect(node.topic("~/target_point"), PointStamped)
        self.clouds = probe.collect(node.topic("~/target_cloud"), PointCloud2)
        self.markers = probe.collect(node.topic("~/markers"), MarkerArray)
        self.tracked = probe.collect(node.topic("~/tracked"), TrackedTargets)
        wait_for(lambda: probe.node.count_publishers(node.topic("~/target_cloud")) >= 1, 10, "cloud publisher")
        self.depth = probe.publisher(node.topic("depth"), Image)
        self.info = probe.publisher(node.topic("depth_camera_info"), CameraInfo)
        self.depth_sent = self.infos_sent = 0

    def _send(self, publisher, msg, key, sent, timeout=10.0):
        """Publish until the node counts it (a best-effort subscription), like NodeIO.publish_frame."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            publisher.publish(msg)
            retry_at = min(deadline, time.monotonic() + 1.0)
            while time.monotonic() < retry_at:
                received = int(self.io.diagnostics().get(key, 0))
                if received > sent:
                    return received
                time.sleep(0.01)
        pytest.fail(f"the node did not count {key} {sent + 1} within {timeout} s")

    def send_depth(self, metres, stamp):
        self.depth_sent = self._send(self.depth, depth_msg(metres, stamp), "depth_frames_received", self.depth_sent)

    def send_info(self, stamp=(0, 0), **fields):
        self.infos_sent = self._send(self.info, camera_info(stamp, **fields), "depth_camera_infos_received",
                                     self.infos_sent)

    def targets_for(self, request_id):
        return wait_for(lambda: next((t for t in list(self.targets) if t.request_id == request_id), None), 10,
                        f"~/targets_3d for request {request_id}")


def test_targets_3d_point_cloud_markers_and_tracked_3d_match_the_scene(lisa_io, ros_probe):
    from lisa_ros.msg import SegmentationResult, Target3D

    io = lisa_io(params={"depth.enabled": True, "depth.erosion_px": 0})
    depth_io = DepthIO(io, ros_probe)
    metres = np.full((HEIGHT, WIDTH), 2.0, np.float32)  # bottom half: a wall at 2 m
    metres[:HEIGHT // 2] = 1.0  # top half: a box face at 1 m
    holes = np.random.default_rng(1).random(metres.shape) < 0.3
    metres[holes] = np.nan  # 30 % no return: must not move the points
    depth_io.send_info()
    depth_io.send_depth(metres, (100, 10_000_000))  # 10 ms after the colour frame: within depth.tolerance
    rgb = textured(HEIGHT, WIDTH)
    io.publish_frame(colour_msg(rgb, (100, 0)))
    io.ask("the box and the wall")
    result, = io.results_for("the box and the wall")
    assert result.status == SegmentationResult.STATUS_OK, result.status_message

    targets = depth_io.targets_for(result.request_id)
    assert (targets.header.stamp.sec, targets.header.stamp.nanosec) == (100, 0)  # the result's stamp
    assert targets.header.frame_id == DEPTH_FRAME and targets.conversation_id == "default"
    assert (targets.depth_stamp.sec, targets.depth_stamp.nanosec) == (100, 10_000_000)
    assert targets.status_message == "" and len(targets.targets) == 2 and targets.best_index == 0
    for target, rows, z in zip(targets.targets, (range(0, 60), range(60, 120)), (1.0, 2.0)):
        assert target.status == Target3D.STATUS_OK, target.status_message
        centroid = np.array([target.centroid.x, target.centroid.y, target.centroid.z])
        np.testing.assert_allclose(centroid, surface_centroid(metres, rows), atol=1e-5)
        assert target.surfaces == 1 and target.surface_fraction == 1.0
        assert target.box_min.z == pytest.approx(z, abs=0.001) and target.box_max.z == pytest.approx(z, abs=0.001)
        assert target.box_min.x == pytest.approx((0 - CX) / F * z, abs=0.008)  # box faces within 8 mm
        assert target.box_max.x == pytest.approx((WIDTH - 1 - CX) / F * z, abs=0.008)
        assert target.distance == pytest.approx(np.linalg.norm(centroid), rel=1e-5)
        assert 0.6 * WIDTH * 60 < target.valid_pixels < 0.8 * WIDTH * 60 and target.mask_pixels == WIDTH * 60

    point = wait_for(lambda: depth_io.points and depth_io.points[-1], 5, "~/target_point")
    assert point.header == targets.header
    assert (point.point.x, point.point.y, point.point.z) == (targets.targets[0].centroid.x,
                                                             targets.targets[0].centroid.y,
                                                             targets.targets[0].centroid.z)
    cloud = wait_for(lambda: depth_io.clouds and depth_io.clouds[-1], 5, "~/target_cloud (subscribed)")
    xyz = np.frombuffer(bytes(cloud.data), "<f4").reshape(-1, 3)
    assert cloud.header.frame_id == DEPTH_FRAME and len(xyz) == targets.targets[0].valid_pixels
    np.testing.assert_allclose(xyz[:, 2], 1.0, atol=0.001)
    markers = wait_for(lambda: depth_io.markers and depth_io.markers[-1], 5, "~/markers").markers
    assert [m.type for m in markers[1:]] == [markers[1].CUBE, markers[1].SPHERE] * 2
    assert markers[2].pose.position == targets.targets[0].centroid

    # Tracking with depth: the next (static) frame's tracked masks get their own 3D targets.
    depth_io.send_depth(metres, (100, 100_000_000))
    io.publish_frame(colour_msg(rgb, (100, 100_000_000)))
    tracked = wait_for(lambda: next((t for t in list(depth_io.tracked)
                                     if t.header.stamp.nanosec == 100_000_000), None), 10, "~/tracked")
    assert tracked.request_id == result.request_id and tracked.age == pytest.approx(0.1)
    assert list(tracked.lost) == [False, False]
    assert tracked.targets_3d.request_id == result.request_id
    assert [t.status for t in tracked.targets_3d.targets] == [Target3D.STATUS_OK] * 2
    assert tracked.targets_3d.targets[1].centroid.z == pytest.approx(2.0, abs=0.001)


def test_each_status_is_said_with_no_point_and_the_depth_frame_as_frame_id(lisa_io, ros_probe):
    """NO_CAMERA_INFO / INVALID_CAMERA_INFO / NO_DEPTH / OK all carry the depth camera's frame once any depth
    input has arrived (it was the colour frame for the first three), the colour frame only before."""
    from lisa_ros.msg import Target3D

    io = lisa_io(params={"depth.enabled": True, "tracking.enabled": False})
    depth_io = DepthIO(io, ros_probe)
    metres = np.full((HEIGHT, WIDTH), 1.5, np.float32)
    rgb = textured(HEIGHT, WIDTH)

    def answer(stamp, text):
        io.publish_frame(colour_msg(rgb, stamp))
        io.ask(text)
        result, = io.results_for(text)
        return depth_io.targets_for(result.request_id)

    nothing_yet = answer((4, 0), "the plate")
    assert [t.status for t in nothing_yet.targets] == [Target3D.STATUS_NO_CAMERA_INFO]
    assert nothing_yet.header.frame_id == "camera_color_optical_frame"  # no depth input has named its frame yet

    depth_io.send_depth(metres, (5, 0))
    first = answer((5, 0), "the cup")
    assert [t.status for t in first.targets] == [Target3D.STATUS_NO_CAMERA_INFO]
    assert first.best_index == -1 and first.status_message == "NO_CAMERA_INFO: " + first.targets[0].status_message
    # Says which topic lacks it, and that the depth grace wait was skipped (no depth frame could help).
    assert f"no camera info received on {io.node.topic('depth_camera_info')}" in first.status_message
    assert "none was waited for" in first.status_message
    assert first.header.frame_id == DEPTH_FRAME

    depth_io.send_info(k=(F, 0.0, CX, 0.0, 0.0, CY, 0.0, 0.0, 1.0))  # fy = 0
    refused = answer((5, 0), "the bowl")
    assert [t.status for t in refused.targets] == [Target3D.STATUS_INVALID_CAMERA_INFO]
    assert f"K [{F}, 0.0, {CX}, 0.0, 0.0, {CY}, 0.0, 0.0, 1.0] is not a camera matrix" in refused.status_message
    assert refused.header.frame_id == DEPTH_FRAME

    depth_io.send_info()
    second = answer((6, 0), "the mug")  # the only depth frame is 1 s older
    assert [t.status for t in second.targets] == [Target3D.STATUS_NO_DEPTH]
    assert "no depth frame within 50.0 ms" in second.status_message and "1000.0 ms" in second.status_message
    assert second.header.frame_id == DEPTH_FRAME

    depth_io.send_depth(metres, (7, 0))
    third = answer((7, 0), "the glass")
    assert third.targets[0].status == Target3D.STATUS_OK and third.targets[0].centroid.z == pytest.approx(1.5)
    assert third.header.frame_id == DEPTH_FRAME
    point = wait_for(lambda: depth_io.points and depth_io.points[-1], 5, "~/target_point")
    assert [p.header.stamp.sec for p in depth_io.points] == [7]  # none for the answers without a point
    assert point.point.z == pytest.approx(1.5)


def test_a_mask_over_two_surfaces_gets_a_point_on_one_of_them_and_says_so(lisa_io, ros_probe):
    """The plumbing engine's one mask is the whole frame: over a box face at 1 m (top half) and a wall at 2 m
    (bottom half) the point is one half's centroid (never a depth between), and the split travels in the message."""
    from lisa_ros.msg import Target3D

    io = lisa_io(params={"depth.enabled": True, "tracking.enabled": False})
    depth_io = DepthIO(io, ros_probe)
    metres = np.full((HEIGHT, WIDTH), 2.0, np.float32)
    metres[:HEIGHT // 2] = 1.0
    metres[np.random.default_rng(4).random(metres.shape) < 0.3] = np.nan
    depth_io.send_info()
    depth_io.send_depth(metres, (9, 0))
    io.publish_frame(colour_msg(textured(HEIGHT, WIDTH), (9, 0)))
    io.ask("the box")
    result, = io.results_for("the box")
    targets = depth_io.targets_for(result.request_id)
    target, = targets.targets
    assert target.status == Target3D.STATUS_OK and targets.best_index == 0 and targets.status_message == ""
    assert target.surfaces == 2 and 0.45 < target.surface_fraction < 0.55
    assert "spans 2 surfaces" in target.status_message
    centroid = np.array([target.centroid.x, target.centroid.y, target.centroid.z])
    # The whole-frame mask eroded by 2 px (the image border counts as outside), then the chosen half's pixels.
    rows = range(2, HEIGHT // 2) if centroid[2] < 1.5 else range(HEIGHT // 2, HEIGHT - 2)
    np.testing.assert_allclose(centroid, surface_centroid(metres, rows, range(2, WIDTH - 2)), atol=1e-5)
    assert target.box_min.z == target.box_max.z == target.median_depth == centroid[2]
    point = wait_for(lambda: depth_io.points and depth_io.points[-1], 5, "~/target_point")
    assert point.point == target.centroid


def test_tracked_follows_a_moving_textured_band_and_reports_when_it_leaves(lisa_io, ros_probe):
    from lisa_ros.msg import SegmentationResult, TrackedTargets

    io = lisa_io()
    tracked = ros_probe.collect(io.node.topic("~/tracked"), TrackedTargets)
    wait_for(lambda: ros_probe.node.count_publishers(io.node.topic("~/tracked")) >= 1, 10, "~/tracked publisher")
    band = textured(40, WIDTH, seed=3)  # the plumbing engine's first of three bands: rows 0..39
    step = 8

    def frame(k):
        rgb = np.full((HEIGHT, WIDTH, 3), 100, np.uint8)  # flat: nothing to follow outside the band
        rgb[:40, step * k:] = band[:, :WIDTH - step * k]
        return colour_msg(rgb, (50, k * 100_000_000) if k < 10 else (51, (k - 10) * 100_000_000))

    def stamp(msg):
        return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec

    io.publish_frame(frame(0))
    io.ask("a and b and c")
    result, = io.results_for("a and b and c")
    assert result.status == SegmentationResult.STATUS_OK and len(result.masks) == 3
    k = 0
    while True:
        k += 1
        msg = frame(k)
        io.publish_frame(msg)
        state = wait_for(lambda msg=msg: next((t for t in list(tracked) if stamp(t) == stamp(msg)), None), 10,
                         f"~/tracked for frame {k}")
        assert state.request_id == result.request_id and state.header.frame_id == "camera_color_optical_frame"
        assert state.age == pytest.approx(0.1 * k, abs=1e-6)
        assert list(state.lost[1:]) == [True, True]  # the flat bands: nothing to follow
        assert list(state.lost_reasons[1:]) == ["too_few_features"] * 2
        if state.lost[0]:
            break
        box = state.boxes[0]
        assert abs(box.x_offset - step * k) <= 1 and abs(box.width - (WIDTH - step * k)) <= 1, (k, box)
        assert (box.y_offset, box.height) == (0, 40) and state.confidences[0] > 0.5
        assert (state.masks[0].width, state.masks[0].height) == (WIDTH, HEIGHT) and not state.finished
    assert state.lost_reasons[0] == "left_frame" and state.finished and state.finished_reason == "lost"
    assert WIDTH / 2 <= k * step <= WIDTH / 2 + step  # lost once half of it is outside, not before
    assert state.masks[0].width == 0 and state.confidences[0] == 0.0


def test_tracking_with_zero_stamps_ends_on_tracked_and_says_why_once_in_the_log(lisa_io, ros_probe):
    """A camera driver that leaves header.stamp zero: each answer's tracking ends on the next picture with a
    finished ~/tracked saying stamp_not_advancing, and the log says why once (it used to stop silently)."""
    from lisa_ros.msg import SegmentationResult, TrackedTargets

    io = lisa_io()
    tracked = ros_probe.collect(io.node.topic("~/tracked"), TrackedTargets)
    wait_for(lambda: ros_probe.node.count_publishers(io.node.topic("~/tracked")) >= 1, 10, "~/tracked publisher")
    for round_ in range(2):
        io.publish_frame(colour_msg(textured(HEIGHT, WIDTH, seed=2 * round_), (0, 0)))
        io.ask(f"a and b, round {round_}")
        result, = io.results_for(f"a and b, round {round_}")
        assert result.status == SegmentationResult.STATUS_OK and len(result.masks) == 2
        io.publish_frame(colour_msg(textured(HEIGHT, WIDTH, seed=2 * round_ + 1), (0, 0)))  # same stamp, new picture
        state = wait_for(lambda rid=result.request_id: next((t for t in list(tracked) if t.request_id == rid), None),
                         10, f"~/tracked for {result.request_id}")
        assert state.finished and state.finished_reason == "stamp_not_advancing"
        assert list(state.lost) == [True, True] and list(state.lost_reasons) == ["stamp_not_advancing"] * 2
    assert len([t for t in list(tracked)]) == 2
    log = wait_for(lambda: "stamp_not_advancing" in io.node.log and io.node.log, 5, "the log line")
    assert log.count("frame stamps that advance") == 1 and "camera driver leaves header.stamp unset" in log, log


def test_lisa_engine_answers_with_masks_get_targets_3d_inside_the_depth_scene(lisa_io, ros_probe,
                                                                              answering_tiny_lisa_checkpoint):
    """LISA's real [SEG] -> SAM path on the CPU (tiny checkpoint), depth on: each answer with masks gets a Targets3D
    with its request_id and stamp, one target per mask, each a point inside the two-plane scene or a reason."""
    from lisa_ros.msg import SegmentationResult, Target3D

    io = lisa_io(params_file=REPO / "config" / "lisa_cpu.yaml", start_timeout=180,
                 params={"model.path": str(answering_tiny_lisa_checkpoint), "depth.enabled": True,
                         "tracking.enabled": False})
    depth_io = DepthIO(io, ros_probe)
    metres = np.full((HEIGHT, WIDTH), 2.0, np.float32)  # bottom half: a wall at 2 m
    metres[:HEIGHT // 2] = 1.0  # top half: a box face at 1 m
    metres[np.random.default_rng(2).random(metres.shape) < 0.2] = np.nan
    depth_io.send_info()
    depth_io.send_depth(metres, (300, 0))
    io.publish_frame(colour_msg(textured(HEIGHT, WIDTH, seed=5), (300, 0)))
    results = []
    for text in ("Please segment the cup.", "where is the box?", "what could I drink from?"):
        io.ask(text)
        results += io.results_for(text, timeout=120)
    with_masks = [r for r in results if r.status == SegmentationResult.STATUS_OK and r.masks]
    assert with_masks, [(r.status, r.explanation) for r in results]  # the trained tiny model answers with [SEG]
    assert all(r.model_id == "lisa-tiny-7b" for r in results)
    points = 0
    for result in with_masks:
        targets = depth_io.targets_for(result.request_id)
        assert targets.header.stamp == result.header.stamp and targets.header.frame_id == DEPTH_FRAME
        assert (targets.depth_stamp.sec, targets.depth_stamp.nanosec) == (300, 0)
        assert len(targets.targets) == len(result.masks)
        for target, mask_msg in zip(targets.targets, result.masks, strict=True):
            mask = np.frombuffer(bytes(mask_msg.data), np.uint8).reshape(HEIGHT, WIDTH) > 0
            assert target.mask_pixels == np.count_nonzero(mask)
            if target.status != Target3D.STATUS_OK:  # e.g. a sliver of a mask: said, never a point
                assert target.status_message and target.centroid.z == 0.0, target
                continue
            centroid = np.array([target.centroid.x, target.centroid.y, target.centroid.z])
            assert np.isfinite(centroid).all() and 0 < target.valid_pixels <= target.mask_pixels
            # On one of the two planes, never between them; a mask over both says so.
            assert min(abs(centroid[2] - z) for z in (1.0, 2.0)) < 1e-6, centroid
            assert (target.surfaces > 1) == ("spans" in target.status_message) and 0.5 <= target.surface_fraction
            rays = centroid[:2] / centroid[2]  # inside the image's field of view
            assert (0 - CX) / F <= rays[0] <= (WIDTH - 1 - CX) / F and (0 - CY) / F <= rays[1] <= (HEIGHT - 1 - CY) / F
            for corner in (target.box_min, target.box_max):
                assert 1.0 - 1e-6 <= corner.z <= 2.0 + 1e-6
            rows = np.nonzero(mask.any(axis=1))[0]
            if rows.max() < HEIGHT // 2 or rows.min() >= HEIGHT // 2:  # a mask on one plane only: that plane's z
                assert centroid[2] == pytest.approx(1.0 if rows.max() < HEIGHT // 2 else 2.0)
        ok = [i for i, t in enumerate(targets.targets) if t.status == Target3D.STATUS_OK]
        assert targets.best_index == (max(ok, key=lambda i: result.scores[i]) if ok else -1)
        points += len(ok)
    assert points  # its masks cover thousands of pixels: at least one was measured
