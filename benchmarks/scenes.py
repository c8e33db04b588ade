"""Synthetic moving-object sequences with exact ground-truth masks (tracking tests and benchmark).

A textured square moves over a textured background; the background may pan (camera motion),
an occluder may slide over the object, and the object may leave the frame. Textures are
smooth multi-scale noise plus fine grain, like a cluttered table seen by a camera: enough
structure for optical flow, no repeating pattern that could alias.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np


def texture(height: int, width: int, seed: int) -> np.ndarray:
    """(H, W, 3) uint8 smooth noise with fine grain, deterministic per seed."""
    rng = np.random.default_rng(seed)
    out = np.zeros((height, width, 3), np.float32)
    for cell, weight in ((64, 0.5), (16, 0.3), (4, 0.2)):
        coarse = rng.random((height // cell + 2, width // cell + 2, 3), dtype=np.float32)
        out += weight * cv2.resize(coarse, (width + 2 * cell, height + 2 * cell),
                                   interpolation=cv2.INTER_CUBIC)[cell:cell + height, cell:cell + width]
    out += rng.normal(0, 0.03, out.shape).astype(np.float32)
    return np.clip(out * 255, 0, 255).astype(np.uint8)


@dataclasses.dataclass
class Sequence:
    frames: list[np.ndarray]   # (H, W, 3) uint8 RGB
    masks: list[np.ndarray]    # (H, W) bool: the object's visible pixels
    full_masks: list[np.ndarray]  # (H, W) bool: the whole object, covered parts included (amodal)
    stamps_ns: list[int]


def moving_square(width: int = 640, height: int = 480, frames: int = 60, size: int | None = None,
                  start: tuple[float, float] | None = None, velocity: tuple[float, float] = (4.0, 2.0),
                  pan: tuple[float, float] = (0.0, 0.0), occluder_velocity: float | None = None,
                  occluder_direction: str = "right", occluder_lead: float | None = None,
                  scale_rate: float = 1.0, rotation_deg: float = 0.0, hz: float = 30.0, seed: int = 0) -> Sequence:
    """A square (side ``size``) moving ``velocity`` px/frame from ``start`` over a background panning
    ``pan`` px/frame, growing by ``scale_rate`` and turning by ``rotation_deg`` per frame about its
    centre; with ``occluder_velocity`` a textured bar (twice the square's side thick, across the
    frame) slides over the object at that speed (the ground truth excludes the covered pixels):
    ``occluder_direction`` "right" (entering from the left edge), "left" (from the right) or
    "down" (from the top); ``occluder_lead``: where its leading edge is on frame 0 (x, or y for
    "down"; default: the edge of the frame it enters from)."""
    if occluder_direction not in ("right", "left", "down"):
        raise ValueError(f"occluder_direction must be right, left or down, got {occluder_direction!r}")
    size = size or height // 4
    start = start or (width * 0.2, height * 0.3)
    margin = int(abs(pan[0]) * frames + abs(pan[1]) * frames) + 8
    background = texture(height + 2 * margin, width + 2 * margin, seed)
    square = texture(size, size, seed + 1)
    thickness = size * 2
    vertical_bar = occluder_direction != "down"  # a bar across the frame, moving along x (else along y)
    bar_shape = (height, thickness) if vertical_bar else (thickness, width)
    bar = texture(*bar_shape, seed + 2)
    lead = occluder_lead if occluder_lead is not None else {"right": 0.0, "left": float(width), "down": 0.0}[
        occluder_direction]
    out = Sequence([], [], [], [])
    for i in range(frames):
        bx, by = margin + pan[0] * i, margin + pan[1] * i
        shift = np.float32([[1, 0, -bx], [0, 1, -by]])
        frame = cv2.warpAffine(background, shift, (width, height), flags=cv2.INTER_LINEAR)
        x, y = start[0] + velocity[0] * i, start[1] + velocity[1] * i
        centre = (size - 1) / 2
        place = cv2.getRotationMatrix2D((centre, centre), rotation_deg * i, scale_rate ** i)
        place[:, 2] += (x, y)
        obj = cv2.warpAffine(square, place, (width, height), flags=cv2.INTER_LINEAR)
        cover = cv2.warpAffine(np.full((size, size), 255, np.uint8), place, (width, height),
                               flags=cv2.INTER_LINEAR)
        mask = cover >= 128
        frame[mask] = obj[mask]
        out.full_masks.append(mask.copy())
        if occluder_velocity is not None:
            edge = lead + occluder_velocity * i * (-1 if occluder_direction == "left" else 1)
            offset = edge if occluder_direction == "left" else edge - thickness  # the bar's top-left corner
            place_bar = np.float32([[1, 0, offset], [0, 1, 0]] if vertical_bar else [[1, 0, 0], [0, 1, offset]])
            bar_img = cv2.warpAffine(bar, place_bar, (width, height), flags=cv2.INTER_LINEAR)
            bar_mask = cv2.warpAffine(np.full(bar_shape, 255, np.uint8), place_bar, (width, height),
                                      flags=cv2.INTER_LINEAR) >= 128
            frame[bar_mask] = bar_img[bar_mask]
            mask &= ~bar_mask
        out.frames.append(frame)
        out.masks.append(mask)
        out.stamps_ns.append(int(round(i * 1e9 / hz)))
    return out


def iou(a: np.ndarray | None, b: np.ndarray) -> float:
    if a is None:
        return 0.0
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0
