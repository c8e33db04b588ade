"""3D targets from depth: synthetic scenes of known geometry, every bad input's status, stamp pairing.

Scene: a pinhole camera (640x480, f = 600 px) looks at a fronto-parallel rectangle (the front
face of a box) 1 m away, in front of a wall 3 m away. Its visible surface spans
x in [-0.10, 0.10] m, y in [-0.05, 0.15] m, so the analytic centroid is (0, 0.05, 1.0).

Tolerances (stated, derived from the pixel size, 1/600 m = 1.7 mm at 1 m):
- centroid: 2 mm on every axis (discretisation of the footprint);
- box: 8 mm on every face = erosion (2 px = 3.3 mm) + the 1% percentile trim of a 0.2 m
  extent (2 mm) + one pixel; and the box must lie inside the true face plus 2 mm (it may only shrink).
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from lisa_ros.core.depth import (
    CameraModel,
    DepthError,
    DepthMessage,
    DepthOptions,
    DepthStatus,
    StampBuffer,
    TargetLocator,
    best_target,
    decode_depth,
    masked_points,
    masks_on_depth_grid,
    measure_mask,
    measure_targets,
)

W, H, F = 640, 480, 600.0
CX, CY = (W - 1) / 2, (H - 1) / 2
FACE = (-0.10, 0.10, -0.05, 0.15, 1.0)  # x0, x1, y0, y1, z
WALL_Z = 3.0
CENTROID = np.array([0.0, 0.05, 1.0])
CENTROID_TOL, BOX_TOL = 0.002, 0.008


def camera(width=W, height=H, f=F, **kwargs) -> CameraModel:
    return CameraModel.from_camera_info(k=[f, 0, (width - 1) / 2, 0, f, (height - 1) / 2, 0, 0, 1],
                                        width=width, height=height, **kwargs)


def scene(width=W, height=H, f=F):
    """(depth metres float32, mask bool) of the face in front of the wall."""
    cx, cy = (width - 1) / 2, (height - 1) / 2
    x0, x1, y0, y1, z = FACE
    us, vs = np.meshgrid(np.arange(width), np.arange(height))
    rx, ry = (us - cx) / f, (vs - cy) / f
    mask = (rx * z >= x0) & (rx * z <= x1) & (ry * z >= y0) & (ry * z <= y1)
    depth = np.where(mask, z, WALL_Z).astype(np.float32)
    return depth, mask


def assert_matches_face(target, box_tol=BOX_TOL):
    assert target.ok, target.message
    np.testing.assert_allclose(target.centroid, CENTROID, atol=CENTROID_TOL)
    x0, x1, y0, y1, z = FACE
    np.testing.assert_allclose(target.box_min, [x0, y0, z], atol=box_tol)
    np.testing.assert_allclose(target.box_max, [x1, y1, z], atol=box_tol)
    assert np.all(target.box_min >= np.array([x0, y0, z]) - 0.002)
    assert np.all(target.box_max <= np.array([x1, y1, z]) + 0.002)
    assert target.distance == pytest.approx(float(np.linalg.norm(CENTROID)), abs=CENTROID_TOL)
    assert target.median_depth == pytest.approx(z, abs=1e-6)


def test_centroid_and_box_of_a_face_on_a_far_wall_match_the_analytic_values():
    depth, mask = scene()
    (target,) = measure_targets([mask], depth, camera())
    assert_matches_face(target)
    assert target.eroded and 0 < target.valid_pixels < target.mask_pixels == mask.sum()


def measured_centroid(mask, depth, f=F, erosion_px=2):
    """The published point's definition, written out here: the mean 3D point of the mask's valid pixels after an
    erosion by ``erosion_px`` in which the image border counts as outside (one surface: no split to make)."""
    size = 2 * erosion_px + 1
    padded = np.pad(mask.astype(np.uint8), erosion_px)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    inner = cv2.erode(padded, kernel)[erosion_px:-erosion_px or None, erosion_px:-erosion_px or None] > 0
    height, width = mask.shape
    vs, us = np.nonzero(inner & np.isfinite(depth) & (depth > 0))
    z = depth[vs, us].astype(np.float64)
    return np.array([np.mean((us - (width - 1) / 2) / f * z), np.mean((vs - (height - 1) / 2) / f * z), np.mean(z)])


def test_holes_nans_and_zeros_remove_their_pixels_from_the_centroid():
    depth, mask = scene()
    rng = np.random.default_rng(3)
    holes = mask & (rng.random(mask.shape) < 0.4)
    holed = depth.copy()
    holed[holes] = np.nan
    (random_holes,) = measure_targets([mask], holed, camera())
    assert_matches_face(random_holes)  # holes spread evenly leave the centroid where it was
    holed[80:400, 300:330] = np.nan  # a vertical stripe without returns, left of the face's centre
    (target,) = measure_targets([mask], holed, camera())
    # The centroid of what the camera measured: the stripe moves it right (by 1.7 px = 2.8 mm here).
    np.testing.assert_allclose(target.centroid, measured_centroid(mask, holed), atol=1e-5)
    assert target.centroid[0] > CENTROID[0] + 0.002 and target.surfaces == 1 and target.surface_fraction == 1.0
    (full,) = measure_targets([mask], depth, camera())
    assert target.valid_pixels < 0.65 * full.valid_pixels
    # The same holes as 16UC1 zeros, through the decoder.
    millimetres = np.where(np.isnan(holed), 0, np.rint(holed * 1000)).astype("<u2")
    decoded = decode_depth("16UC1", W, H, W * 2, False, millimetres.tobytes())
    (from_16bit,) = measure_targets([mask], decoded, camera())
    np.testing.assert_allclose(from_16bit.centroid, target.centroid, atol=1e-6)
    assert from_16bit.valid_pixels == target.valid_pixels


def test_mixed_edge_pixels_and_a_bleeding_mask_do_not_move_the_point():
    depth, mask = scene()
    mask_u8 = mask.astype(np.uint8)
    ring = mask & ~cv2.erode(mask_u8, np.ones((3, 3), np.uint8)).astype(bool)
    mixed = depth.copy()
    mixed[ring] = 2.0  # flying pixels: halfway between face and wall
    bleeding = cv2.dilate(mask_u8, np.ones((5, 5), np.uint8)).astype(bool)  # SAM bleeds 2 px onto the wall
    (target,) = measure_targets([bleeding], mixed, camera(), DepthOptions(erosion_px=3))
    assert_matches_face(target, box_tol=BOX_TOL + 0.002)  # 3 px erosion: 1.7 mm more than the default
    assert target.surfaces == 1 and target.message == ""
    # Without the erosion the wall pixels are another surface (the flying pixels too few to count as one):
    # the point and box stay on the face, and the split is reported.
    (raw,) = measure_targets([bleeding], mixed, camera(), DepthOptions(erosion_px=0))
    assert raw.ok and raw.surfaces == 2 and 0.8 < raw.surface_fraction < 0.95 and "spans 2 surfaces" in raw.message
    assert raw.box_min[2] == raw.box_max[2] == 1.0


def test_half_resolution_depth_with_the_same_aspect_gets_the_mask_resampled():
    depth, _ = scene(W // 2, H // 2, F / 2)
    _, mask = scene()
    (target,) = measure_targets([mask], depth, camera(W // 2, H // 2, F / 2))
    assert_matches_face(target, box_tol=2 * BOX_TOL)  # pixels are twice as large


def test_depth_of_another_aspect_ratio_is_refused_with_the_reason():
    depth, _ = scene(848, 480)
    _, mask = scene()
    (target,) = measure_targets([mask], depth, camera(848, 480))
    assert target.status == DepthStatus.DEPTH_SIZE_MISMATCH and "aspect" in target.message
    assert target.centroid is None


def test_camera_info_of_another_size_than_the_depth_is_refused():
    depth, mask = scene()
    (target,) = measure_targets([mask], depth, camera(1280, 960, 2 * F))
    assert target.status == DepthStatus.CAMERA_INFO_MISMATCH and "1280x960" in target.message
    assert target.centroid is None


def test_missing_inputs_and_empty_or_invalid_masks_get_statuses_never_points():
    depth, mask = scene()
    assert measure_targets([mask], depth, None)[0].status == DepthStatus.NO_CAMERA_INFO
    assert measure_targets([mask], None, camera())[0].status == DepthStatus.NO_DEPTH
    empty = measure_targets([np.zeros_like(mask)], depth, camera())[0]
    assert empty.status == DepthStatus.EMPTY_MASK
    invalid = depth.copy()
    invalid[mask] = np.nan
    all_invalid = measure_targets([mask], invalid, camera())[0]
    assert all_invalid.status == DepthStatus.NO_VALID_DEPTH and all_invalid.centroid is None
    assert str(int(mask.sum())) in all_invalid.message
    sparse = invalid.copy()
    sparse[np.nonzero(mask)[0][:5], np.nonzero(mask)[1][:5]] = 1.0
    few = measure_targets([mask], sparse, camera(), DepthOptions(min_valid_pixels=20))[0]
    assert few.status == DepthStatus.TOO_FEW_VALID_PIXELS and few.valid_pixels == 5 and few.centroid is None
    out_of_range = measure_targets([mask], depth, camera(), DepthOptions(max_depth_m=0.5))[0]
    assert out_of_range.status == DepthStatus.NO_VALID_DEPTH
    off_grid = measure_mask(mask[::2, ::2], depth, camera())
    assert off_grid.status == DepthStatus.DEPTH_SIZE_MISMATCH and off_grid.centroid is None


def test_a_thin_mask_falls_back_to_the_uneroded_pixels():
    depth = np.full((H, W), 1.5, np.float32)
    line = np.zeros((H, W), bool)
    line[240:242, 100:400] = True  # 2 px tall: a 2 px erosion leaves nothing
    target = measure_mask(line, depth, camera())
    assert target.ok and not target.eroded and target.valid_pixels == 600
    assert target.centroid[2] == pytest.approx(1.5)


def test_subsampling_large_masks_keeps_the_point():
    depth, mask = scene()
    (few,) = measure_targets([mask], depth, camera(), DepthOptions(max_points=500), keep_points=True)
    assert_matches_face(few, box_tol=BOX_TOL + 0.002)
    assert 250 <= len(few.points) <= 500 < few.valid_pixels  # the cloud is bounded too
    (sampled,) = measure_targets([mask], depth, camera(), DepthOptions(stat_points=300), keep_points=True)
    assert_matches_face(sampled, box_tol=BOX_TOL + 0.002)  # statistics from ~300 of the points
    assert len(sampled.points) == sampled.valid_pixels  # the cloud keeps them all


def test_masked_points_are_the_valid_pixels_deprojected():
    depth, mask = scene()
    points = masked_points(mask, depth, camera(), DepthOptions(erosion_px=0))
    assert points.dtype == np.float32 and points.shape == (mask.sum(), 3)
    np.testing.assert_allclose(points[:, 2], 1.0)
    x0, x1, y0, y1, _ = FACE
    assert points[:, 0].min() >= x0 - 1e-6 and points[:, 0].max() <= x1 + 1e-6
    assert points[:, 1].min() >= y0 - 1e-6 and points[:, 1].max() <= y1 + 1e-6
    assert masked_points(np.zeros_like(mask), depth, camera()).shape == (0, 3)


def test_distorted_camera_undistorts_pixels_exactly():
    d = [-0.28, 0.09, 0.001, -0.0005, 0.0]
    model = camera(distortion_model="plumb_bob", d=d)
    assert not model.is_pinhole
    depth = np.full((H, W), 2.0, np.float32)
    mask = np.zeros((H, W), bool)
    mask[20:60, 30:90] = True  # near the corner, where distortion is strongest
    points = masked_points(mask, depth, model, DepthOptions(erosion_px=0))
    vs, us = np.nonzero(mask)
    k = np.array([[F, 0, CX], [0, F, CY], [0, 0, 1]])
    projected, _ = cv2.projectPoints(points.astype(np.float64), np.zeros(3), np.zeros(3), k, np.array(d))
    np.testing.assert_allclose(projected.reshape(-1, 2), np.stack([us, vs], 1), atol=0.01)
    pinhole = masked_points(mask, depth, camera(), DepthOptions(erosion_px=0))
    assert np.abs(pinhole - points).max() > 0.02  # ignoring D would have been centimetres off
    (full,) = measure_targets([mask], depth, model, DepthOptions(erosion_px=0))
    np.testing.assert_allclose(full.centroid, points.mean(axis=0), atol=1e-4)  # constant depth: the mean point
    (on_grid,) = measure_targets([mask], depth, model, DepthOptions(erosion_px=0, max_points=100))
    # Every 2nd pixel: the centre moves by at most half a grid cell (1 px here = 3.3 mm at 2 m, x1.5 in this corner).
    np.testing.assert_allclose(on_grid.centroid, full.centroid, atol=0.003)
    assert on_grid.mask_pixels == full.mask_pixels == mask.sum()


def test_equidistant_distortion_round_trips_through_opencv_fisheye():
    d = [0.05, -0.01, 0.002, -0.0003]
    model = camera(distortion_model="equidistant", d=d)
    depth = np.full((H, W), 1.2, np.float32)
    mask = np.zeros((H, W), bool)
    mask[400:470, 560:630] = True
    points = masked_points(mask, depth, model, DepthOptions(erosion_px=0))
    k = np.array([[F, 0, CX], [0, F, CY], [0, 0, 1]])
    projected, _ = cv2.fisheye.projectPoints(points.astype(np.float64).reshape(-1, 1, 3), np.zeros(3),
                                             np.zeros(3), k, np.array(d))
    vs, us = np.nonzero(mask)
    np.testing.assert_allclose(projected.reshape(-1, 2), np.stack([us, vs], 1), atol=0.01)


@pytest.mark.parametrize("fields,reason", [
    (dict(k=[0] * 9), "not a camera matrix"),
    (dict(k=[600, 0, 320, 0, 600, 240, 0, 0, 1, 0]), "9 finite"),
    (dict(k=[600, 0, 320, 0, math.nan, 240, 0, 0, 1]), "9 finite"),
    (dict(width=0), "uncalibrated"),
    (dict(binning_x=2), "binning"),
    (dict(roi=(10, 10, 100, 100)), "roi"),
    (dict(distortion_model="kannala_brandt", d=[0.1, 0, 0, 0]), "not supported"),
    (dict(distortion_model="plumb_bob", d=[0.1, 0.0]), "needs 5"),
])
def test_unusable_camera_info_is_refused_with_the_reason(fields, reason):
    base = dict(k=[600, 0, 320, 0, 600, 240, 0, 0, 1], width=W, height=H)
    with pytest.raises(DepthError, match=reason) as error:
        CameraModel.from_camera_info(**{**base, **fields})
    assert error.value.status == DepthStatus.INVALID_CAMERA_INFO


def test_zero_distortion_of_any_model_is_pinhole():
    assert camera(distortion_model="plumb_bob", d=[0.0] * 5).is_pinhole
    assert camera(distortion_model="some_vendor_model", d=[0.0] * 3).is_pinhole


def test_decode_depth_follows_rep_118():
    millimetres = np.array([[0, 1000, 65535], [1, 2500, 0]], dtype=">u2")
    padded = np.zeros((2, 8), np.uint8)
    padded[:, :6] = millimetres.view(np.uint8).reshape(2, 6)
    metres = decode_depth("16UC1", 3, 2, 8, True, padded.tobytes())
    np.testing.assert_allclose(metres, [[np.nan, 1.0, 65.535], [0.001, 2.5, np.nan]], rtol=1e-6)
    floats = np.array([[1.5, np.nan, np.inf], [-np.inf, 0.0, -1.0]], "<f4")
    metres = decode_depth("32FC1", 3, 2, 12, False, floats.tobytes())
    assert metres[0, 0] == 1.5 and np.isnan(metres.ravel()[1:]).all()


@pytest.mark.parametrize("args,reason", [
    (("rgb8", 2, 2, 6, False, bytes(12)), "REP 118"),
    (("16UC1", 2, 2, 3, False, bytes(6)), "step"),
    (("16UC1", 2, 2, 4, False, bytes(7)), "truncated"),
    (("32FC1", 0, 2, 0, False, b""), "size"),
])
def test_bad_depth_images_are_refused_with_the_reason(args, reason):
    with pytest.raises(DepthError, match=reason) as error:
        decode_depth(*args)
    assert error.value.status == DepthStatus.INVALID_DEPTH


def test_oversized_depth_is_refused_before_allocating():
    with pytest.raises(DepthError, match="over 100 pixels"):
        decode_depth("16UC1", 100, 100, 200, False, bytes(10), max_pixels=100)


def test_options_are_validated():
    with pytest.raises(ValueError, match="erosion_px.*box_percentile"):
        DepthOptions(erosion_px=-1, box_percentile=60)


def test_masks_of_another_size_are_resampled_onto_the_depth_grid():
    mask = np.zeros((480, 640), bool)
    mask[100:200, 300:400] = True
    (small,) = masks_on_depth_grid([mask], (240, 320))
    assert small.dtype == np.uint8 and small.sum() == 50 * 50 and small[50:100, 150:200].all()


def test_a_lost_mask_keeps_the_targets_aligned():
    depth, mask = scene()
    lost, found = measure_targets([None, mask], depth, camera())
    assert lost.status == DepthStatus.EMPTY_MASK and "lost" in lost.message
    assert_matches_face(found)


def test_best_target_is_the_highest_scoring_measured_one():
    depth, mask = scene()
    targets = measure_targets([mask, np.zeros_like(mask), mask], depth, camera())
    assert best_target(targets, [0.5, 0.99, 0.7]) == 2
    assert best_target(targets[1:2], [0.9]) is None


def test_stamp_buffer_pairs_the_nearest_within_tolerance():
    buffer = StampBuffer(capacity=3)
    assert buffer.nearest(100, 10**9) is None
    for stamp in (100, 300, 200, 400):  # out of order; capacity drops the oldest arrival (100)
        buffer.put(stamp, f"d{stamp}")
    assert buffer.nearest(100, 50) is None
    assert buffer.nearest(240, 50) == (200, "d200")
    assert buffer.nearest(390, 5) is None and buffer.nearest(390, 10) == (400, "d400")
    assert buffer.newest_stamp() == 400


def test_stamp_buffer_keeps_new_items_after_the_clock_jumps_back():
    buffer = StampBuffer(capacity=2)
    buffer.put(5_000, "late")
    buffer.put(6_000, "later")
    buffer.put(10, "after the bag looped")  # an older stamp, but the newest arrival
    assert buffer.nearest(12, 5) == (10, "after the bag looped") and buffer.newest_stamp() == 10
    buffer.put(10, "same stamp again")
    assert buffer.nearest(10, 0) == (10, "same stamp again")  # ties: the newest arrival


def depth_message(depth_m: np.ndarray, stamp_ns: int, frame_id="camera_depth_optical_frame") -> DepthMessage:
    millimetres = np.rint(np.nan_to_num(depth_m, nan=0.0) * 1000).astype("<u2")
    return DepthMessage(stamp_ns, frame_id, "16UC1", depth_m.shape[1], depth_m.shape[0], depth_m.shape[1] * 2,
                        False, millimetres.tobytes())


def test_locator_pairs_by_stamp_and_says_why_when_it_cannot():
    depth, mask = scene()
    locator = TargetLocator(tolerance_s=0.02)
    locator.on_depth(depth_message(depth, 1_000_000_000))
    result = locator.measure([mask], 1_000_000_000)
    assert result.targets[0].status == DepthStatus.NO_CAMERA_INFO and "camera info" in result.message
    assert not result.awaits_depth  # a depth frame is here and useless: the node must not wait for another
    locator.clear()
    locator.on_camera_info(k=[F, 0, CX, 0, F, CY, 0, 0, 1], width=W, height=H, distortion_model="plumb_bob",
                           d=[0.0] * 5)
    result = locator.measure([mask], 1_000_000_000)
    assert result.targets[0].status == DepthStatus.NO_DEPTH and "no depth frame received yet" in result.message
    assert result.awaits_depth  # only the depth frame is missing: worth the node's short wait
    locator.on_depth(depth_message(depth, 1_050_000_000))
    result = locator.measure([mask], 1_000_000_000)
    assert result.targets[0].status == DepthStatus.NO_DEPTH and "50.0 ms" in result.message
    locator.on_depth(depth_message(depth, 1_010_000_000))
    result = locator.measure([mask, mask], 1_000_000_000, keep_points=True)
    assert not result.awaits_depth
    assert result.frame_id == "camera_depth_optical_frame" and result.depth_stamp_ns == 1_010_000_000
    assert result.message == "" and result.targets[1].points.shape == (result.targets[1].valid_pixels, 3)
    assert_matches_face(result.targets[0])


def test_locator_reports_bad_camera_info_and_bad_depth_and_recovers():
    depth, mask = scene()
    locator = TargetLocator(tolerance_s=0.02)
    locator.on_camera_info(k=[F, 0, CX, 0, 0, CY, 0, 0, 1], width=W, height=H)
    locator.on_depth(depth_message(depth, 5))
    result = locator.measure([mask], 5)
    assert result.targets[0].status == DepthStatus.INVALID_CAMERA_INFO and "camera matrix" in result.message
    assert not result.awaits_depth
    locator.on_camera_info(k=[F, 0, CX, 0, F, CY, 0, 0, 1], width=W, height=H)
    assert locator.measure([mask], 5).targets[0].ok
    broken = DepthMessage(6, "f", "16UC1", W, H, W * 2, False, bytes(10))
    locator.on_depth(broken)
    result = locator.measure([mask], 6)
    assert result.targets[0].status == DepthStatus.INVALID_DEPTH and "truncated" in result.message
    assert result.frame_id == "f"


def two_surfaces(near_fraction: float):
    """A 200x100 px mask whose left ``near_fraction`` of columns lies on a face at 0.5 m, the rest on a wall at
    2.0 m (a cup and the wall behind it): (depth, mask, near pixels, far pixels)."""
    depth = np.full((H, W), 2.0, np.float32)
    mask = np.zeros((H, W), bool)
    mask[190:290, 220:420] = True
    split = 220 + round(200 * near_fraction)
    depth[:, :split] = 0.5
    near = mask.copy()
    near[:, split:] = False
    return depth, mask, near, mask & ~near


@pytest.mark.parametrize("near_fraction", [0.3, 0.4, 0.46, 0.48, 0.5, 0.52, 0.54, 0.6, 0.7])
def test_a_mask_over_two_surfaces_gives_a_point_on_one_of_them_never_between(near_fraction):
    """A 2% change of the split near 50/50 may change the surface, never put the point between the two."""
    depth, mask, near, far = two_surfaces(near_fraction)
    (target,) = measure_targets([mask], depth, camera())
    assert target.ok and target.surfaces == 2 and "spans 2 surfaces" in target.message
    z = 0.5 if target.centroid[2] < 1.0 else 2.0
    assert target.centroid[2] == pytest.approx(z, abs=1e-6) and target.box_min[2] == target.box_max[2] == z
    assert target.median_depth == pytest.approx(z)
    chosen = near if z == 0.5 else far
    # The chosen surface's own centroid, and its share of the valid pixels (the eroded mask's: 196 x 96 px).
    np.testing.assert_allclose(target.centroid, measured_centroid(chosen & mask, np.where(chosen, depth, np.nan)),
                               atol=0.004)  # the split column is eroded too in the reference: 2 px at most
    u, v = target.centroid[0] / z * F + CX, target.centroid[1] / z * F + CY
    assert chosen[round(v), round(u)]  # the point's ray hits the surface it is on, not the other
    near_share = max(0.0, min(1.0, (200 * near_fraction - 2) / 196))
    assert target.surface_fraction == pytest.approx(near_share if z == 0.5 else 1 - near_share, abs=0.01)
    assert target.surface_fraction >= 0.5  # the surface with the most pixels
    if abs(near_fraction - 0.5) >= 0.04:
        assert z == (0.5 if near_fraction > 0.5 else 2.0)
    (cloud,) = measure_targets([mask], depth, camera(), keep_points=True)
    np.testing.assert_array_equal(cloud.points[:, 2], z)  # the cloud is the chosen surface's too


def test_one_tilted_surface_is_one_surface_and_its_centroid_is_the_mean_of_its_points():
    """A floor-like plane from 0.5 m (bottom row) to 2.0 m (top row): the mean ray at the median depth was tens of
    millimetres off the mean of the points; the centroid is now that mean, and it is one surface."""
    rows = np.arange(H, dtype=np.float64)[:, None] / (H - 1)
    depth = np.repeat((1 / (1 / 2.0 + (1 / 0.5 - 1 / 2.0) * rows)).astype(np.float32), W, axis=1)
    mask = np.zeros((H, W), bool)
    mask[20:460, 100:540] = True
    (target,) = measure_targets([mask], depth, camera())
    assert target.ok and target.surfaces == 1 and target.surface_fraction == 1.0 and target.message == ""
    np.testing.assert_allclose(target.centroid, measured_centroid(mask, depth), atol=1e-4)


def test_a_mask_cut_by_the_image_border_is_eroded_there_too():
    """A band along the top border: eroded on both sides, its centroid is the band's centre row (was 1 px low)."""
    depth = np.full((H, W), 0.8, np.float32)
    band = np.zeros((H, W), bool)
    band[:40, 100:540] = True
    (target,) = measure_targets([band], depth, camera())
    assert target.eroded
    np.testing.assert_allclose(target.centroid, [0.0, (19.5 - CY) / F * 0.8, 0.8], atol=1e-4)


