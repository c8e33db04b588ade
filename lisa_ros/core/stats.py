"""Latency percentiles, and the rolling latency and outcome statistics of /diagnostics (no ROS).

``percentiles`` is the one definition of a percentile in the package: the node's
diagnostics, the replay's and the eval's summaries and the benchmarks use it.
"""
from __future__ import annotations

import collections
import threading
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from lisa_ros.core.types import Status


def percentiles(values: Iterable[float], quantiles: Sequence[float] = (50, 90, 99), *,
                method: str = "linear") -> dict[float, float] | None:
    """{q: value} for each quantile q in 0..100 (numpy's ``method``), or None without values.

    None rather than NaN: a summary before the first answer stays valid JSON and readable.
    """
    values = list(values)
    if not values:
        return None
    found = np.percentile(values, quantiles, method=method)
    return {q: float(v) for q, v in zip(quantiles, found, strict=True)}


def median_p95(values: Iterable[float], digits: int = 1) -> dict[str, float | None]:
    """{"median": ..., "p95": ...} rounded to ``digits``; both None without values (the tools' summaries)."""
    found = percentiles(values, (50, 95))
    if found is None:
        return {"median": None, "p95": None}
    return {"median": round(found[50], digits), "p95": round(found[95], digits)}


class RequestStats:
    """Keeps the last ``window`` latencies per kind and engine phase, and counts outcomes by status."""

    def __init__(self, window: int = 200) -> None:
        self._lock = threading.Lock()
        self._latencies: dict[str, collections.deque[float]] = collections.defaultdict(
            lambda: collections.deque(maxlen=window)
        )
        self._phases: dict[str, collections.deque[float]] = collections.defaultdict(
            lambda: collections.deque(maxlen=window)
        )
        self.status_counts: collections.Counter[Status] = collections.Counter()

    def record(self, status: Status, phases_ms: Mapping[str, float] | None = None, **latencies_ms: float) -> None:
        """phases_ms: the engine's per-phase times of this answer (``EngineOutput.timings_ms``)."""
        with self._lock:
            self.status_counts[status] += 1
            if status.answered:
                for kind, value in latencies_ms.items():
                    self._latencies[kind].append(value)
                for phase, value in (phases_ms or {}).items():
                    self._phases[phase].append(value)

    def phase_means(self) -> dict[str, float]:
        """{phase: mean ms} over the last ``window`` answers that ran that phase, in first-seen order."""
        with self._lock:
            return {phase: float(np.mean(values)) for phase, values in self._phases.items()}

    def percentiles(self, kind: str, quantiles=(50, 90, 99)) -> dict[int, float] | None:
        """{50: p50_ms, 90: ..., 99: ...} over the window, or None before any answer."""
        with self._lock:
            values = list(self._latencies.get(kind, ()))
        return percentiles(values, quantiles)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {status.name: count for status, count in sorted(self.status_counts.items())}
