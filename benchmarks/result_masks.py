"""Benchmark: size of a SegmentationResult with 16 masks at 1920x1080, raw vs PNG (result_mask_encoding).

The result is built the node's way (lisa_ros.node.messages.answer_to_result) and serialised as DDS
carries it (rclpy.serialization.serialize_message: CDR). Two mask sets, seeded:

- ``objects``: 16 filled ellipses and polygons of 1-20 % of the frame each (what a segmenter gives);
- ``ragged``: 16 blobs with noisy borders (thresholded blurred noise inside each object's box),
  many times the edge length: a harder case for PNG.

Reported per encoding: serialised bytes, time to build the message (PNG encoding included) and
to decode its masks back (docs/node.md's ``result_masks``), and that the decoded masks equal the
originals pixel for pixel.

    source scripts/ros_env.sh && python -P benchmarks/result_masks.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.append(str(Path(__file__).resolve().parent))

import common  # noqa: E402
from lisa_ros.core.frames import Frame  # noqa: E402
from lisa_ros.core.types import Answer, EngineOutput, Request, Status  # noqa: E402

WIDTH, HEIGHT, MASKS = 1920, 1080, 16


def object_masks(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = []
    for k in range(MASKS):
        mask = np.zeros((HEIGHT, WIDTH), np.uint8)
        area = rng.uniform(0.01, 0.2) * WIDTH * HEIGHT
        cx, cy = int(rng.uniform(200, WIDTH - 200)), int(rng.uniform(150, HEIGHT - 150))
        if k % 2:
            a = int(np.sqrt(area / np.pi * rng.uniform(1, 2)))
            b = int(area / np.pi / a)
            cv2.ellipse(mask, (cx, cy), (a, b), float(rng.uniform(0, 180)), 0, 360, 255, -1)
        else:
            radius = np.sqrt(area / np.pi)
            angles = np.sort(rng.uniform(0, 2 * np.pi, 9))
            points = np.stack([cx + radius * rng.uniform(0.6, 1.4, 9) * np.cos(angles),
                               cy + radius * rng.uniform(0.6, 1.4, 9) * np.sin(angles)], axis=1)
            cv2.fillPoly(mask, [points.astype(np.int32)], 255)
        masks.append(mask > 0)
    return masks


def ragged_masks(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    masks = []
    for mask in object_masks(seed):
        noise = cv2.GaussianBlur(rng.random((HEIGHT, WIDTH), dtype=np.float32), (0, 0), 3)
        masks.append(mask & (noise > np.median(noise[mask]) - 0.01))
    return masks


def result_masks(result) -> list[np.ndarray]:
    """docs/node.md's decoding example ("Compact masks")."""
    if result.mask_encoding == "png":
        return [cv2.imdecode(np.frombuffer(bytes(m.data), np.uint8), cv2.IMREAD_GRAYSCALE) > 0
                for m in result.compressed_masks]
    return [np.frombuffer(bytes(m.data), np.uint8).reshape(m.height, m.step)[:, :m.width] > 0
            for m in result.masks]


def measure(masks: list[np.ndarray], encoding: str, repeats: int) -> dict:
    from rclpy.serialization import serialize_message
    from std_msgs.msg import Header

    from lisa_ros.node.messages import answer_to_result

    answer = Answer(Request("segment everything", request_id="bench"), Status.OK, "",
                    frame=Frame(None, Header(frame_id="camera_color_optical_frame"), "bench", 0.0),
                    output=EngineOutput(masks, [0.9] * len(masks), "Sure, [SEG] ..."))
    build, decode = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        result = answer_to_result(answer, "bench", encoding)
        build.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        decoded = result_masks(result)
        decode.append((time.perf_counter() - start) * 1000)
    exact = len(decoded) == len(masks) and all(np.array_equal(a, b) for a, b in zip(decoded, masks))
    size = len(serialize_message(result))
    return {"encoding": encoding, "serialized_bytes": size, "serialized_mb": round(size / 1e6, 3),
            "build_ms": common.summary(build), "decode_ms": common.summary(decode), "pixel_exact": exact}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--note", default="")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    result: dict = {"machine_start": common.machine(), "note": args.note, "opencv": cv2.__version__,
                    "frame": f"{WIDTH}x{HEIGHT}", "masks": MASKS, "rows": []}
    for name, masks in (("objects", object_masks()), ("ragged", ragged_masks())):
        coverage = [round(float(m.mean()), 3) for m in masks]
        for encoding in ("raw", "png"):
            row = {"mask_set": name, "mask_area_fraction": coverage} | measure(masks, encoding, args.repeats)
            result["rows"].append(row)
    result["machine_end"] = common.machine()
    path = common.write_result("result_masks", result, args.out)
    print(common.markdown_table(
        ["masks", "encoding", "serialised MB", "build ms (median)", "decode ms (median)", "pixel-exact"],
        [[r["mask_set"], r["encoding"], r["serialized_mb"], r["build_ms"]["median"], r["decode_ms"]["median"],
          r["pixel_exact"]] for r in result["rows"]]))
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
