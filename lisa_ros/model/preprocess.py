"""Image preprocessing for CLIP and SAM, as the reference does it (PIL, no torchvision).

CLIP (``CLIPImageProcessor`` of openai/clip-vit-large-patch14): shortest side to
224 (bicubic), centre crop 224, scale to [0, 1], normalize. Option ``pad``
(LLaVA's ``expand2square``) pads the frame to a square with the mean colour
first, so the LLM also sees the frame's left/right edges.
SAM (``ResizeLongestSide(1024)``): longest side to 1024 (bilinear); normalization
and zero padding to 1024x1024 are ``Sam.preprocess``.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_MODES = ("center_crop", "pad")


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
    width, height = picture.size
    short, long = sorted((width, height))
    new_long = int(size * long / short)
    new_size = (size, new_long) if width <= height else (new_long, size)  # PIL (w, h)
    picture = picture.resize(new_size, Image.Resampling.BICUBIC)
    top = (picture.height - size) // 2
    left = (picture.width - size) // 2
    array = np.asarray(picture)[top:top + size, left:left + size]
    array = (array.astype(np.float64) / 255.0).astype(np.float32)
    array = (array - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]


def sam_resized_shape(height: int, width: int, long_side: int = 1024) -> tuple[int, int]:
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def sam_pixels(image: np.ndarray, long_side: int = 1024) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, h, w) float32 in 0..255, longest side ``long_side``."""
    height, width = sam_resized_shape(*image.shape[:2], long_side)
    resized = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
    return torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))).float()[None]

