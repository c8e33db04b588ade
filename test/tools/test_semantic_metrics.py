"""Label-image metrics against an independent per-pixel loop and scikit-image's contingency table,
plus hand-checked figures, the ignore label and the confusion plot."""
from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import contingency_table

from lisa_ros.tools import semantic_metrics as sm


def _pair(seed: int, classes: int = 5, shape=(13, 17)):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, shape)
    predicted = np.where(rng.random(shape) < 0.6, truth, rng.integers(0, classes, shape))
    truth[rng.random(shape) < 0.1] = sm.IGNORE_INDEX
    return truth, predicted


def _loop_figures(truth, predicted, classes):
    """Counting pixel by pixel, no matrix: (confusion, per-class IoU over classes 1.., fwIoU, pixel accuracy)."""
    confusion = [[0] * classes for _ in range(classes)]
    for t, p in zip(truth.ravel().tolist(), predicted.ravel().tolist()):
        if t != sm.IGNORE_INDEX:
            confusion[t][p] += 1
    ious, weighted, right, pixels = {}, 0.0, 0, 0
    for c in range(1, classes):
        tp = confusion[c][c]
        fn = sum(confusion[c]) - tp
        fp = sum(confusion[t][c] for t in range(classes)) - tp
        ious[c] = tp / (tp + fp + fn) if tp + fp + fn else math.nan
        right, pixels = right + tp, pixels + sum(confusion[c])
    for c in range(1, classes):
        weighted += sum(confusion[c]) / pixels * (0.0 if math.isnan(ious[c]) else ious[c])
    return np.array(confusion), ious, weighted, right / pixels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_figures_equal_a_per_pixel_loop(seed):
    truth, predicted = _pair(seed)
    confusion, ious, fwiou, accuracy = _loop_figures(truth, predicted, 5)
    matrix = sm.confusion_matrix(truth, predicted, 5)
    np.testing.assert_array_equal(matrix, confusion)
    scores = sm.scores_from_confusion(matrix)
    assert scores.iou[1:] == pytest.approx([ious[c] for c in range(1, 5)])
    assert scores.miou == pytest.approx(np.nanmean([ious[c] for c in range(1, 5)]))
    assert scores.fwiou == pytest.approx(fwiou) and scores.pixel_accuracy == pytest.approx(accuracy)


def test_confusion_matrix_equals_scikit_image_contingency_table():
    truth, predicted = _pair(3, classes=6, shape=(40, 31))
    table = contingency_table(truth, predicted, ignore_labels=[sm.IGNORE_INDEX]).toarray()
    np.testing.assert_array_equal(sm.confusion_matrix(truth, predicted, 6), table[:6, :6])


def test_accumulated_over_images_is_the_sum():
    pairs = [_pair(seed) for seed in range(4)]
    total = sm.accumulate(pairs, 5)
    np.testing.assert_array_equal(total, sum(sm.confusion_matrix(t, p, 5) for t, p in pairs))


def test_hand_checked_example_with_never_predicted_and_never_present():
    truth = np.array([[1, 1, 2, 2], [0, 0, 255, 3]])
    predicted = np.array([[1, 0, 2, 4], [1, 0, 2, 0]])
    scores = sm.scores_from_confusion(sm.confusion_matrix(truth, predicted, 6),
                                      ["unlabelled", "floor", "door", "person", "cable", "stairs"])
    # floor: tp 1, fn 1 (-> 0), fp 1 (on a 0 pixel): 1/3; door: tp 1, fn 1 (-> cable): 1/2
    assert scores.iou[1:3] == pytest.approx([1 / 3, 1 / 2])
    assert scores.iou[3] == 0.0 and scores.iou[4] == 0.0 and math.isnan(scores.iou[5])
    assert scores.miou == pytest.approx((1 / 3 + 1 / 2) / 4)
    assert scores.pixel_accuracy == pytest.approx(2 / 5)  # of the 5 category pixels (ignore and 0 out)
    assert scores.fwiou == pytest.approx(2 / 5 * 1 / 3 + 2 / 5 * 1 / 2)
    assert scores.never_predicted == ["person"] and scores.never_present == ["cable"] and scores.absent == ["stairs"]
    with_zero = sm.scores_from_confusion(scores.confusion, include_unlabelled=True)
    assert with_zero.iou[0] == pytest.approx(1 / 4) and with_zero.pixel_accuracy == pytest.approx(3 / 7)
    assert set(scores.to_dict()) >= {"per_class_iou", "miou", "fwiou", "pixel_accuracy", "confusion"}
    assert scores.to_dict()["per_class_iou"]["stairs"] is None


@pytest.mark.parametrize("truth, predicted, expected", [
    (np.array([[7]]), np.array([[1]]), "ground truth holds label 7"),
    (np.array([[1]]), np.array([[9]]), "prediction holds label 9"),
    (np.array([[1]]), np.array([[255]]), "prediction holds label 255"),  # ignore applies to the truth only
    (np.zeros((2, 2), int), np.zeros((2, 3), int), "prediction is"),
])
def test_bad_labels_are_refused(truth, predicted, expected):
    with pytest.raises(ValueError, match=expected):
        sm.confusion_matrix(truth, predicted, 5)


def test_ignore_index_must_not_be_a_class():
    with pytest.raises(ValueError, match="also a class"):
        sm.confusion_matrix(np.zeros((1, 1), int), np.zeros((1, 1), int), 256)
    assert sm.confusion_matrix(np.zeros((1, 1), int), np.zeros((1, 1), int), 256, ignore_index=None)[0, 0] == 1


def test_confusion_plot_is_written(tmp_path):
    truth, predicted = _pair(0)
    scores = sm.scores_from_confusion(sm.confusion_matrix(truth, predicted, 5), list("uabcd"))
    path = sm.plot_confusion(scores, tmp_path / "plots" / "confusion.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
