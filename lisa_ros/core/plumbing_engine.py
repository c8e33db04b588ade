"""A deterministic stand-in engine, for testing the node's plumbing only.

It does not understand images or language. Masks are horizontal bands, one per
part of the instruction separated by " and " (no mask when the instruction
contains "nothing"), so tests can predict them exactly. Options add a delay
(a slow engine) and fault injection triggered by words in the instruction, so
timeouts, out-of-memory and engine errors can be exercised end to end.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np

from lisa_ros.core.engine import Engine, EngineError, EngineOutOfMemory
from lisa_ros.core.types import EngineOutput

# Keys of the LISA engine; accepted and ignored so one config can switch engines.
LISA_OPTION_KEYS = frozenset({
    "path", "vision_tower", "precision", "device", "max_new_tokens", "clip_preprocess",
    "frame_cache_size", "max_history_turns", "local_files_only", "revision", "cache_dir",
})


class PlumbingEngine(Engine):
    """Options (all optional):

    delay_s: seconds each segment() takes (default 0).
    raise_on / hang_on / oom_on: a word; an instruction containing it makes
        segment() raise EngineError / hang for hang_s / raise EngineOutOfMemory.
    hang_s: how long a hang lasts (default 30; cancel() and unload() end it early).
    load_error: if set, load() fails with this message.
    load_delay_s: seconds load() takes (a slow model load; cancel() ends it early with an EngineError).
    """

    OPTIONS = {"delay_s": float, "raise_on": str, "hang_on": str, "oom_on": str, "hang_s": float, "load_error": str,
               "load_delay_s": float}

    def __init__(self, delay_s: float = 0.0, raise_on: str = "", hang_on: str = "", oom_on: str = "",
                 hang_s: float = 30.0, load_error: str = "", load_delay_s: float = 0.0) -> None:
        self.delay_s, self.hang_s, self.load_delay_s = delay_s, hang_s, load_delay_s
        self.raise_on, self.hang_on, self.oom_on, self.load_error = raise_on, hang_on, oom_on, load_error
        self.model_id = "plumbing"
        self.loaded = False
        self.cache_clears = 0
        self.segments_started = 0  # lets tests wait until a call is really running
        self._turns: dict[str, int] = {}
        self._unloaded = threading.Event()
        self._cancelled = threading.Event()

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PlumbingEngine:
        """Raises ValueError naming every bad option at once."""
        kwargs, problems = {}, []
        for key, value in options.items():
            if key in LISA_OPTION_KEYS:
                continue
            kind = cls.OPTIONS.get(key)
            if kind is None:
                problems.append(f"unknown plumbing engine option {key!r}; known: {sorted(cls.OPTIONS)}")
                continue
            try:
                kwargs[key] = kind(value)
            except (TypeError, ValueError):
                problems.append(f"plumbing engine option {key!r} must be {kind.__name__}, got {value!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return cls(**kwargs)

    def load(self) -> None:
        self._unloaded.clear()
        self._cancelled.clear()
        if self.load_delay_s > 0:
            self._wait(self.load_delay_s)
        if self.load_error:
            raise EngineError(self.load_error)
        self.loaded = True

    def segment(self, image: np.ndarray, instruction: str, *, frame_key: Hashable,
                conversation_id: str = "default") -> EngineOutput:
        if not self.loaded:
            raise EngineError("engine not loaded")
        self._cancelled.clear()
        self.segments_started += 1
        if self.raise_on and self.raise_on in instruction:
            raise EngineError(f"injected failure ({self.raise_on!r} in the instruction)")
        if self.oom_on and self.oom_on in instruction:
            raise EngineOutOfMemory(f"injected out-of-memory ({self.oom_on!r} in the instruction)")
        if self.hang_on and self.hang_on in instruction:
            self._wait(self.hang_s)
        if self.delay_s > 0:
            self._wait(self.delay_s)
        turn = self._turns.get(conversation_id, 0) + 1
        self._turns[conversation_id] = turn
        height, width = image.shape[:2]
        parts = [] if "nothing" in instruction.lower() else [p for p in instruction.split(" and ") if p.strip()]
        masks = []
        for index in range(len(parts)):
            mask = np.zeros((height, width), dtype=bool)
            mask[index * height // len(parts):(index + 1) * height // len(parts), :] = True
            masks.append(mask)
        text = (f"turn {turn}: {len(masks)} region(s) for {instruction!r} "
                f"on a {width}x{height} frame with mean {float(image.mean()):.1f}")
        return EngineOutput(masks=masks, scores=[1.0] * len(masks), text=text)

    def reset(self, conversation_id: str | None = None) -> None:
        if conversation_id is None:
            self._turns.clear()
        else:
            self._turns.pop(conversation_id, None)

    def _wait(self, seconds: float) -> None:
        """Sleep, interrupted by cancel() (raises) or unload()."""
        deadline = time.monotonic() + seconds
        while not self._unloaded.is_set() and time.monotonic() < deadline:
            if self._cancelled.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
                raise EngineError("cancelled")

    def clear_caches(self) -> None:
        self.cache_clears += 1

    def cancel(self) -> None:
        self._cancelled.set()

    def unload(self) -> None:
        self.loaded = False
        self._turns.clear()
        self._unloaded.set()
