"""Image preprocessing for CLIP and SAM, as the reference does it (PIL, no torchvision).

CLIP: transformers' ``CLIPImageProcessorPil`` with openai/clip-vit-large-patch14's settings
(shortest side to 224 bicubic, centre crop 224, scale to [0, 1], normalize). Option ``pad``
(LLaVA's ``expand2square``) pads the frame to a square with the mean colour first, so the
LLM also sees the frame's left/right edges.
SAM (``ResizeLongestSide(1024)``): longest side to 1024 (bilinear); normalization
and zero padding to 1024x1024 are ``Sam.preprocess``.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

CLIP_MEAN = tuple(OPENAI_CLIP_MEAN)
CLIP_STD = tuple(OPENAI_CLIP_STD)
CLIP_MODES = ("center_crop", "pad")


@functools.lru_cache(maxsize=4)
def _clip_processor(size: int) -> CLIPImageProcessorPil:
    """The processor LISA's vision tower ships with, for a ``size`` x ``size`` input (224 for CLIP ViT-L/14)."""
    return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                 image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))


def clip_pixels(image: np.ndarray, size: int = 224, mode: str = "center_crop") -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, size, size) float32."""
    picture = Image.fromarray(image)
    if mode == "pad":
        side = max(picture.width, picture.height)
        background = tuple(int(c * 255) for c in CLIP_MEAN)
        square = Image.new("RGB", (side, side), background)
        square.paste(picture, ((side - picture.width) // 2, (side - picture.height) // 2))
        picture = square
    elif mode != "center_crop":
        raise ValueError(f"clip_preprocess must be one of {CLIP_MODES}, got {mode!r}")
    return _clip_processor(size)(picture, return_tensors="pt")["pixel_values"]


def sam_resized_shape(height: int, width: int, long_side: int = 1024) -> tuple[int, int]:
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def sam_pixels(image: np.ndarray, long_side: int = 1024) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, h, w) float32 in 0..255, longest side ``long_side``."""
    height, width = sam_resized_shape(*image.shape[:2], long_side)
    resized = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
    return torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))).float()[None]

