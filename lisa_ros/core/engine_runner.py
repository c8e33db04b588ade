"""The engine's single thread: engine calls run there one at a time, each within a time limit (no ROS).

The engine is not thread-safe; the request worker, the semantic worker and ``~/reset`` all
call it through one EngineRunner.
"""
from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

from lisa_ros.core.engine import EngineError


class CallTimeout(Exception):
    """An engine call did not finish within its time limit."""


@dataclasses.dataclass
class CallTimes:
    """When the engine thread started and ended one call (monotonic s; None until then)."""

    started: float | None = None
    ended: float | None = None


@dataclasses.dataclass(eq=False)
class _Call:
    fn: Callable[[], Any]
    must_run: bool = False  # run even if nobody waits for it (clear_caches)
    cancel: Callable[[], None] | None = None  # asks fn to return early (Engine.cancel)
    times: CallTimes = dataclasses.field(default_factory=CallTimes)
    abandoned: bool = False
    done: bool = False
    value: Any = None
    error: BaseException | None = None


class EngineRunner:
    """Runs engine calls one at a time on a daemon thread, with a time limit.

    A call that overruns, or whose requester stops waiting (deactivate), is abandoned:
    its ``cancel`` is called so the engine can return early, and its result is discarded.
    The engine is not thread-safe, so later calls queue behind it; while they wait they
    cancel it again (a cancel that lands just before the engine starts the call is
    dropped by design). Calls abandoned before they start are skipped. A daemon thread
    never blocks process exit.
    """

    def __init__(self, name: str = "lisa-engine") -> None:
        self._calls: collections.deque[_Call] = collections.deque()
        self._condition = threading.Condition()
        self._running: _Call | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def busy_with_abandoned_call(self) -> bool:
        with self._condition:
            return self._running is not None and self._running.abandoned

    def call(self, fn: Callable[[], Any], timeout: float | None, cancelled: threading.Event, *,
             cancel: Callable[[], None] | None = None, times: CallTimes | None = None) -> Any:
        """Run fn on the engine thread; raise CallTimeout after ``timeout`` s or when ``cancelled`` is set.

        ``cancel`` is called when this call is abandoned while running; ``times`` records when it ran.
        """
        call = _Call(fn, cancel=cancel, times=times if times is not None else CallTimes())
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            if self._closed:
                raise EngineError("the engine was unloaded")
            self._calls.append(call)
            self._condition.notify_all()
            while not call.done:
                remaining = None if deadline is None else deadline - time.monotonic()
                if cancelled.is_set() or (remaining is not None and remaining <= 0):
                    call.abandoned = True
                    if self._running is call:
                        self._cancel_running()
                    raise CallTimeout()
                if self._running is not None and self._running.abandoned:
                    self._cancel_running()  # this call waits behind it: end it as soon as it can
                self._condition.wait(0.05 if remaining is None else min(remaining, 0.05))
        if call.error is not None:
            raise call.error
        return call.value

    def _cancel_running(self) -> None:
        """Under the lock, so the cancel is for the call running now, never for the next one."""
        if self._running.cancel is not None:
            self._running.cancel()

    def post(self, fn: Callable[[], Any]) -> None:
        """Queue fn without waiting for it (e.g. clear_caches after a timeout)."""
        with self._condition:
            if not self._closed:
                self._calls.append(_Call(fn, must_run=True))
                self._condition.notify_all()

    def close(self) -> None:
        """Drop queued calls (their callers get an EngineError), cancel the running one, and end the
        thread after it (not waited for)."""
        with self._condition:
            self._closed = True
            for call in self._calls:
                call.error, call.done = EngineError("the engine was unloaded"), True
            self._calls.clear()
            if self._running is not None:
                self._running.abandoned = True
                self._cancel_running()
            self._condition.notify_all()

    def _loop(self) -> None:
        while True:
            with self._condition:
                while not self._calls and not self._closed:
                    self._condition.wait()
                if self._closed:
                    return
                call = self._calls.popleft()
                if call.abandoned and not call.must_run:
                    continue
                self._running = call
            call.times.started = time.monotonic()
            try:
                call.value = call.fn()
            except BaseException as error:  # handed to the caller, who classifies it
                call.error = error
            call.times.ended = time.monotonic()
            with self._condition:
                call.done = True
                self._running = None
                self._condition.notify_all()


class EngineTime:
    """One request's own engine calls (``times=new_call()`` for each): when the first started, and how long they ran."""

    def __init__(self) -> None:
        self.calls: list[CallTimes] = []

    def new_call(self) -> CallTimes:
        self.calls.append(CallTimes())
        return self.calls[-1]

    @property
    def started(self) -> float | None:
        return next((c.started for c in self.calls if c.started is not None), None)

    def ran_ms(self) -> float:
        now = time.monotonic()
        return 1000.0 * sum((c.ended or now) - c.started for c in self.calls if c.started is not None)
