"""Mask overlays shared by the replay results folder and the eval report."""
from __future__ import annotations

import cv2
import numpy as np

PREDICTION_RGB = (30, 120, 255)
GROUND_TRUTH_RGB = (40, 255, 40)


def as_rgb(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image


def eval_overlay(image: np.ndarray, predicted: np.ndarray | None, ground_truth: np.ndarray | None = None) -> np.ndarray:
    """RGB frame with the predicted mask filled blue (half transparent) and the
    ground truth outlined green, so misses and false positives are both visible."""
    canvas = as_rgb(image).copy()
    if predicted is not None and predicted.any():
        tint = np.zeros_like(canvas)
        tint[:] = PREDICTION_RGB
        blended = cv2.addWeighted(canvas, 0.5, tint, 0.5, 0)
        canvas[predicted] = blended[predicted]
    if ground_truth is not None and ground_truth.any():
        contours, _ = cv2.findContours(ground_truth.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(canvas, contours, -1, GROUND_TRUTH_RGB, max(2, canvas.shape[1] // 320))
    return canvas


def write_png(path, image: np.ndarray) -> None:
    """Lossless PNG of an RGB image or a mono mask (bool masks become 0/255)."""
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"cannot write {path}")


def read_mask(path) -> np.ndarray:
    """A PNG mask as bool (any non-zero pixel is foreground)."""
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise ValueError(f"{path} is not a readable image")
    return mask > 0


def read_rgb(path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path} is not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
