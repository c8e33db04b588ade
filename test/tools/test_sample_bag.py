"""The shipped sample bag is what `lisa-ros make-sample-bag` writes, and is usable as promised."""
import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from lisa_ros.core.depth import DepthMessage, TargetLocator
from lisa_ros.core.image import image_message_to_rgb
from lisa_ros.tools import bag_io
from lisa_ros.tools.cli import main
from lisa_ros.tools.make_sample_bag import (
    CAMERA_INFO_TOPIC,
    CATEGORIES,
    DEPTH_TOPIC,
    FRAMES,
    GROUND_TRUTH_TOPIC,
    IMAGE_TOPIC,
    INSTRUCTION_TOPIC,
    POSITION_TOPIC,
)
from lisa_ros.tools.semantic_replay import read_categories

SHIPPED = Path(__file__).resolve().parents[2] / "data" / "sample_bag"
SHIPPED_LABELS = SHIPPED.parent / "sample_labels"


def messages(path):
    with bag_io.InputBag(path) as bag:
        return {topic: [(t, bytes(bag_io.typestore().serialize_cdr(m, kind))) for t, m in bag.messages(topic)]
                for topic, kind in bag.topics.items()}


def test_shipped_bag_is_reproducible(tmp_path):
    assert main(["make-sample-bag", "--output", str(tmp_path / "bag"), "--reasonseg", str(tmp_path / "rs"),
                 "--labels", str(tmp_path / "labels")]) == 0
    assert messages(tmp_path / "bag") == messages(SHIPPED)
    shipped_json = sorted((SHIPPED.parent / "sample_reasonseg").glob("*.json"))
    assert [p.read_text() for p in shipped_json] == [(tmp_path / "rs" / p.name).read_text() for p in shipped_json]
    shipped_labels = sorted(p.name for p in SHIPPED_LABELS.iterdir())
    assert shipped_labels == sorted(p.name for p in (tmp_path / "labels").iterdir())
    for name in shipped_labels:
        if name.endswith(".png"):  # pixels, not bytes: another zlib may compress the same image differently
            assert np.array_equal(read_label(SHIPPED_LABELS / name), read_label(tmp_path / "labels" / name)), name
        else:
            assert (SHIPPED_LABELS / name).read_text() == (tmp_path / "labels" / name).read_text()


def read_label(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_sample_bag_content():
    assert sum(f.stat().st_size for f in SHIPPED.iterdir()) < 3_000_000
    with bag_io.InputBag(SHIPPED) as bag:
        frames = [(bag_io.stamp_ns(m.header), image_message_to_rgb(m).shape) for _, m in bag.messages(IMAGE_TOPIC)]
        truth = {bag_io.stamp_ns(m.header): bag_io.mask_to_array(m) for _, m in bag.messages(GROUND_TRUTH_TOPIC)}
        instructions = [m.data for _, m in bag.messages(INSTRUCTION_TOPIC)]
    assert len(frames) == 12 and {shape for _, shape in frames} == {(480, 640, 3)}
    assert len(instructions) == 10 and "segment what I could drink from" in instructions
    assert set(truth) == {stamp for stamp, _ in frames}  # every frame has its mask, matched by header
    assert all(mask.shape == (480, 640) for mask in truth.values())
    assert sum(not mask.any() for mask in truth.values()) == 1  # "keep me dry in the rain": nothing to find


def test_sample_labels_match_the_bag():
    """One label image per frame, named by its stamp; each frame's target agrees with its mask in the bag."""
    with bag_io.InputBag(SHIPPED) as bag:
        truth = {bag_io.stamp_ns(m.header): bag_io.mask_to_array(m) > 0 for _, m in bag.messages(GROUND_TRUTH_TOPIC)}
    args = argparse.Namespace(semantic=None, semantic_file=str(SHIPPED_LABELS / "categories.txt"))
    assert read_categories(args) == CATEGORIES == ["cup", "ball", "book", "table"]
    labels = {int(p.stem): read_label(p) for p in SHIPPED_LABELS.glob("*.png")}
    assert sorted(labels) == sorted(truth)
    assert {(image.dtype, image.shape) for image in labels.values()} == {(np.dtype("uint8"), (480, 640))}
    ids = {"cup": 1, "mug": 1, "ball": 2, "book": 3}
    for stamp, (scene, _, target) in zip(sorted(labels), FRAMES):
        image, mask = labels[stamp], truth[stamp]
        if scene == "coffee":  # hand annotation: only the cup's sure inside is labelled, the rest of the photo ignored
            assert set(np.unique(image).tolist()) == {0, 1, 255}
            cup = image == 1
            assert not (cup & ~mask).any() and cup.sum() > 0.8 * mask.sum()
        else:  # drawn from polygons: every pixel has its exact class
            assert set(np.unique(image).tolist()) == {1, 2, 3, 4}
            if target is not None:  # labelled target pixels lie in the mask; a later-drawn object may cover some
                target_pixels = image == ids[target]
                assert not (target_pixels & ~mask).any() and target_pixels.sum() > 0.8 * mask.sum()


def test_sample_depth_is_aligned_and_agrees_with_the_ground_truth_positions():
    """Depth and camera info per colour frame (same header); each target's position is the published point's
    definition applied to its ground-truth mask (the mean 3D point of its pixels eroded by 2 px, all on one
    surface: checked here from the bag alone), so the node's locator, given that perfect mask, scores ~0 error."""
    with bag_io.InputBag(SHIPPED) as bag:
        headers = [m.header for _, m in bag.messages(IMAGE_TOPIC)]
        depths = [m for _, m in bag.messages(DEPTH_TOPIC)]
        infos = [m for _, m in bag.messages(CAMERA_INFO_TOPIC)]
        truth = {bag_io.stamp_ns(m.header): bag_io.mask_to_array(m) for _, m in bag.messages(GROUND_TRUTH_TOPIC)}
        positions = {bag_io.stamp_ns(m.header): m for _, m in bag.messages(POSITION_TOPIC)}
    stamps = [bag_io.stamp_ns(h) for h in headers]
    for messages in (depths, infos):
        assert [(bag_io.stamp_ns(m.header), m.header.frame_id) for m in messages] == [
            (bag_io.stamp_ns(h), h.frame_id) for h in headers]
    assert sorted(positions) == [s for s in stamps if truth[s].any()]  # every target, none for "keep me dry"
    reasonseg = {int(p.stem): json.loads(p.read_text()) for p in (SHIPPED.parent / "sample_reasonseg").glob("*.json")}
    for stamp, depth, info in zip(stamps, depths, infos, strict=True):
        assert (depth.encoding, depth.width, depth.height, depth.step) == ("16UC1", 640, 480, 1280)
        assert (info.width, info.height, info.distortion_model, list(info.d)) == (640, 480, "plumb_bob", [0.0] * 5)
        if stamp not in positions:
            continue
        metres = np.frombuffer(bytes(depth.data), "<u2").reshape(480, 640) * 0.001
        mask = truth[stamp]
        fx, _, cx, _, fy, cy = info.k[:6]
        assert metres[mask > 0].min() > 0  # no hole on a target
        inner = cv2.erode(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)),
                          borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
        vs, us = np.nonzero(inner)
        z = metres[vs, us]
        mean = np.array([np.mean((us - cx) / fx * z), np.mean((vs - cy) / fy * z), np.mean(z)])
        message = positions[stamp]
        assert message.header.frame_id == depth.header.frame_id
        position = np.array([message.point.x, message.point.y, message.point.z])
        np.testing.assert_allclose(mean, position, atol=0.0003)  # millimetre depth, 0.1 mm rounding
        ring = cv2.dilate(mask.astype(np.uint8), np.ones((21, 21), np.uint8)).astype(bool) & ~mask & (metres > 0)
        assert np.median(metres[ring]) > np.median(z) + 0.05  # the object stands in front of its background
        locator = TargetLocator(tolerance_s=0.0)
        locator.on_camera_info(k=info.k, width=info.width, height=info.height, d=info.d)
        locator.on_depth(DepthMessage(stamp, depth.header.frame_id, depth.encoding, depth.width, depth.height,
                                      depth.step, False, bytes(depth.data)))
        target = locator.measure([mask], stamp).targets[0]
        assert target.ok and target.surfaces == 1 and target.surface_fraction == 1.0
        assert np.linalg.norm(target.centroid - position) < 0.0003  # one definition: the perfect mask's error ~0
        if stamp in reasonseg:
            assert reasonseg[stamp]["position_m"] == [message.point.x, message.point.y, message.point.z]
            assert reasonseg[stamp]["position_frame_id"] == message.header.frame_id


