"""The shipped sample bag is what `lisa-ros make-sample-bag` writes, and is usable as promised."""
import argparse
import json
from pathlib import Path

import cv2
import numpy as np

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
    """Depth and camera info per colour frame (same header); each target's position is the mean 3D point of its
    ground-truth pixels in that depth (checked here from the bag alone), and the node's locator finds it."""
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
        vs, us = np.nonzero(mask)
        z = metres[vs, us]
        assert z.min() > 0  # no hole on a target
        mean = np.array([np.mean((us - cx) / fx * z), np.mean((vs - cy) / fy * z), np.mean(z)])
        message = positions[stamp]
        assert message.header.frame_id == depth.header.frame_id
        position = np.array([message.point.x, message.point.y, message.point.z])
        np.testing.assert_allclose(mean, position, atol=0.001)  # millimetre depth, 0.1 mm rounding
        ring = cv2.dilate(mask.astype(np.uint8), np.ones((21, 21), np.uint8)).astype(bool) & ~mask & (metres > 0)
        assert np.median(metres[ring]) > np.median(z) + 0.05  # the object stands in front of its background
        locator = TargetLocator(tolerance_s=0.0)
        locator.on_camera_info(k=info.k, width=info.width, height=info.height, d=info.d)
        locator.on_depth(DepthMessage(stamp, depth.header.frame_id, depth.encoding, depth.width, depth.height,
                                      depth.step, False, bytes(depth.data)))
        target = locator.measure([mask], stamp).targets[0]
        assert target.ok and np.linalg.norm(target.centroid - position) < 0.01  # median vs mean of a sphere: 7 mm
        if stamp in reasonseg:
            assert reasonseg[stamp]["position_m"] == [message.point.x, message.point.y, message.point.z]
            assert reasonseg[stamp]["position_frame_id"] == message.header.frame_id
