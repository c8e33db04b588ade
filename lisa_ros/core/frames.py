"""A one-slot buffer for camera frames: only the newest frame is ever kept.

Inference takes seconds while cameras publish at 30 Hz; queueing frames would
only grow memory and make answers refer to old images. The image callback puts,
the worker takes; frames overwritten before anyone used them count as dropped.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Hashable
from typing import Any


@dataclasses.dataclass(frozen=True)
class Frame:
    """A received frame, still in its transport form (decoded only when used).

    payload: whatever the decoder understands (the ROS message in the node).
    header: copied into results (opaque here).
    key: identifies the frame for engine caches (stamp + frame_id in the node).
    received: time.monotonic() at reception; seq: arrival number (1, 2, ...).
    """

    payload: Any
    header: Any
    key: Hashable
    received: float
    seq: int = 0


class LatestFrame:
    """Thread-safe newest-frame slot with a wait-for-newer operation."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._frame: Frame | None = None
        self._used = True
        self._seq = 0
        self.received_count = 0
        self.dropped_count = 0

    def put(self, frame: Frame) -> Frame:
        """Store a frame (replacing the previous one); returns it with its seq set."""
        with self._condition:
            if not self._used:
                self.dropped_count += 1
            self._seq += 1
            self.received_count += 1
            self._frame = dataclasses.replace(frame, seq=self._seq)
            self._used = False
            self._condition.notify_all()
            return self._frame

    @property
    def seq(self) -> int:
        with self._condition:
            return self._seq

    def take_latest(self) -> Frame | None:
        with self._condition:
            self._used = True
            return self._frame

    def wait_newer(self, seq: int, timeout: float, cancelled: threading.Event | None = None) -> Frame | None:
        """The newest frame with seq > ``seq``, waiting up to ``timeout`` s (None if none came)."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._seq <= seq:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (cancelled is not None and cancelled.is_set()):
                    return None
                self._condition.wait(min(remaining, 0.1))
            self._used = True
            return self._frame

    def clear(self) -> None:
        with self._condition:
            self._frame = None
            self._used = True
