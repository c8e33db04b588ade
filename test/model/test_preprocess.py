"""CLIP and SAM preprocessing match the reference's processors."""
from __future__ import annotations

import numpy as np
import pytest

from lisa_ros.model.preprocess import CLIP_MEAN, CLIP_STD, clip_pixels, sam_pixels, sam_resized_shape


@pytest.mark.parametrize("shape", [(96, 128, 3), (300, 451, 3), (640, 480, 3), (50, 50, 3)])
def test_clip_center_crop_equals_clip_image_processor(shape):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    image = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    processor = CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                                      resample=3, image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    expected = processor(image, return_tensors="pt")["pixel_values"]
    assert clip_pixels(image).shape == (1, 3, 224, 224)
    assert (clip_pixels(image) - expected).abs().max() < 1e-6


def test_pad_mode_keeps_the_frame_edges():
    image = np.zeros((90, 160, 3), dtype=np.uint8)
    image[:, :20] = 255  # a white left edge that the centre crop cuts away
    cropped, padded = clip_pixels(image, mode="center_crop"), clip_pixels(image, mode="pad")
    assert cropped[0, 0].max() < 0 and padded[0, 0].max() > 1.5
    square = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert (clip_pixels(square, mode="pad") - clip_pixels(square)).abs().max() == 0


def test_sam_resize_longest_side():
    assert sam_resized_shape(300, 451) == (681, 1024)
    assert sam_resized_shape(480, 640) == (768, 1024)
    pixels = sam_pixels(np.full((300, 451, 3), 7, dtype=np.uint8))
    assert pixels.shape == (1, 3, 681, 1024) and float(pixels.max()) == 7.0
