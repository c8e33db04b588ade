"""The small interface every segmentation engine implements.

The node only talks to this interface, so the model can be swapped (LISA at any
precision, or the deterministic plumbing engine used to test the node) without
touching ROS code.
"""
from __future__ import annotations

import abc
import importlib
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np

from lisa_ros.core.types import EngineOutput, ProgressCallback


class EngineError(RuntimeError):
    """An engine failed for a reason the user can act on (message says how)."""


class EngineOutOfMemory(EngineError):
    """The accelerator ran out of memory; caches have been cleared."""


class InstructionTooLong(EngineError):
    """The instruction does not fit the model's context: the request is at fault, not the engine."""


class Engine(abc.ABC):
    """(RGB image, instruction, conversation) -> masks, scores, explanation.

    Engines are used from one worker thread at a time; they need not be
    thread-safe. ``frame_key`` names the frame (e.g. stamp + frame_id) so an
    engine may cache per-frame work (SAM's image embedding) across instructions.
    Two different images may share a key (an edited image resent with its header,
    a camera with a coarse clock): an engine that caches checks the pixels on a hit.
    """

    model_id: str = ""

    @abc.abstractmethod
    def load(self) -> None:
        """Load weights. Raises EngineError with an actionable message."""

    @abc.abstractmethod
    def segment(
        self,
        image: np.ndarray,
        instruction: str,
        *,
        frame_key: Hashable,
        conversation_id: str = "default",
        progress: ProgressCallback | None = None,
        max_masks: int | None = None,
    ) -> EngineOutput:
        """image: (height, width, 3) uint8 RGB. Raises EngineError / EngineOutOfMemory.

        ``max_masks``: at most this many masks (all when None), those ``lisa_ros.core.masks.best_mask_indices``
        keeps, in the answer's order; ``masks_dropped`` says how many more there were. An engine applies it
        before building full-size masks, so their memory does not grow with the answer.

        ``progress``, called on this thread: ``Stage.GENERATING`` after each generated token
        (``tokens`` 1, 2, ..., n; ``partial_text`` a prefix of the output's text, all of it at n),
        then ``Stage.DECODING`` when masks will be decoded. The caller's callback must not raise
        (``RequestWorker`` passes one that never does): an exception from it propagates.
        """

    @abc.abstractmethod
    def reset(self, conversation_id: str | None = None) -> None:
        """Forget a conversation's history (all conversations when None)."""

    @abc.abstractmethod
    def unload(self) -> None:
        """Release the model and every cache, GPU memory included."""

    def clear_caches(self) -> None:  # noqa: B027 (optional: engines without caches keep this no-op)
        """Drop per-frame caches (after an OOM or a timeout). Default: nothing."""

    def cancel(self) -> None:  # noqa: B027 (optional: best effort, an engine may not be able to stop)
        """Ask a running ``segment`` to return early (it may raise); its result is discarded.

        Called from another thread when a call overran ``inference_timeout``, so the
        next request need not wait behind it; must be thread-safe. Best effort
        (e.g. LISA checks a flag between generated tokens). Default: nothing.
        """

    def diagnostics(self) -> dict[str, str]:
        """What the loaded engine runs beyond ``model_id``, for /diagnostics (LISA: its adapter). Default: nothing."""
        return {}

    def memory_stats(self) -> dict[str, float]:
        """Accelerator memory figures for diagnostics, e.g. {"gpu_allocated_mb": ...}."""
        return {}

    def load_stats(self) -> dict[str, float]:
        """What the last ``load`` took, for diagnostics, e.g. {"load_s": ..., "decode_compile_s": ...}."""
        return {}


# Engine type -> "module:Class", imported on first use: the core names its engines but never imports
# them (lisa_ros.model imports the core, not the other way round), and the plumbing engine needs no torch.
ENGINE_CLASSES = {
    "lisa": "lisa_ros.model.engine:LisaEngine",
    "plumbing": "lisa_ros.core.plumbing_engine:PlumbingEngine",
}
ENGINE_TYPES = tuple(ENGINE_CLASSES)


def create_engine(engine_type: str, options: Mapping[str, Any]) -> Engine:
    """Build (but do not load) an engine from its type name and options.

    Raises ValueError naming the bad option (ImportError when the engine's requirements are missing).
    """
    if engine_type not in ENGINE_CLASSES:
        raise ValueError(f"unknown engine type {engine_type!r}; expected one of {ENGINE_TYPES}")
    module_name, _, class_name = ENGINE_CLASSES[engine_type].partition(":")
    engine_class = getattr(importlib.import_module(module_name), class_name)
    return engine_class.from_options(options)
