"""Rolling latency and outcome statistics for /diagnostics (no ROS)."""
from __future__ import annotations

import collections
import threading

import numpy as np

from lisa_ros.core.types import Status


class RequestStats:
    """Keeps the last ``window`` latencies per kind and counts outcomes by status."""

    def __init__(self, window: int = 200) -> None:
        self._lock = threading.Lock()
        self._latencies: dict[str, collections.deque[float]] = collections.defaultdict(
            lambda: collections.deque(maxlen=window)
        )
        self.status_counts: collections.Counter[Status] = collections.Counter()

    def record(self, status: Status, **latencies_ms: float) -> None:
        with self._lock:
            self.status_counts[status] += 1
            if status in (Status.OK, Status.NOT_FOUND):
                for kind, value in latencies_ms.items():
                    self._latencies[kind].append(value)

    def percentiles(self, kind: str, quantiles=(50, 90, 99)) -> dict[int, float] | None:
        """{50: p50_ms, 90: ..., 99: ...} over the window, or None before any answer."""
        with self._lock:
            values = list(self._latencies.get(kind, ()))
        if not values:
            return None
        return {q: float(v) for q, v in zip(quantiles, np.percentile(values, quantiles))}

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {status.name: count for status, count in sorted(self.status_counts.items())}
