"""lisa_node with timing probes, for ``plumbing.py --breakdown``: where a request's time goes inside the node.

Runs the real ``lisa_ros.node.lisa_node.main`` after wrapping (not changing) a
few functions to timestamp each request's stages: instruction callback ->
worker start -> engine answer (``RequestWorker._finish``) -> result message built ->
every publish done (the node's ``total_ms`` is taken last); plus the
cost of each ``publish`` per topic and of the per-request log line. At exit it
writes medians to the JSON file named by ``LISA_BENCH_BREAKDOWN_OUT``.
The probes themselves add a few microseconds per stage.
"""
from __future__ import annotations

import atexit
import collections
import itertools
import json
import os
import statistics
import sys
import threading
import time

import rclpy.impl.rcutils_logger as rcutils_logger
import rclpy.publisher

from lisa_ros.core import worker
from lisa_ros.node import lisa_node, publishing

STAGES = ("callback", "worker_start", "engine_answered", "result_built", "published")
_marks: dict[str, dict[str, float]] = {}
_costs: dict[str, list[float]] = collections.defaultdict(list)
_lock = threading.Lock()


def _mark(key: str, stage: str) -> None:
    with _lock:
        _marks.setdefault(key, {})[stage] = time.perf_counter()


def _wrap(owner, name, before=None, after=None, cost=None):
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        if before:
            before(*args)
        start = time.perf_counter()
        value = original(*args, **kwargs)
        if cost:
            _costs[cost(*args)].append((time.perf_counter() - start) * 1000)
        if after:
            after(*args)
        return value

    setattr(owner, name, wrapper)


_wrap(lisa_node.LisaNode, "_on_instruction", before=lambda self, msg: _mark(msg.data, "callback"))
_wrap(worker.RequestWorker, "_process", before=lambda self, request: _mark(request.instruction, "worker_start"))
_wrap(worker.RequestWorker, "_finish", before=lambda self, request, *a: _mark(request.instruction, "engine_answered"))
_wrap(publishing, "answer_to_result", after=lambda answer, *a: _mark(answer.request.instruction, "result_built"))
_wrap(lisa_node.LisaNode, "_publish_answer", after=lambda self, answer: _mark(answer.request.instruction, "published"))
_wrap(rclpy.publisher.Publisher, "publish", cost=lambda self, msg: f"publish {self.topic_name.rsplit('/', 1)[-1]}")
_wrap(rcutils_logger.RcutilsLogger, "info", cost=lambda *a: "log line (info)")


def _report() -> None:
    path = os.environ.get("LISA_BENCH_BREAKDOWN_OUT")
    if not path:
        return
    complete = [m for m in _marks.values() if all(s in m for s in STAGES)]
    skip = int(os.environ.get("LISA_BENCH_BREAKDOWN_SKIP", "0"))
    complete = complete[skip:]
    stages = {f"{a} -> {b}": round(statistics.median((m[b] - m[a]) * 1000 for m in complete), 3)
              for a, b in itertools.pairwise(STAGES)} if complete else {}
    costs = {k: {"n": len(v), "median_ms": round(statistics.median(v), 3)} for k, v in _costs.items() if v}
    with open(path, "w") as out:
        json.dump({"requests": len(complete), "stage_medians_ms": stages, "call_costs": costs}, out, indent=2)


atexit.register(_report)

if __name__ == "__main__":
    sys.exit(lisa_node.main())
