"""gIoU / cIoU against values computed by hand, empty masks on both sides included."""
import numpy as np
import pytest

from lisa_ros.tools import metrics


def box(x0, y0, x1, y1, size=(10, 10)):
    mask = np.zeros(size, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_overlapping_boxes():
    # 4x4 = 16 px and 4x2 = 8 px sharing a 2x2 = 4 px corner: union 16 + 8 - 4 = 20
    assert metrics.intersection_union(box(0, 0, 4, 4), box(2, 2, 6, 4)) == (4, 20)
    assert metrics.iou(4, 20) == pytest.approx(0.2)


@pytest.mark.parametrize("predicted, truth, expected_iou", [
    (box(0, 0, 0, 0), box(0, 0, 0, 0), 1.0),  # both empty: correctly found nothing (LISA's convention)
    (box(0, 0, 0, 0), box(0, 0, 3, 3), 0.0),  # missed the object
    (box(0, 0, 3, 3), box(0, 0, 0, 0), 0.0),  # hallucinated an object
    (box(0, 0, 3, 3), box(0, 0, 3, 3), 1.0),
])
def test_empty_masks(predicted, truth, expected_iou):
    assert metrics.iou(*metrics.intersection_union(predicted, truth)) == expected_iou


def test_ignored_pixels_count_neither_way():
    # prediction 4x4 = 16 px, truth 2x2 = 4 px inside it; the prediction's right half (8 px) is ignored
    ignore = box(2, 0, 4, 4)
    assert metrics.intersection_union(box(0, 0, 4, 4), box(0, 0, 2, 2), ignore) == (4, 8)


def test_giou_is_mean_of_ious_and_ciou_is_cumulative():
    pairs = [(1, 2), (0, 0), (6, 8)]  # IoUs 0.5, 1 (both empty), 0.75
    assert metrics.giou(pairs) == pytest.approx((0.5 + 1.0 + 0.75) / 3)
    assert metrics.ciou(pairs) == pytest.approx(7 / 10)


def test_size_mismatch_is_an_error():
    with pytest.raises(ValueError, match="10x10 but the ground truth is 12x10"):
        metrics.intersection_union(box(0, 0, 1, 1), np.zeros((10, 12), bool))
