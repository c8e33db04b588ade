"""A bounded queue served by one thread, for requests that each get exactly one answer (no ROS).

The request worker (instructions) and the semantic worker (label maps) are both one: callbacks
``submit`` and return; the thread takes the queue in order; a full queue answers BUSY; ``stop``
answers everything pending NOT_READY. ``deliver_once`` is the exactly-once guard every answer goes
through, the node's own refusals (no worker running) included.
"""
from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from lisa_ros.core.frames import Frame, LatestFrame
from lisa_ros.core.types import Status

NOT_ACTIVE = "node is not active; activate it (lifecycle) and retry"


class Queued(Protocol):
    """What the queue needs of a request."""

    request_id: str
    frame: Frame | None  # pinned (a service's image) or paired at arrival; None until then
    received: float  # time.monotonic() at reception
    answered: bool  # set once, by deliver_once
    cancelled: threading.Event  # set by stop for the running request: ends its wait or its engine call


Item = TypeVar("Item", bound=Queued)

_answer_lock = threading.Lock()


def deliver_once(item: Queued, answer: Any, on_answer: Callable[[Any], None], log: logging.Logger | Any) -> bool:
    """Hands ``answer`` to ``on_answer`` unless ``item`` was answered already (then False, nothing sent).

    The worker thread, cancel, stop and the node's refusals may race to answer one request: the first wins.
    ``on_answer`` raising is logged, never raised: the caller is a worker that must go on.
    """
    with _answer_lock:
        if item.answered:
            return False
        item.answered = True
    try:
        on_answer(answer)
    except Exception as error:
        log.error(f"request {item.request_id}: publishing the answer failed: {error!r}")
    return True


class BoundedQueueWorker(Generic[Item]):
    """The queue, its thread, pairing with the newest frame, BUSY and stop; subclasses say how to answer.

    Subclasses implement ``_process(item)`` (on the thread) and ``_refuse(item, status, message, frame=...)``
    (anywhere; it must answer through ``_deliver``), set their own fields, then call ``__init__``: it starts
    the thread. ``settings`` needs ``max_queue``, ``max_image_age`` and ``image_topic``; it may be replaced
    whole at any time (live parameters).
    """

    def __init__(self, frames: LatestFrame, decode: Callable[[Frame], np.ndarray], on_answer: Callable[[Any], None],
                 settings: Any, logger: logging.Logger | Any | None, thread_name: str) -> None:
        self._frames = frames
        self._decode = decode
        self._on_answer = on_answer
        self.settings = settings
        self._log = logger or logging.getLogger(type(self).__module__)
        self._queue: collections.deque[Item] = collections.deque()
        self._condition = threading.Condition()
        self._stopping = threading.Event()
        self._current: Item | None = None
        self._thread = threading.Thread(target=self._loop, name=thread_name, daemon=True)
        self._thread.start()

    def _process(self, item: Item) -> None:
        raise NotImplementedError

    def _refuse(self, item: Item, status: Status, message: str, *, frame: Frame | None = None) -> None:
        raise NotImplementedError

    def _queued_at(self, item: Item, position: int) -> None:
        """Told each queued item's position (1 = next) whenever the queue moves; nothing by default."""

    # -- from callbacks ---------------------------------------------------------------------
    @property
    def waiting(self) -> int:
        """Requests in the queue (not counting the running one): submit answers BUSY at max_queue."""
        with self._condition:
            return len(self._queue)

    @property
    def queue_depth(self) -> int:
        with self._condition:
            return len(self._queue) + (1 if self._current is not None else 0)

    def stop(self, reason: str = "node is deactivating") -> None:
        """Answer everything pending with NOT_READY and stop the thread (does not wait for the engine)."""
        self._stopping.set()
        with self._condition:
            pending = list(self._queue)
            self._queue.clear()
            current = self._current
            self._condition.notify_all()
        if current is not None:
            current.cancelled.set()  # ends its frame wait or engine call
        for item in pending + ([current] if current is not None else []):
            self._refuse_stopped(item, f"{reason}; request not processed")
        self._thread.join(timeout=1.0)

    def _refuse_stopped(self, item: Item, message: str) -> None:
        self._refuse(item, Status.NOT_READY, message)

    def _refused_while_stopping(self, item: Item) -> bool:
        """Answers NOT_READY (True) once ``stop`` has begun."""
        if self._stopping.is_set():
            self._refuse(item, Status.NOT_READY, NOT_ACTIVE)
            return True
        return False

    def _pair_newest(self, item: Item, *, no_image_hint: str = "", stale_hint: str = "") -> bool:
        """Pins the newest frame to ``item`` (True), or answers NO_IMAGE / STALE_IMAGE (False)."""
        frame = self._frames.take_latest()
        if frame is None:
            self._refuse(item, Status.NO_IMAGE, f"no image received yet on {self.settings.image_topic}; check the "
                                                f"camera topic name (remap 'image') and its QoS{no_image_hint}")
            return False
        age = item.received - frame.received
        if self.settings.max_image_age > 0 and age > self.settings.max_image_age:
            self._refuse(item, Status.STALE_IMAGE, (
                f"newest image on {self.settings.image_topic} was received {age:.2f} s ago, "
                f"more than max_image_age = {self.settings.max_image_age} s{stale_hint}"))
            return False
        item.frame = frame
        return True

    def _enqueue(self, item: Item) -> None:
        """Queue ``item``, or answer it BUSY when ``max_queue`` are waiting."""
        with self._condition:
            full = len(self._queue) >= self.settings.max_queue
            if not full:
                self._queue.append(item)
                self._condition.notify_all()
        if full:
            self._refuse(item, Status.BUSY, f"request queue full ({self.settings.max_queue} waiting); slow down or "
                                            "raise max_queue", frame=item.frame)
        else:
            self._report_positions()

    def _dequeue(self, item: Item) -> bool:
        """Takes ``item`` out of the queue (True), or False when it is not queued (running or answered)."""
        with self._condition:
            queued = item in self._queue
            if queued:
                self._queue.remove(item)
        return queued

    def _pending(self) -> list[Item]:
        """The queued items and the running one."""
        with self._condition:
            return [*self._queue, *([self._current] if self._current is not None else [])]

    def _report_positions(self) -> None:
        with self._condition:
            queued = list(self._queue)
        for position, item in enumerate(queued, start=1):
            self._queued_at(item, position)

    def _deliver(self, item: Item, answer: Any) -> None:
        deliver_once(item, answer, self._on_answer, self._log)

    # -- the thread -------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._stopping.is_set():
                    self._condition.wait()
                if self._stopping.is_set():
                    return
                item = self._current = self._queue.popleft()
            self._report_positions()
            try:
                self._process(item)
            except Exception as error:  # never let the thread die with a request unanswered
                self._log.error(f"request {item.request_id}: unexpected error {error!r}")
                self._refuse(item, Status.ENGINE_ERROR, f"internal error: {error!r}", frame=item.frame)
            finally:
                with self._condition:
                    self._current = None
