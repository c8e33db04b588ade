"""Numeric ranges, each declared once beside what it limits, and checked with one wording (no ROS).

A bound is (type, minimum, maximum or None, strict minimum). ``DepthOptions`` and
``TrackingOptions`` own theirs; the node's parameter table (``config.BOUNDS``) takes the
``depth.*``/``tracking.*`` entries from them, so configure, ``ros2 param describe`` and the
option classes agree.
"""
from __future__ import annotations

Bound = tuple[type, float, float | None, bool]


def range_problem(name: str, value: float, bound: Bound) -> str | None:
    """Why ``value`` is outside ``bound`` (None when inside); the type is the caller's to check."""
    _, minimum, maximum, strict = bound
    if value < minimum or (strict and value == minimum) or (maximum is not None and value > maximum):
        lower = f"> {minimum}" if strict else f">= {minimum}"
        upper = "" if maximum is None else f" and <= {maximum}"
        return f"{name} must be {lower}{upper}, got {value!r}"
    return None
