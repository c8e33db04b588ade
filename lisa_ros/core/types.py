"""Result types shared by engines, the node and the tools (no ROS, no torch)."""
from __future__ import annotations

import dataclasses
import enum

import numpy as np


class Status(enum.IntEnum):
    """Mirrors the STATUS_* constants of msg/SegmentationResult.msg."""

    OK = 0
    NOT_FOUND = 1
    INVALID_IMAGE = 2
    INVALID_INSTRUCTION = 3
    NO_IMAGE = 4
    STALE_IMAGE = 5
    BUSY = 6
    TIMEOUT = 7
    ENGINE_ERROR = 8
    OUT_OF_MEMORY = 9
    NOT_READY = 10


@dataclasses.dataclass
class EngineOutput:
    """What an engine returns for one (image, instruction).

    masks: one boolean (H, W) array per [SEG] token, at the source image size.
    scores: one confidence per mask (SAM's IoU prediction for LISA).
    text: the model's answer with special tokens removed.
    timings_ms: per-phase wall times, e.g. {"clip": 3.1, "generate": 40.2}.
    """

    masks: list[np.ndarray]
    scores: list[float]
    text: str
    timings_ms: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def found(self) -> bool:
        return len(self.masks) > 0
