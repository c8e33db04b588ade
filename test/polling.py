"""Polling with a deadline, shared by test/conftest.py and the reliability suite's rel_support."""
import time

import pytest


def wait_for(condition, timeout: float, what: str = "condition", interval: float = 0.01):
    """Poll ``condition()`` until truthy (returned) or fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def resend_until_answered(send, timeout: float, resend_every: float, forget=None):
    """A request's future, resent every ``resend_every`` s until one is done (returned) or ``timeout`` s pass
    (None). For requests without side effects: one sent before DDS has matched the reply path goes unanswered,
    even after wait_for_service / wait_for_server. ``forget(future)`` drops an unanswered one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        future = send()
        attempt_deadline = min(deadline, time.monotonic() + resend_every)
        while not future.done() and time.monotonic() < attempt_deadline:
            time.sleep(0.01)
        if future.done():
            return future
        if forget is not None:
            forget(future)
    return None
