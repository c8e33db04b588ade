"""A deterministic stand-in engine, for testing the node's plumbing only.

It does not understand images or language. Masks are horizontal bands, one per
part of the instruction separated by " and " (no mask when the instruction
contains "nothing"), so tests can predict them exactly. Options add a delay
(a slow engine) and fault injection triggered by words in the instruction, so
timeouts, out-of-memory and engine errors can be exercised end to end.
"""
from __future__ import annotations

import re
import threading
import time
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np

from lisa_ros.core import semantic as core
from lisa_ros.core.bounds import shown
from lisa_ros.core.engine import Engine, EngineError, EngineOutOfMemory
from lisa_ros.core.engine_options import LISA_OPTIONS, PLUMBING_OPTIONS
from lisa_ros.core.masks import best_mask_indices
from lisa_ros.core.types import EngineOutput, Progress, ProgressCallback, Stage, Status


class PlumbingEngine(Engine):
    """Options (all optional; ``PLUMBING_OPTIONS`` in ``lisa_ros.core.engine_options`` says what each does):
    a delay, fault injection by words in the instruction, a failing or slow load, the masks' score.
    LISA's options are accepted and ignored, so one config can switch engines.
    Its phases (``timings_ms``): delay (the injected delay or hang), generate (the text, word by word for
    ``progress``), masks (the bands), total.
    """

    def __init__(self, **options: Any) -> None:
        """options: checked values (``from_options`` checks them); the rest take their defaults."""
        values = {name: default for name, (default, _) in PLUMBING_OPTIONS.items()} | options
        self.delay_s, self.hang_s, self.load_delay_s = values["delay_s"], values["hang_s"], values["load_delay_s"]
        self.raise_on, self.hang_on, self.oom_on = values["raise_on"], values["hang_on"], values["oom_on"]
        self.load_error, self.mask_score = values["load_error"], values["mask_score"]
        self.model_id = "plumbing"
        self.loaded = False
        self._load_s: float | None = None
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
            if key in LISA_OPTIONS and key not in PLUMBING_OPTIONS:
                continue
            if key not in PLUMBING_OPTIONS:
                problems.append(f"unknown plumbing engine option {key!r}; known: {sorted(PLUMBING_OPTIONS)}")
                continue
            kind = type(PLUMBING_OPTIONS[key][0])
            try:
                kwargs[key] = kind(value)
            except (TypeError, ValueError):
                problems.append(f"plumbing engine option {key!r} must be {kind.__name__}, got {shown(value)}")
        if problems:
            raise ValueError("; ".join(problems))
        return cls(**kwargs)

    def load(self) -> None:
        start = time.perf_counter()
        self._unloaded.clear()
        self._cancelled.clear()
        if self.load_delay_s > 0:
            self._wait(self.load_delay_s)
        if self.load_error:
            raise EngineError(self.load_error)
        self.loaded = True
        self._load_s = time.perf_counter() - start

    def load_stats(self) -> dict[str, float]:
        return {"load_s": round(self._load_s, 3)} if self.loaded else {}

    def segment(self, image: np.ndarray, instruction: str, *, frame_key: Hashable,
                conversation_id: str = "default", progress: ProgressCallback | None = None,
                max_masks: int | None = None) -> EngineOutput:
        """Its answer is "generated" word by word for ``progress`` (one word = one token)."""
        if not self.loaded:
            raise EngineError("engine not loaded")
        self._cancelled.clear()
        self.segments_started += 1
        start = time.perf_counter()
        if self.raise_on and self.raise_on in instruction:
            raise EngineError(f"injected failure ({self.raise_on!r} in the instruction)")
        if self.oom_on and self.oom_on in instruction:
            raise EngineOutOfMemory(f"injected out-of-memory ({self.oom_on!r} in the instruction)")
        if self.hang_on and self.hang_on in instruction:
            self._wait(self.hang_s)
        if self.delay_s > 0:
            self._wait(self.delay_s)
        waited = time.perf_counter()
        turn = self._turns.get(conversation_id, 0) + 1
        height, width = image.shape[:2]
        parts = [] if "nothing" in instruction.lower() else [p for p in instruction.split(" and ") if p.strip()]
        text = (f"turn {turn}: {len(parts)} region(s) for {instruction!r} "
                f"on a {width}x{height} frame with mean {float(image.mean()):.1f}")
        if progress is not None:
            for tokens, word in enumerate(re.finditer(r"\S+", text), start=1):
                if self._cancelled.is_set():  # like LISA, a cancel ends it before the next token
                    raise EngineError("cancelled")
                progress(Progress(Stage.GENERATING, tokens=tokens, text=text[:word.end()]))
            if parts:
                progress(Progress(Stage.DECODING))
        self._turns[conversation_id] = turn  # a cancelled answer is no turn
        generated = time.perf_counter()
        masks = []
        for index in best_mask_indices([self.mask_score] * len(parts), max_masks):  # equal scores: the first parts
            mask = np.zeros((height, width), dtype=bool)
            mask[index * height // len(parts):(index + 1) * height // len(parts), :] = True
            masks.append(mask)
        done = time.perf_counter()
        timings = {"delay": (waited - start) * 1000, "generate": (generated - waited) * 1000,
                   "masks": (done - generated) * 1000, "total": (done - start) * 1000}
        return EngineOutput(masks=masks, scores=[self.mask_score] * len(masks), text=text, timings_ms=timings,
                            masks_dropped=len(parts) - len(masks))

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


class PlumbingSemanticSegmenter:
    """Semantic mode's stand-in on the plumbing engine, so the node's semantic plumbing is cheap to test.

    Category k of the N kept gets the k-th horizontal band of the frame; a category whose
    name contains "nothing" is filtered out. The engine's delay and fault words apply to
    the categories (e.g. a category containing ``hang_on`` hangs until cancelled).
    """

    def __init__(self, engine: PlumbingEngine, options) -> None:
        self.engine, self.options = engine, options
        self.model_id = engine.model_id

    def cancel(self) -> None:
        self.engine.cancel()

    def segment(self, image: np.ndarray, categories, *, frame_key: Hashable):
        names = core.validate_categories(list(categories or self.options.categories), self.options.max_categories)
        self.engine.segment(image, " and ".join(names), frame_key=frame_key)  # delay and fault injection
        kept = [i for i, name in enumerate(names) if "nothing" not in name.lower()]
        height, width = image.shape[:2]
        logits = np.full((len(kept), height, width), -1.0, np.float32)
        for band, _ in enumerate(kept):
            logits[band, band * height // len(kept):(band + 1) * height // len(kept)] = 1.0
        label = core.label_image(logits, [i + 1 for i in kept], len(names), self.options.label_threshold)
        filtered = [name for name in names if "nothing" in name.lower()]
        fractions = core.label_fractions(label, len(names))
        status = Status.OK if fractions.sum() > 0 else Status.NOT_FOUND
        return core.SemanticResult(
            label=label, label_ids=list(range(1, len(names) + 1)), label_names=names,
            scores=[1.0 if i in kept else 0.0 for i in range(len(names))], presence=[float("nan")] * len(names),
            fractions=fractions.tolist(), filtered_out=filtered, filtered_reasons=["plumbing: 'nothing' in the name"]
            * len(filtered), descriptions=[""] * len(names), description_sources=["none"] * len(names),
            timings_ms={"total": 0.0}, status=status, message=f"{len(kept)} of {len(names)} categories labelled "
            "(plumbing bands)", model_id=self.model_id)
