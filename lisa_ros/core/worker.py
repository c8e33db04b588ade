"""The request pipeline between ROS callbacks and the engine (no ROS).

Callbacks never run inference: they build a Request and ``submit`` it. One
worker thread pairs each request with a frame, decodes it, and calls the
engine through an EngineRunner, which enforces ``inference_timeout``. Every
submitted request is answered exactly once through ``on_answer``: with a result,
or with a status that explains why not (BUSY, NO_IMAGE, TIMEOUT, ...).
Request and Answer live in ``core.types``, the EngineRunner in ``core.engine_runner``.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from lisa_ros.core.bounded_worker import BoundedQueueWorker, deliver_once
from lisa_ros.core.engine import Engine, EngineOutOfMemory, InstructionTooLong
from lisa_ros.core.engine_runner import CallTimeout, EngineRunner, EngineTime
from lisa_ros.core.frames import Frame, LatestFrame
from lisa_ros.core.image import ImageError
from lisa_ros.core.types import Answer, EngineOutput, PairingPolicy, Progress, Request, Stage, Status


@dataclasses.dataclass
class WorkerSettings:
    pairing_policy: PairingPolicy = PairingPolicy.NEWEST
    max_queue: int = 4
    max_image_age: float = 0.0  # s; 0 = no limit
    next_frame_timeout: float = 2.0  # s, for PairingPolicy.NEXT
    inference_timeout: float = 0.0  # s; 0 = no limit
    max_masks: int = 16  # the highest-scoring are kept
    min_mask_score: float = 0.0  # masks scoring below it are dropped; 0 = off
    image_topic: str = "image"  # for messages only


class RequestWorker(BoundedQueueWorker[Request]):
    """Instructions through the bounded queue: paired with a frame, run on the engine, answered exactly once."""

    def __init__(
        self,
        engine: Engine,
        runner: EngineRunner,
        frames: LatestFrame,
        decode: Callable[[Frame], np.ndarray],
        on_answer: Callable[[Answer], None],
        settings: WorkerSettings,
        logger: logging.Logger | Any | None = None,
    ) -> None:
        self._engine = engine
        self._runner = runner
        super().__init__(frames, decode, on_answer, settings, logger, "lisa-worker")

    # -- called from ROS callbacks (cheap, never blocks on inference) ---------
    def submit(self, request: Request) -> None:
        """Queue a request, or answer it at once when it cannot be queued."""
        if request.error is not None:
            self._finish(request, *request.error)
            return
        if request.cancelled.is_set():
            self._finish(request, Status.CANCELLED, "cancelled before it was queued", frame=request.frame)
            return
        if self._refused_while_stopping(request):
            return
        if request.frame is None:
            if (request.pairing_policy or self.settings.pairing_policy) is PairingPolicy.NEXT:
                request.wait_after_seq = self._frames.seq
            elif not self._pair_newest(request, stale_hint="; is the camera still publishing?"):
                return
        self._enqueue(request)

    def cancel(self, request: Request) -> None:
        """A queued request leaves the queue and is answered CANCELLED; the running one's engine call is
        cancelled (Engine.cancel) and it is answered CANCELLED; the next request runs normally."""
        request.cancelled.set()
        if self._dequeue(request):
            self._finish(request, Status.CANCELLED, "cancelled while queued", frame=request.frame)
            self._report_positions()

    def _queued_at(self, request: Request, position: int) -> None:
        _report(request, Progress(Stage.QUEUED, queue_position=position))

    # -- worker thread ----------------------------------------------------------
    def _process(self, request: Request) -> None:
        frame = request.frame
        if frame is None:
            frame = self._frames.wait_newer(
                request.wait_after_seq or 0, self.settings.next_frame_timeout, request.cancelled
            )
            if request.cancelled.is_set():
                self._cancelled(request, frame)
                return
            if frame is None:
                self._finish(request, Status.NO_IMAGE, (
                    f"no new image on {self.settings.image_topic} within next_frame_timeout = "
                    f"{self.settings.next_frame_timeout} s after the instruction (pairing_policy 'next')"
                ))
                return
        _report(request, Progress(Stage.ENCODING))
        try:
            image = self._decode(frame)
        except ImageError as error:
            self._finish(request, Status.INVALID_IMAGE, str(error), frame=frame)
            return
        if self._runner.busy_with_abandoned_call:
            self._log.warning("engine still busy with a cancelled or timed-out call; this request waits behind it")
        timeout = self.settings.inference_timeout or None
        engine_time = EngineTime()

        def run(fn: Callable[[], Any]) -> Any:
            return self._runner.call(fn, timeout, request.cancelled, cancel=lambda: self._engine.cancel(),
                                     times=engine_time.new_call())

        def finish(status: Status, message: str, **kwargs) -> None:
            # Queue wait runs until the engine starts this request (after any call still running before
            # it); inference is this request's own engine time.
            self._finish(request, status, message, frame=frame, image=image,
                         started=engine_time.started or time.monotonic(), engine_ms=engine_time.ran_ms(), **kwargs)

        try:
            if request.reset_conversation:
                run(lambda: self._engine.reset(request.conversation_id))
            output = run(lambda: self._engine.segment(
                image, request.instruction, frame_key=frame.key, conversation_id=request.conversation_id,
                max_masks=self.settings.max_masks,
                progress=None if request.progress is None else lambda progress: _report(request, progress)))
        except CallTimeout:
            if self._stopping.is_set():
                return  # stop() answers it
            if request.cancelled.is_set():
                self._cancelled(request, frame, image)
                return
            self._runner.post(self._engine.clear_caches)
            if engine_time.started is None:
                finish(Status.TIMEOUT, (
                    f"the engine was still busy with an earlier (cancelled) call for all of inference_timeout = "
                    f"{self.settings.inference_timeout} s; caches cleared. Retry, or raise inference_timeout"))
            else:
                finish(Status.TIMEOUT, (
                    f"inference took longer than inference_timeout = {self.settings.inference_timeout} s; "
                    "caches cleared. Use a faster precision/device or raise inference_timeout"))
            return
        except EngineOutOfMemory as error:
            self._runner.post(self._engine.clear_caches)
            finish(Status.OUT_OF_MEMORY, f"out of memory, caches cleared: {error}")
            return
        except InstructionTooLong as error:
            finish(Status.INVALID_INSTRUCTION, str(error))
            return
        except Exception as error:
            finish(Status.ENGINE_ERROR, f"engine error: {type(error).__name__}: {error}")
            return
        problem = _output_problem(output, image.shape[:2], self.settings.max_masks)
        if problem is not None:
            finish(Status.ENGINE_ERROR, f"engine returned an unusable result: {problem}")
            return
        output, below = drop_low_scores(output, self.settings.min_mask_score)
        finish(Status.OK if output.found else Status.NOT_FOUND, self._message(output, below), output=output)

    def _message(self, output: EngineOutput, below: list[float]) -> str:
        """What the answer's status_message says about its masks: how many, and which rules dropped some."""
        threshold = self.settings.min_mask_score
        if not output.found:
            if below:
                best = _shown_below(max(below), threshold)
                return f"best mask score {best} is below min_mask_score {threshold:g}: refused"
            return "the model found nothing to segment"
        message = f"{len(output.masks)} mask(s)"
        if output.masks_dropped:
            message = (f"{len(output.masks)} of {len(output.masks) + output.masks_dropped} masks kept: max_masks = "
                       f"{self.settings.max_masks} keeps the highest-scoring; raise it for more")
        if below:
            message += (f"; {len(below)} more scoring below min_mask_score {threshold:g} dropped (best "
                        f"{_shown_below(max(below), threshold)})")
        return message

    def _cancelled(self, request: Request, frame: Frame | None, image: np.ndarray | None = None) -> None:
        if not self._stopping.is_set():  # stop() answers NOT_READY
            self._finish(request, Status.CANCELLED, "cancelled while running; the engine call was stopped",
                         frame=frame, image=image)

    def _refuse(self, request: Request, status: Status, message: str, *, frame: Frame | None = None) -> None:
        self._finish(request, status, message, frame=frame)

    def _finish(self, request: Request, status: Status, message: str, **details: Any) -> None:
        answer_request(request, status, message, self._on_answer, self._log, **details)


