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