INVALID_PATTERNS = {
    "nan every second column": lambda d: d.__setitem__((slice(None), slice(0, None, 2)), np.nan),
    "nan every second column, odd": lambda d: d.__setitem__((slice(None), slice(1, None, 2)), np.nan),
    "nan every second row": lambda d: d.__setitem__((slice(0, None, 2), slice(None)), np.nan),
    "checkerboard": lambda d: d.__setitem__((np.indices(d.shape).sum(0) % 2) == 0, np.nan),
    "checkerboard, odd": lambda d: d.__setitem__((np.indices(d.shape).sum(0) % 2) == 1, np.nan),
    "only odd rows and columns": lambda d: d.__setitem__((np.indices(d.shape) % 2 == 0).any(0), np.nan),
}


@pytest.mark.parametrize("options", [DepthOptions(), DepthOptions(max_points=500, stat_points=500)],
                         ids=["default", "grid of 2"])
@pytest.mark.parametrize("pattern", INVALID_PATTERNS)
def test_regular_patterns_of_invalid_depth_still_give_the_point(pattern, options):
    """Some stereo cameras leave every other column or a checkerboard without depth: the sub-sampling (every k-th
    pixel, or every 2nd on the grid of a large mask) must not see only the invalid half (np.percentile raised
    IndexError on an empty sample)."""
    depth = np.full((H, W), 1.0, np.float32)
    INVALID_PATTERNS[pattern](depth)
    for rows, cols in ((slice(90, 390), slice(170, 470)), (slice(91, 390), slice(171, 470)),
                       (slice(0, H), slice(0, W))):
        mask = np.zeros((H, W), bool)
        mask[rows, cols] = True
        (target,) = measure_targets([mask], depth, camera(), options)
        assert target.ok, (pattern, rows, target.message)
        assert target.centroid[2] == pytest.approx(1.0) and target.surfaces == 1
        assert np.isfinite(target.centroid).all() and abs(target.centroid[0]) < 0.01


