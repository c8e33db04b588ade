"""Mask helpers: union, bounding boxes, overlay, the max_masks cap, the PNG encoding of result masks."""
import numpy as np
import pytest

from lisa_ros.core.masks import best_mask_indices, bounding_box, mask_to_png, overlay_masks, png_to_mask, union_mono8


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


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (7, 9), (480, 641), (1080, 1920)])
def test_png_masks_round_trip_pixel_exact(shape):
    """result_mask_encoding png: 1-bit PNG, lossless for any mask (widths that are not a multiple of 8 included),
    and far smaller than a byte per pixel for object-like masks."""
    rng = np.random.default_rng(shape[1])
    noise = rng.random(shape) < 0.5
    empty, full = np.zeros(shape, bool), np.ones(shape, bool)
    blob = np.zeros(shape, bool)
    blob[shape[0] // 4:shape[0] * 3 // 4 + 1, shape[1] // 3:shape[1] // 2 + 1] = True
    for mask in (noise, empty, full, blob, noise.astype(np.uint8)):  # 0/1 uint8 masks too
        encoded = mask_to_png(mask)
        assert encoded.dtype == np.uint8 and encoded.ndim == 1
        decoded = png_to_mask(encoded.tobytes())
        assert decoded.dtype == bool and np.array_equal(decoded, mask.astype(bool))
    if shape == (1080, 1920):
        assert mask_to_png(blob).size < shape[0] * shape[1] / 100


def test_png_to_mask_refuses_what_is_not_a_png():
    with pytest.raises(ValueError, match="PNG"):
        png_to_mask(b"not a png")