def test_perfect_masks_score_no_3d_error_in_eval(tmp_path):
    """Eval's 3D error on the sample bag for a replay whose masks are the ground truth and whose points are what
    the node's locator makes of them: ~0 (the ground truth uses the published point's one definition)."""
    from lisa_ros.tools.results_folder import ResultsFolder

    with bag_io.InputBag(SHIPPED) as bag:
        frames = [(bag_io.stamp_ns(m.header), image_message_to_rgb(m)) for _, m in bag.messages(IMAGE_TOPIC)]
        depths = {bag_io.stamp_ns(m.header): m for _, m in bag.messages(DEPTH_TOPIC)}
        info = next(m for _, m in bag.messages(CAMERA_INFO_TOPIC))
        truth = {bag_io.stamp_ns(m.header): bag_io.mask_to_array(m) > 0 for _, m in bag.messages(GROUND_TRUTH_TOPIC)}
    locator = TargetLocator(tolerance_s=0.0)
    locator.on_camera_info(k=info.k, width=info.width, height=info.height, d=info.d)
    folder = ResultsFolder(tmp_path / "run")
    for request, (stamp, image) in enumerate(frames):
        mask, depth = truth[stamp], depths[stamp]
        record = {"request": request, "instruction": "find it", "frame_index": request, "frame_name": str(stamp),
                  "frame_id": depth.header.frame_id, "image_size": list(mask.shape),
                  "frame": folder.save_frame(request, stamp, image), "status": "OK" if mask.any() else "NOT_FOUND"}
        names, overlay = folder.save_answer(request, image, [mask] if mask.any() else [])
        record.update(masks=names, overlay=overlay, total_ms=1.0, round_trip_ms=1.0, model_id="perfect")
        if mask.any():
            locator.on_depth(DepthMessage(stamp, depth.header.frame_id, depth.encoding, depth.width, depth.height,
                                          depth.step, False, bytes(depth.data)))
            measured = locator.measure([mask], stamp)
            record["targets_3d"] = {"frame_id": measured.frame_id, "depth_stamp_ns": stamp, "status_message": "",
                                    "best_index": 0, "targets": [{"status": "OK",
                                                                  "centroid": measured.targets[0].centroid.tolist()}]}
        folder.append(record)
    folder.close()
    assert main(["eval", str(tmp_path / "run"), "--gt-bag", str(SHIPPED)]) == 0
    summary = json.loads((tmp_path / "run" / "report" / "summary.json").read_text())
    assert summary["gIoU"] == pytest.approx(1.0)
    position = summary["position"]
    assert position["samples"] == position["measured"] == position["within"] == 11
    assert position["max_m"] < 0.0003  # the 0.1 mm rounding of the positions and the bag's 1 mm depth steps