def answer_request(request: Request, status: Status, message: str, on_answer: Callable[[Answer], None],
                   log: logging.Logger | Any, **details: Any) -> None:
    """The one way a Request is answered: ``answer_of`` it now, through the exactly-once guard (``deliver_once``).

    The worker answers through it, and so does the node when it refuses a request with no worker running.
    """
    deliver_once(request, answer_of(request, status, message, **details), on_answer, log)


def answer_of(
    request: Request,
    status: Status,
    message: str,
    *,
    frame: Frame | None = None,
    image: np.ndarray | None = None,
    output: EngineOutput | None = None,
    started: float | None = None,
    engine_ms: float | None = None,
) -> Answer:
    """The answer to ``request`` as of now.

    started: when the engine started on the request (the end of its queue wait; default: now);
    engine_ms: the request's own engine time (default: none).
    """
    started = started if started is not None else time.monotonic()
    return Answer(request=request, status=status, message=message, frame=frame, image=image, output=output,
                  queue_wait_ms=1000.0 * (started - request.received), inference_ms=engine_ms or 0.0)


def drop_low_scores(output: EngineOutput, min_mask_score: float) -> tuple[EngineOutput, list[float]]:
    """``output`` without its masks scoring below ``min_mask_score`` (0 = off), and the dropped masks' scores.

    LISA answers [SEG] even when the target is absent; SAM's IoU prediction (the score) is then usually low, and a
    grasping node must not act on such a mask. ``lisa-ros eval`` recommends a threshold from labelled negatives.
    A NaN score passes no threshold. The text stays the model's: only what is published as masks changes.
    """
    if min_mask_score <= 0:
        return output, []
    passes = [score >= min_mask_score for score in output.scores]
    if all(passes):
        return output, []
    kept = [index for index, passed in enumerate(passes) if passed]
    below = [score for score, passed in zip(output.scores, passes, strict=True) if not passed]
    return dataclasses.replace(output, masks=[output.masks[i] for i in kept],
                               scores=[output.scores[i] for i in kept]), below


