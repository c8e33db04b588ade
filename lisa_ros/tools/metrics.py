"""Mask metrics as in the LISA paper (ReasonSeg): gIoU and cIoU.

gIoU is the mean of per-sample IoUs; cIoU is the total intersection over the total
union, so large objects weigh more. As in LISA's evaluation, a sample whose
prediction and ground truth are both empty scores IoU 1 (correctly found nothing),
and ground-truth pixels marked "ignore" count neither way.
"""
from __future__ import annotations

import numpy as np


def intersection_union(predicted: np.ndarray, truth: np.ndarray, ignore: np.ndarray | None = None) -> tuple[int, int]:
    """Pixel counts of (predicted AND truth, predicted OR truth), both (H, W) bool."""
    if predicted.shape != truth.shape:
        raise ValueError(f"predicted mask is {predicted.shape[1]}x{predicted.shape[0]} but the ground truth is "
                         f"{truth.shape[1]}x{truth.shape[0]}")
    valid = np.ones_like(truth, bool) if ignore is None else ~ignore
    return int(np.count_nonzero(predicted & truth & valid)), int(np.count_nonzero((predicted | truth) & valid))


def iou(intersection: int, union: int) -> float:
    return 1.0 if union == 0 else intersection / union


def giou(pairs: list[tuple[int, int]]) -> float:
    """Mean per-sample IoU over (intersection, union) pairs."""
    return float(np.mean([iou(i, u) for i, u in pairs])) if pairs else float("nan")


def ciou(pairs: list[tuple[int, int]]) -> float:
    """Cumulative intersection over cumulative union."""
    if not pairs:
        return float("nan")
    return iou(sum(i for i, _ in pairs), sum(u for _, u in pairs))
