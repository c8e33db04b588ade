"""Mask helpers: union, bounding boxes, overlay, the max_masks cap."""
import numpy as np

from lisa_ros.core.masks import best_mask_indices, bounding_box, overlay_masks, union_mono8


def test_union_boxes_and_overlay():
    a = np.zeros((4, 5), bool)
    a[1:3, 2:4] = True
    b = np.zeros((4, 5), bool)
    b[3, 0] = True
    union = union_mono8([a, b], 4, 5)
    assert union.dtype == np.uint8 and set(np.unique(union)) == {0, 255} and union.sum() == 5 * 255
    assert bounding_box(a) == (2, 1, 2, 2) and bounding_box(np.zeros((2, 2), bool)) == (0, 0, 0, 0)
    drawn = overlay_masks(np.zeros((4, 5, 3), np.uint8), [a], alpha=1.0)
    assert drawn[1, 2].tolist() == [255, 64, 64] and drawn[0, 0].tolist() == [0, 0, 0]


def test_best_mask_indices_are_the_highest_scoring_in_their_order():
    scores = [0.1, 0.9, 0.5, 0.9, 0.7]
    assert best_mask_indices(scores, 3) == [1, 3, 4]
    assert best_mask_indices(scores, 1) == [1]  # equal scores: the earliest
    assert best_mask_indices(scores, 5) == best_mask_indices(scores, None) == [0, 1, 2, 3, 4]
