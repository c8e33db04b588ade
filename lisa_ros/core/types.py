"""Request and result types shared by engines, the workers, the node and the tools (no ROS, no torch)."""
from __future__ import annotations

import dataclasses
import enum
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from lisa_ros.core.frames import Frame


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

    masks: one boolean (H, W) array per [SEG] token, at the source image size (at most ``max_masks``).
    scores: one confidence per mask (SAM's IoU prediction for LISA).
    text: the model's answer with special tokens removed.
    timings_ms: per-phase wall times, e.g. {"clip": 3.1, "generate": 40.2}.
    masks_dropped: how many more masks the answer held, the lowest-scoring, left out for ``max_masks``.
    """

    masks: list[np.ndarray]
    scores: list[float]
    text: str
    timings_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    masks_dropped: int = 0

    @property
    def found(self) -> bool:
        return len(self.masks) > 0


class PairingPolicy(enum.StrEnum):
    """Which frame an instruction from the topic is answered on."""

    NEWEST = "newest"  # the newest frame when the instruction arrives
    NEXT = "next"  # the first frame that arrives after the instruction


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
    # on the last token. A callable is decoded only when read: a throttled consumer pays for what it sends.
    text: str | Callable[[], str] = ""

    @property
    def partial_text(self) -> str:
        return self.text() if callable(self.text) else self.text


ProgressCallback = Callable[[Progress], None]


@dataclasses.dataclass(eq=False)  # identity: a request is found in the queue by itself, not by equal fields
class Request:
    """One instruction to answer. ``frame`` pins the image (service image)."""

    instruction: str
    request_id: str = ""  # empty: the node assigns one
    echo: str | None = None  # the instruction exactly as received, echoed verbatim (None: the validated text)
    conversation_id: str = "default"
    reset_conversation: bool = False
    frame: Frame | None = None
    error: tuple[Status, str] | None = None  # refused before queueing (bad instruction, ...)
    received: float = dataclasses.field(default_factory=time.monotonic)
    stamp: Any = None  # when it was received, on the node's clock: the header of an answer without a frame
    context: Any = None  # opaque for the submitter (e.g. a service waiter)
    pairing_policy: PairingPolicy | None = None  # None = the worker's setting
    wait_after_seq: int | None = None
    answered: bool = dataclasses.field(default=False, repr=False)
    # Set by RequestWorker.cancel (and by stop for the running request): ends its wait or its engine call.
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event, repr=False, compare=False)
    # Called as the request moves (the ~/segment action's feedback), on the worker's and the engine's threads;
    # an exception from it is logged and ignored.
    progress: ProgressCallback | None = dataclasses.field(default=None, repr=False, compare=False)


@dataclasses.dataclass
class Answer:
    """The single answer to a Request."""

    request: Request
    status: Status
    message: str
    frame: Frame | None = None
    image: np.ndarray | None = None  # the decoded RGB frame the engine saw
    output: EngineOutput | None = None
    queue_wait_ms: float = 0.0
    inference_ms: float = 0.0
    # No total: it runs until the result is published, which only the publisher knows (SegmentationResult.total_ms).
