"""Turning engine masks into what the node publishes (no ROS)."""
from __future__ import annotations

import dataclasses

import numpy as np

from lisa_ros.core.types import EngineOutput

# Distinct colours (RGB) for overlay masks; cycled when there are more masks.
OVERLAY_COLOURS = ((255, 64, 64), (64, 200, 255), (80, 255, 80), (255, 200, 0), (220, 80, 255), (0, 255, 200))


def keep_best_masks(output: EngineOutput, limit: int) -> EngineOutput:
    """At most ``limit`` masks: the highest-scoring (the earliest among equal scores), in their order.

    An answer can name hundreds of parts (334 full-frame masks made a 308 MB result); the result
    publisher keeps its last 10 results, so this bounds what they hold to 10 x limit frames of masks.
    """
    if len(output.masks) <= limit:
        return output
    best = sorted(np.argsort(-np.asarray(output.scores, dtype=np.float64), kind="stable")[:limit])
    return dataclasses.replace(output, masks=[output.masks[i] for i in best], scores=[output.scores[i] for i in best])


def mask_to_mono8(mask: np.ndarray) -> np.ndarray:
    """A boolean (or 0/1) mask -> uint8 0/255, the encoding published on topics."""
    return np.where(np.asarray(mask, dtype=bool), np.uint8(255), np.uint8(0))


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
