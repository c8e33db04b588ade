"""Mask metrics as in the LISA paper (ReasonSeg): gIoU and cIoU; and the 3D targets' position error.

gIoU is the mean of per-sample IoUs; cIoU is the total intersection over the total
union, so large objects weigh more. As in LISA's evaluation, a sample whose
prediction and ground truth are both empty scores IoU 1 (correctly found nothing),
and ground-truth pixels marked "ignore" count neither way.

Position error: the distance (m) from a predicted 3D point to the ground-truth one; a
sample with ground truth but no predicted point has no error and is never "within".
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


def position_errors(errors: list[float | None], within_m: float) -> dict:
    """Summary of per-sample 3D errors (None: not measured, e.g. no predicted point): median, mean, p95 and max
    over the measured ones, and the fraction of all samples within ``within_m``."""
    measured = np.array([e for e in errors if e is not None], np.float64)
    stats = {name: (round(float(fn(measured)), 4) if measured.size else None) for name, fn in (
        ("median_m", np.median), ("mean_m", np.mean), ("p95_m", lambda a: np.percentile(a, 95)), ("max_m", np.max))}
    within = int(np.count_nonzero(measured <= within_m))
    return {"samples": len(errors), "measured": int(measured.size), **stats, "within_m": within_m,
            "within": within, "fraction_within": round(within / len(errors), 4) if errors else None}
