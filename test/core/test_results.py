"""Mask helpers: union, bounding boxes, overlay."""
import numpy as np

from lisa_ros.core.results import bounding_box, overlay, union_mono8


def test_union_boxes_and_overlay():
    a = np.zeros((4, 5), bool)
    a[1:3, 2:4] = True
    b = np.zeros((4, 5), bool)
    b[3, 0] = True
    union = union_mono8([a, b], 4, 5)
    assert union.dtype == np.uint8 and set(np.unique(union)) == {0, 255} and union.sum() == 5 * 255
    assert bounding_box(a) == (2, 1, 2, 2) and bounding_box(np.zeros((2, 2), bool)) == (0, 0, 0, 0)
    drawn = overlay(np.zeros((4, 5, 3), np.uint8), [a], alpha=1.0)
    assert drawn[1, 2].tolist() == [255, 64, 64] and drawn[0, 0].tolist() == [0, 0, 0]
