"""Turning engine masks into what the node publishes (no ROS)."""
from __future__ import annotations

import cv2
import numpy as np

# Distinct colours (RGB) for overlay masks; cycled when there are more masks.
OVERLAY_COLOURS = ((255, 64, 64), (64, 200, 255), (80, 255, 80), (255, 200, 0), (220, 80, 255), (0, 255, 200))


def best_mask_indices(scores, limit: int | None) -> list[int]:
    """Which masks ``max_masks = limit`` keeps (all when None): the highest-scoring, the earliest among equal
    scores, as ascending indices (the answer's order). The one rule every engine applies (``Engine.segment``).

    An answer can name hundreds of parts (334 full-frame masks made a 308 MB result, and ~2.8 GB of
    fp32 logits on the GPU before); the result publisher keeps its last 10 results, so the cap bounds
    what they hold to 10 x limit frames of masks.
    """
    if limit is None or len(scores) <= limit:
        return list(range(len(scores)))
    return sorted(np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:limit].tolist())


def mask_to_mono8(mask: np.ndarray) -> np.ndarray:
    """A boolean (or 0/1) mask -> uint8 0/255, the encoding published on topics."""
    return np.where(np.asarray(mask, dtype=bool), np.uint8(255), np.uint8(0))


# SegmentationResult.mask_encoding values (the node's result_mask_encoding): "raw" fills masks[] with mono8
# sensor_msgs/Image, "png" fills compressed_masks[] with lossless 1-bit PNGs in sensor_msgs/CompressedImage.
MASK_ENCODINGS = ("raw", "png")
# image_transport's format string: "<source encoding>; <codec> compressed <encoding the decoder gives>".
PNG_MASK_FORMAT = "mono8; png compressed mono8"


def mask_to_png(mask: np.ndarray) -> np.ndarray:
    """A mask as a 1-bit greyscale PNG (uint8 bytes): lossless, and decoders (cv2.imdecode, PIL,
    image_transport) give it back as 0/255 mono8. A 1080p mask is a few KB instead of 2 MB raw, and
    bi-level PNG encodes faster than 8-bit PNG (about 1.5 ms vs 4-20 ms, benchmarks/result_masks.py)."""
    ok, encoded = cv2.imencode(".png", mask_to_mono8(mask), [cv2.IMWRITE_PNG_BILEVEL, 1])
    if not ok:
        raise ValueError(f"PNG encoding of a {np.shape(mask)} mask failed")
    return encoded.reshape(-1)


def png_to_mask(data: bytes | np.ndarray) -> np.ndarray:
    """A PNG mask (any bit depth, 0 = outside) -> (H, W) bool."""
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if decoded is None:
        raise ValueError("not a decodable PNG mask")
    return decoded > 0


def union_mono8(masks: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Union of the masks as mono8 0/255 (all zero when there are none)."""
    union = np.zeros((height, width), dtype=bool)
    for mask in masks:
        union |= np.asarray(mask, dtype=bool)
    return mask_to_mono8(union)


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight (x_offset, y_offset, width, height) of a mask; all zero for an empty mask."""
    rows = np.flatnonzero(np.asarray(mask, dtype=bool).any(axis=1))
    cols = np.flatnonzero(np.asarray(mask, dtype=bool).any(axis=0))
    if rows.size == 0:
        return 0, 0, 0, 0
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def overlay_masks(image: np.ndarray, masks: list[np.ndarray], alpha: float = 0.5) -> np.ndarray:
    """The RGB frame with each mask blended in its own colour and its box outlined."""
    out = image.astype(np.float32)
    for index, mask in enumerate(masks):
        colour = np.array(OVERLAY_COLOURS[index % len(OVERLAY_COLOURS)], dtype=np.float32)
        selected = np.asarray(mask, dtype=bool)
        out[selected] = (1.0 - alpha) * out[selected] + alpha * colour
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    for index, mask in enumerate(masks):
        x, y, w, h = bounding_box(mask)
        if w and h:
            colour = OVERLAY_COLOURS[index % len(OVERLAY_COLOURS)]
            out[y, x:x + w] = colour
            out[y + h - 1, x:x + w] = colour
            out[y:y + h, x] = colour
            out[y:y + h, x + w - 1] = colour
    return out