@pytest.mark.parametrize("value", [np.nan, 0.0, np.inf, -np.inf, -1.0])
@pytest.mark.parametrize("options", [DepthOptions(), DepthOptions(max_points=500, stat_points=500)],
                         ids=["default", "grid of 2"])
def test_depth_that_is_invalid_everywhere_gets_a_status_never_an_exception(value, options):
    depth = np.full((H, W), value, np.float32)
    whole = np.ones((H, W), bool)
    for mask in (whole, whole[:, :] & (np.indices((H, W))[0] < 30)):
        (target,) = measure_targets([mask], depth, camera(), options)
        assert target.status == DepthStatus.NO_VALID_DEPTH and target.centroid is None
    locator = TargetLocator(tolerance_s=0.0)
    locator.on_camera_info(k=[F, 0, CX, 0, F, CY, 0, 0, 1], width=W, height=H)
    locator.on_depth(DepthMessage(7, "d", "32FC1", W, H, W * 4, False, depth.astype("<f4").tobytes()))
    assert locator.measure([whole], 7).targets[0].status == DepthStatus.NO_VALID_DEPTH


def test_scattered_depths_with_no_surface_are_said():
    """Depths spread evenly from 0.3 m to 30 m (noise, not a surface): no point, and the reason."""
    rng = np.random.default_rng(5)
    depth = np.exp(rng.uniform(np.log(0.3), np.log(30.0), (H, W))).astype(np.float32)
    mask = np.zeros((H, W), bool)
    mask[100:300, 100:300] = True
    (target,) = measure_targets([mask], depth, camera(), DepthOptions(dense_fraction=0.02))
    assert target.status == DepthStatus.TOO_FEW_VALID_PIXELS and "scattered" in target.message
    assert target.centroid is None and target.valid_pixels > 30_000


def test_camera_info_refusals_print_plain_numbers():
    with pytest.raises(DepthError) as error:
        CameraModel.from_camera_info(k=[600, 0, 320, 0, 0, 240, 0, 0, 1], width=W, height=H)
    assert "K [600.0, 0.0, 320.0, 0.0, 0.0, 240.0, 0.0, 0.0, 1.0] is not" in str(error.value)
    with pytest.raises(DepthError) as error:
        CameraModel.from_camera_info(k=[600, 0, 320, 0, math.nan, 240, 0, 0], width=W, height=H)
    assert "np." not in str(error.value) and "[600.0, 0.0, 320.0, 0.0, nan, 240.0, 0.0, 0.0]" in str(error.value)
