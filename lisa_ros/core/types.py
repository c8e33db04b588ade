"""Result types shared by engines, the node and the tools (no ROS, no torch)."""
from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable

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
    CANCELLED = 11

    @property
    def answered(self) -> bool:
        """The model ran and answered: masks (OK) or "it is not there" (NOT_FOUND).

        Every other status is a refusal or a failure: no model answer to count in latencies or score.
        """
        return self in (Status.OK, Status.NOT_FOUND)

    @classmethod
    def is_answered(cls, value: int | str) -> bool:
        """``answered`` for a code or a name from a message or a record, which may be one this version does
        not know (a newer node's code, the replay's own NO_RESULT): those are not answers."""
        member = cls.__members__.get(value) if isinstance(value, str) else cls._value2member_map_.get(value)
        return member is not None and member.answered

    @classmethod
    def name_of(cls, code: int) -> str:
        """The name of a status code, or the number itself for a code this version does not know."""
        member = cls._value2member_map_.get(code)
        return member.name if member is not None else str(code)


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


class Stage(enum.IntEnum):
    """Mirrors the STAGE_* constants of action/Segment.action's feedback."""

    QUEUED = 0
    ENCODING = 1
    GENERATING = 2
    DECODING = 3


@dataclasses.dataclass(frozen=True)
class Progress:
    """Where a request stands (the ``~/segment`` action's feedback), reported as it moves.

    Stages come in this order: QUEUED (again as the queue moves), ENCODING, GENERATING once per
    generated token, DECODING when masks will be decoded.
    """

    stage: Stage
    queue_position: int = 0  # QUEUED: 1 = next to run
    tokens: int = 0  # GENERATING: tokens generated so far (1, 2, ...; the final EOS counts)
    # GENERATING: the answer so far, special tokens removed; always a prefix of the final text, and all of it
    # on the last token.
    partial_text: str = ""


ProgressCallback = Callable[[Progress], None]
