"""Label-image metrics for semantic mode: confusion matrix, per-class IoU, mIoU, fwIoU, pixel accuracy.

Conventions of the ADE20K / Cityscapes tooling: ground-truth pixels equal to
``ignore_index`` (255) count neither way; the confusion matrix accumulates over all
images (rows: ground truth, columns: prediction) and every figure comes from it.
Class 0 is "unlabelled" (what semantic mode writes where no category reached the
threshold): it is a row and a column of the matrix, so predicting 0 on a category
is a miss and predicting a category on ground-truth 0 a false positive, but it is
left out of the means unless ``include_unlabelled``. A class that is neither in the
ground truth nor predicted has no IoU (NaN) and is left out of mIoU.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

IGNORE_INDEX = 255


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, num_classes: int,
                     ignore_index: int | None = IGNORE_INDEX) -> np.ndarray:
    """(num_classes, num_classes) int64 pixel counts; ``[t, p]`` = pixels of class t predicted as p.

    Labels are 0..num_classes-1; anything else (except ``ignore_index`` in the truth)
    raises ValueError, because silently dropping it would inflate every score.
    """
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    if truth.shape != predicted.shape:
        raise ValueError(f"prediction is {predicted.shape} but the ground truth is {truth.shape}")
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        raise ValueError(f"ignore_index {ignore_index} is also a class (num_classes {num_classes}); pick another")
    truth, predicted = truth.ravel().astype(np.int64), predicted.ravel().astype(np.int64)
    if ignore_index is not None:
        keep = truth != ignore_index
        truth, predicted = truth[keep], predicted[keep]
    for name, values in (("ground truth", truth), ("prediction", predicted)):
        bad = (values < 0) | (values >= num_classes)
        if bad.any():
            raise ValueError(f"{name} holds label {int(values[bad][0])}, outside 0..{num_classes - 1}"
                             + (f" (and not ignore_index {ignore_index})" if name == "ground truth" else ""))
    return np.bincount(truth * num_classes + predicted, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def accumulate(pairs: Iterable[tuple[np.ndarray, np.ndarray]], num_classes: int,
               ignore_index: int | None = IGNORE_INDEX) -> np.ndarray:
    """The confusion matrix summed over (truth, predicted) label-image pairs."""
    total = np.zeros((num_classes, num_classes), np.int64)
    for truth, predicted in pairs:
        total += confusion_matrix(truth, predicted, num_classes, ignore_index)
    return total


@dataclasses.dataclass
class SemanticScores:
    class_names: list[str]
    confusion: np.ndarray              # (C, C) rows truth, columns prediction
    iou: list[float]                   # per class, NaN where the class is neither present nor predicted
    pixel_accuracy: float              # of the pixels whose ground truth is a scored class, the share right
    mean_accuracy: float               # mean per-class recall over the classes present
    miou: float
    fwiou: float
    never_predicted: list[str]         # present in the ground truth, never predicted
    never_present: list[str]           # predicted, never in the ground truth
    absent: list[str]                  # neither

    def to_dict(self) -> dict:
        def clean(value: float) -> float | None:
            return None if math.isnan(value) else round(float(value), 6)

        return {
            "classes": self.class_names, "per_class_iou": {n: clean(v) for n, v in zip(self.class_names, self.iou)},
            "pixel_accuracy": clean(self.pixel_accuracy), "mean_accuracy": clean(self.mean_accuracy),
            "miou": clean(self.miou), "fwiou": clean(self.fwiou), "never_predicted": self.never_predicted,
            "never_present": self.never_present, "absent": self.absent, "confusion": self.confusion.tolist(),
        }


def scores_from_confusion(confusion: np.ndarray, class_names: Sequence[str] | None = None,
                          include_unlabelled: bool = False) -> SemanticScores:
    """Every figure from one confusion matrix. Class 0 is 'unlabelled' (left out of the means by default)."""
    confusion = np.asarray(confusion, np.int64)
    count = confusion.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(count)]
    if len(names) != count:
        raise ValueError(f"{len(names)} class names for a {count}x{count} confusion matrix")
    hits = np.diag(confusion).astype(np.float64)
    in_truth = confusion.sum(axis=1).astype(np.float64)
    in_prediction = confusion.sum(axis=0).astype(np.float64)
    union = in_truth + in_prediction - hits
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, hits / union, np.nan)
        recall = np.where(in_truth > 0, hits / in_truth, np.nan)
    scored = np.arange(count) >= (0 if include_unlabelled else 1)
    scored_truth = in_truth[scored].sum()
    frequency = in_truth / scored_truth if scored_truth else np.zeros(count)
    present_iou = iou[scored & (union > 0)]
    return SemanticScores(
        class_names=names, confusion=confusion, iou=iou.tolist(),
        pixel_accuracy=float(hits[scored].sum() / scored_truth) if scored_truth else math.nan,
        mean_accuracy=float(np.nanmean(recall[scored])) if np.isfinite(recall[scored]).any() else math.nan,
        miou=float(present_iou.mean()) if present_iou.size else math.nan,
        fwiou=float(np.nansum(frequency[scored] * np.nan_to_num(iou[scored]))) if scored_truth else math.nan,
        never_predicted=[names[i] for i in range(count) if scored[i] and in_truth[i] > 0 and in_prediction[i] == 0],
        never_present=[names[i] for i in range(count) if scored[i] and in_prediction[i] > 0 and in_truth[i] == 0],
        absent=[names[i] for i in range(count) if scored[i] and union[i] == 0],
    )


def plot_confusion(scores: SemanticScores, path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (share of each ground-truth class), counts written in small ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = scores.confusion.astype(np.float64)
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    count = len(scores.class_names)
    side = min(max(4.0, 0.45 * count + 2.0), 24.0)
    figure, axes = plt.subplots(figsize=(side + 1.5, side))
    image = axes.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(count), scores.class_names, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(count), scores.class_names, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("ground truth")
    if count <= 20:
        for t in range(count):
            for p in range(count):
                if confusion[t, p]:
                    axes.text(p, t, f"{share[t, p]:.2f}", ha="center", va="center", fontsize=7,
                              color="white" if share[t, p] > 0.5 else "black")
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of the ground-truth class's pixels")
    axes.set_title(title or f"confusion (mIoU {scores.miou:.3f}, pixel accuracy {scores.pixel_accuracy:.3f})")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