def _shown_below(score: float, threshold: float) -> str:
    """``score`` with the fewest decimals (2 or more) that still read as below ``threshold`` (0.4996 is not "0.50")."""
    for decimals in range(2, 7):
        if float(text := f"{score:.{decimals}f}") < threshold:
            return text
    return repr(score)


def _report(request: Request, progress: Progress) -> None:
    """Until the request is answered (a cancelled call may still be generating): never raises."""
    if request.progress is not None and not request.answered:
        try:
            request.progress(progress)
        except Exception as error:  # feedback is best effort; the answer must still come
            logging.getLogger(__name__).warning(f"request {request.request_id}: progress report failed: {error!r}")


def _output_problem(output: Any, shape: tuple[int, int], max_masks: int) -> str | None:
    """Why an engine's output cannot be published as-is (None when it can)."""
    if not isinstance(output, EngineOutput):
        return f"expected EngineOutput, got {type(output).__name__}"
    if len(output.scores) != len(output.masks):
        return f"{len(output.masks)} masks but {len(output.scores)} scores"
    if len(output.masks) > max_masks:  # the engine keeps the best (Engine.segment's max_masks)
        return f"{len(output.masks)} masks, more than max_masks = {max_masks}"
    for index, mask in enumerate(output.masks):
        if np.shape(mask) != tuple(shape):
            return f"mask {index} has shape {np.shape(mask)}, the image is {tuple(shape)}"
    if not isinstance(output.text, str):
        return f"text is {type(output.text).__name__}, not str"
    return None
