"""Semantic requests between ROS callbacks and the engine thread (no ROS).

Like ``RequestWorker`` for instructions, on the same ``BoundedQueueWorker``: callbacks
``submit`` a SemanticJob and return; one thread pairs it with a frame, decodes it, and runs the segmenter on
the engine's single thread through the shared ``EngineRunner`` (the engine is not
thread-safe), within ``inference_timeout``. Every job is answered exactly once
through ``on_answer``. Periodic jobs are never queued: a tick is skipped while
the previous periodic job is still waiting or running.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from lisa_ros.core.bounded_worker import BoundedQueueWorker
from lisa_ros.core.engine import EngineOutOfMemory
from lisa_ros.core.engine_runner import CallTimeout, EngineRunner, EngineTime
from lisa_ros.core.frames import Frame, LatestFrame
from lisa_ros.core.image import ImageError
from lisa_ros.core.semantic import (
    CategoryError,
    SemanticOptions,
    SemanticResult,
    load_descriptions,
    validate_categories,
)
from lisa_ros.core.types import Status


@dataclasses.dataclass
class SemanticJob:
    """One label-map request. ``categories`` None = the configured list; ``frame`` None = the newest."""

    categories: Sequence[str] | None = None
    frame: Frame | None = None
    names: list[str] = dataclasses.field(default_factory=list)  # the validated list, once checked
    periodic: bool = False
    request_id: str = ""
    context: Any = None  # opaque for the submitter (a service call's future)
    received: float = dataclasses.field(default_factory=time.monotonic)
    answered: bool = dataclasses.field(default=False, repr=False)
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event, repr=False)  # set by stop


@dataclasses.dataclass
class SemanticAnswer:
    job: SemanticJob
    result: SemanticResult
    frame: Frame | None = None
    image: np.ndarray | None = None  # the decoded RGB frame the segmenter saw
    queue_wait_ms: float = 0.0
    inference_ms: float = 0.0


@dataclasses.dataclass
class SemanticSettings:
    categories: tuple[str, ...] = ()  # the configured list (already validated)
    max_categories: int = 1000
    max_queue: int = 4
    max_image_age: float = 0.0  # s; 0 = no limit
    inference_timeout: float = 0.0  # s; 0 = no limit
    image_topic: str = "image"  # for messages only


PARAMETER_PREFIX = "semantic."


@dataclasses.dataclass
class SemanticConfig:
    """What configure read from the ``semantic.*`` parameters (``problems`` empty when all are usable)."""

    options: SemanticOptions | None  # None only with problems
    descriptions: dict[str, str]  # the parsed descriptions_file ({category_key: text}); {} without one
    rate_hz: float
    problems: list[str]


def semantic_config(values: Mapping[str, Any]) -> SemanticConfig:
    """The node's ``semantic.*`` parameter values (None = default), checked.

    Every problem is named with its parameter, and a periodic mode without categories is
    refused. The description file is parsed here, once: configure fails naming its line,
    and what activate hands the segmenter is what was checked (the file may change since).
    """
    problems: list[str] = []
    options_values = {}
    rate_hz = values.get(PARAMETER_PREFIX + "rate_hz")
    for name, value in values.items():
        key = name.removeprefix(PARAMETER_PREFIX)
        if name.startswith(PARAMETER_PREFIX) and key != "rate_hz" and value is not None:
            options_values[key] = value
    categories = options_values.get("categories")
    if isinstance(categories, (list, tuple)) and all(c == "" for c in categories):
        options_values["categories"] = ()  # [] and [''] both mean "no default list" (ROS cannot type [])
    options = None
    try:
        options = SemanticOptions.from_mapping(options_values)
    except CategoryError as error:
        problems.append(f"semantic.* parameters: {error}")
    descriptions: dict[str, str] = {}
    if options is not None and options.descriptions_file:
        try:
            descriptions = load_descriptions(options.descriptions_file)
        except CategoryError as error:
            problems.append(f"semantic.descriptions_file: {error}")
    if rate_hz is None:
        rate_hz = 0.0
    if isinstance(rate_hz, bool) or not isinstance(rate_hz, (int, float)) or not 0 <= rate_hz <= 100:
        problems.append(f"semantic.rate_hz must be a number in 0..100 (0 = off), got {rate_hz!r}")
        rate_hz = 0.0
    elif rate_hz > 0 and options is not None and not options.categories:
        problems.append(f"semantic.rate_hz = {rate_hz} needs semantic.categories: the periodic mode labels the "
                        "newest frame with that list")
    return SemanticConfig(options, descriptions, float(rate_hz), problems)


class SemanticWorker(BoundedQueueWorker[SemanticJob]):
    """Label-map requests through the bounded queue; the segmenter runs on ``runner``'s engine thread."""

    def __init__(self, segmenter, runner: EngineRunner, frames: LatestFrame, decode: Callable[[Frame], np.ndarray],
                 on_answer: Callable[[SemanticAnswer], None], settings: SemanticSettings,
                 logger: logging.Logger | Any | None = None) -> None:
        self._segmenter = segmenter
        self._runner = runner
        super().__init__(frames, decode, on_answer, settings, logger, "lisa-semantic")

    # -- called from ROS callbacks (cheap) ----------------------------------------------
    def submit(self, job: SemanticJob) -> bool:
        """Queue a job or answer it at once; False (and no answer) for a periodic tick skipped because
        the previous one has not finished."""
        if job.periodic and any(pending.periodic for pending in self._pending()):
            return False
        if self._refused_while_stopping(job):
            return True
        names = self._categories(job)
        if isinstance(names, str):
            self._refuse(job, Status.INVALID_INSTRUCTION, names)
            return True
        job.names = names
        if job.frame is None and not self._pair_newest(job, no_image_hint=", or pass an image"):
            return True
        self._enqueue(job)
        return True

    def _categories(self, job: SemanticJob) -> list[str] | str:
        """The job's validated list, or the reason it cannot be used (checked before it waits for the engine)."""
        requested = job.categories if job.categories else self.settings.categories
        if not requested:
            return ("no categories: the request gave none and the semantic.categories parameter is empty. Fix: "
                    "pass categories (e.g. [floor, person]) or set semantic.categories")
        try:
            return validate_categories(list(requested), self.settings.max_categories)
        except CategoryError as error:
            return str(error)

    # -- worker thread --------------------------------------------------------------------
    def _process(self, job: SemanticJob) -> None:
        frame = job.frame
        try:
            image = self._decode(frame)
        except ImageError as error:
            self._refuse(job, Status.INVALID_IMAGE, str(error), frame=frame)
            return
        engine_time = EngineTime()
        try:
            result = self._runner.call(
                lambda: self._segmenter.segment(image, job.names, frame_key=frame.key),
                self.settings.inference_timeout or None, job.cancelled, cancel=self._segmenter.cancel,
                times=engine_time.new_call())
        except CallTimeout:
            if self._stopping.is_set():
                return  # stop() answers it
            waited = "" if engine_time.started is not None else " (the engine was still busy with an earlier call)"
            result = self._failure(job, Status.TIMEOUT, f"semantic request took longer than inference_timeout = "
                                   f"{self.settings.inference_timeout} s{waited}; cancelled. Use fewer categories, "
                                   "a faster device, or raise inference_timeout", image)
        except CategoryError as error:
            result = self._failure(job, Status.INVALID_INSTRUCTION, str(error), image)
        except EngineOutOfMemory as error:
            result = self._failure(job, Status.OUT_OF_MEMORY, f"out of memory, caches cleared: {error}", image)
        except Exception as error:
            result = self._failure(job, Status.ENGINE_ERROR, f"engine error: {type(error).__name__}: {error}", image)
        else:
            problem = _result_problem(result, image.shape[:2], len(job.names))
            if problem is not None:
                result = self._failure(job, Status.ENGINE_ERROR, f"unusable semantic result: {problem}", image)
        started = engine_time.started if engine_time.started is not None else time.monotonic()
        self._deliver(job, SemanticAnswer(job, result, frame, image, queue_wait_ms=1000.0 * (started - job.received),
                                          inference_ms=engine_time.ran_ms()))

    def _failure(self, job: SemanticJob, status: Status, message: str, image: np.ndarray | None = None):
        shape = image.shape[:2] if image is not None else (0, 0)
        return SemanticResult.failure(status, message, job.names, shape, getattr(self._segmenter, "model_id", ""))

    def _refuse(self, job: SemanticJob, status: Status, message: str, *, frame: Frame | None = None) -> None:
        self._deliver(job, refusal(job, status, message, frame=frame))

    def _refuse_stopped(self, job: SemanticJob, message: str) -> None:
        self._refuse(job, Status.NOT_READY, message, frame=job.frame)


def refusal(job: SemanticJob, status: Status, message: str, *, frame: Frame | None = None) -> SemanticAnswer:
    """The answer to a job that did not run: only a status and the reason."""
    result = SemanticResult.failure(status, message, job.names)
    return SemanticAnswer(job, result, frame, queue_wait_ms=1000.0 * (time.monotonic() - job.received))


def _result_problem(result: Any, shape: tuple[int, int], count: int) -> str | None:
    if not isinstance(result, SemanticResult):
        return f"expected SemanticResult, got {type(result).__name__}"
    if result.label.shape != tuple(shape):
        return f"label image is {result.label.shape}, the frame is {tuple(shape)}"
    if len(result.label_names) != count:
        return f"{len(result.label_names)} names for {count} categories"
    return None
