"""Semantic requests between ROS callbacks and the engine thread (no ROS).

Like ``RequestWorker`` for instructions: callbacks ``submit`` a SemanticJob and
return; one thread pairs it with a frame, decodes it, and runs the segmenter on
the engine's single thread through the shared ``EngineRunner`` (the engine is not
thread-safe), within ``inference_timeout``. Every job is answered exactly once
through ``on_answer``. Periodic jobs are never queued: a tick is skipped while
the previous periodic job is still waiting or running.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from lisa_ros.core.engine import EngineOutOfMemory
from lisa_ros.core.engine_runner import CallTimeout, CallTimes, EngineRunner
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


def semantic_config(values: Mapping[str, Any]) -> tuple[SemanticOptions | None, float, list[str]]:
    """(options, rate_hz, problems) from the node's ``semantic.*`` parameter values (None = default).

    Every problem is named with its parameter, the description file is parsed now (configure
    fails naming its line), and a periodic mode without categories is refused.
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
    if options is not None and options.descriptions_file:
        try:
            load_descriptions(options.descriptions_file)
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
    return options, float(rate_hz), problems


class SemanticWorker:
    """Bounded queue + one thread; the segmenter runs on ``runner``'s engine thread."""

    def __init__(self, segmenter, runner: EngineRunner, frames: LatestFrame, decode: Callable[[Frame], np.ndarray],
                 on_answer: Callable[[SemanticAnswer], None], settings: SemanticSettings,
                 logger: logging.Logger | Any | None = None) -> None:
        self._segmenter = segmenter
        self._runner = runner
        self._frames = frames
        self._decode = decode
        self._on_answer = on_answer
        self.settings = settings
        self._log = logger or logging.getLogger(__name__)
        self._queue: collections.deque[SemanticJob] = collections.deque()
        self._condition = threading.Condition()
        self._answered_lock = threading.Lock()
        self._stopping = threading.Event()
        self._current: SemanticJob | None = None
        self._thread = threading.Thread(target=self._loop, name="lisa-semantic", daemon=True)
        self._thread.start()

    # -- called from ROS callbacks (cheap) ----------------------------------------------
    def submit(self, job: SemanticJob) -> bool:
        """Queue a job or answer it at once; False (and no answer) for a periodic tick skipped because
        the previous one has not finished."""
        with self._condition:
            if job.periodic and any(j.periodic for j in [*self._queue, self._current] if j is not None):
                return False
        if self._stopping.is_set():
            self._refuse(job, Status.NOT_READY, "node is not active; activate it (lifecycle) and retry")
            return True
        names = self._categories(job)
        if isinstance(names, str):
            self._refuse(job, Status.INVALID_INSTRUCTION, names)
            return True
        job.names = names
        if job.frame is None:
            refusal = self._pair(job)
            if refusal is not None:
                self._refuse(job, *refusal)
                return True
        with self._condition:
            full = len(self._queue) >= self.settings.max_queue
            if not full:
                self._queue.append(job)
                self._condition.notify_all()
        if full:
            self._refuse(job, Status.BUSY, f"request queue full ({self.settings.max_queue} waiting); slow down or "
                                           "raise max_queue", frame=job.frame)
        return True

    def stop(self, reason: str) -> None:
        """Answer everything pending with NOT_READY and end the thread (does not wait for the engine)."""
        self._stopping.set()
        with self._condition:
            pending = list(self._queue)
            self._queue.clear()
            current = self._current
            self._condition.notify_all()
        for job in pending + ([current] if current is not None else []):
            self._refuse(job, Status.NOT_READY, f"{reason}; request not processed", frame=job.frame)
        self._thread.join(timeout=1.0)

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

    def _pair(self, job: SemanticJob) -> tuple[Status, str] | None:
        frame = self._frames.take_latest()
        if frame is None:
            return Status.NO_IMAGE, (f"no image received yet on {self.settings.image_topic}; check the camera "
                                     "topic name (remap 'image') and its QoS, or pass an image")
        age = job.received - frame.received
        if self.settings.max_image_age > 0 and age > self.settings.max_image_age:
            return Status.STALE_IMAGE, (f"newest image on {self.settings.image_topic} was received {age:.2f} s ago, "
                                        f"more than max_image_age = {self.settings.max_image_age} s")
        job.frame = frame
        return None

    # -- worker thread --------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._stopping.is_set():
                    self._condition.wait()
                if self._stopping.is_set():
                    return
                job = self._current = self._queue.popleft()
            try:
                self._process(job)
            except Exception as error:  # never leave a job unanswered
                self._log.error(f"semantic request {job.request_id}: unexpected error {error!r}")
                self._refuse(job, Status.ENGINE_ERROR, f"internal error: {error!r}", frame=job.frame)
            finally:
                with self._condition:
                    self._current = None

    def _process(self, job: SemanticJob) -> None:
        frame = job.frame
        try:
            image = self._decode(frame)
        except ImageError as error:
            self._refuse(job, Status.INVALID_IMAGE, str(error), frame=frame)
            return
        times = CallTimes()
        try:
            result = self._runner.call(
                lambda: self._segmenter.segment(image, job.names, frame_key=frame.key),
                self.settings.inference_timeout or None, self._stopping, cancel=self._segmenter.cancel, times=times)
        except CallTimeout:
            if self._stopping.is_set():
                return  # stop() answers it
            waited = "" if times.started is not None else " (the engine was still busy with an earlier call)"
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
        started = times.started if times.started is not None else time.monotonic()
        ended = times.ended if times.ended is not None else time.monotonic()
        self._finish(SemanticAnswer(job, result, frame, image, queue_wait_ms=1000.0 * (started - job.received),
                                    inference_ms=1000.0 * max(0.0, ended - started) if times.started else 0.0))

    def _failure(self, job: SemanticJob, status: Status, message: str, image: np.ndarray | None = None):
        shape = image.shape[:2] if image is not None else (0, 0)
        return SemanticResult.failure(status, message, job.names, shape, getattr(self._segmenter, "model_id", ""))

    def _refuse(self, job: SemanticJob, status: Status, message: str, *, frame: Frame | None = None) -> None:
        result = SemanticResult.failure(status, message, job.names)
        self._finish(SemanticAnswer(job, result, frame, queue_wait_ms=1000.0 * (time.monotonic() - job.received)))

    def _finish(self, answer: SemanticAnswer) -> None:
        with self._answered_lock:
            if answer.job.answered:
                return
            answer.job.answered = True
        try:
            self._on_answer(answer)
        except Exception as error:
            self._log.error(f"semantic request {answer.job.request_id}: publishing the answer failed: {error!r}")


def _result_problem(result: Any, shape: tuple[int, int], count: int) -> str | None:
    if not isinstance(result, SemanticResult):
        return f"expected SemanticResult, got {type(result).__name__}"
    if result.label.shape != tuple(shape):
        return f"label image is {result.label.shape}, the frame is {tuple(shape)}"
    if len(result.label_names) != count:
        return f"{len(result.label_names)} names for {count} categories"
    return None
