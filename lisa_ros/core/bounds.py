"""Numeric ranges, each declared once beside what it limits, and checked with one wording (no ROS).

A bound is (type, minimum, maximum or None, strict minimum). ``DepthOptions`` and
``TrackingOptions`` own theirs; the node's parameter table (``config.BOUNDS``) takes the
``depth.*``/``tracking.*`` entries from them, so configure, ``ros2 param describe`` and the
option classes agree.
"""
from __future__ import annotations

import array
from typing import Any

import numpy as np

Bound = tuple[type, float, float | None, bool]


def _plain(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic, array.array)):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def shown(value: Any) -> str:
    """``value`` as a params file would write it: numpy scalars and arrays, and the ``array('q', ...)`` rclpy
    gives for a list set through ``ros2 param set``, as plain numbers and lists (not ``np.float64(0.5)``)."""
    return repr(_plain(value))


def range_problem(name: str, value: float, bound: Bound) -> str | None:
    """Why ``value`` is outside ``bound`` (None when inside); the type is the caller's to check."""
    _, minimum, maximum, strict = bound
    if value < minimum or (strict and value == minimum) or (maximum is not None and value > maximum):
        lower = f"> {minimum}" if strict else f">= {minimum}"
        upper = "" if maximum is None else f" and <= {maximum}"
        return f"{name} must be {lower}{upper}, got {shown(value)}"
    return None
