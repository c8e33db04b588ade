"""qos_overrides values checked before rclpy creates an entity, each bad one named with what is valid.

rclpy's own errors name neither the parameter nor the valid values (``Unexpected QoS override for policy
`reliability`: `best-effort```), and some values ('unknown', a negative depth) fail inside rcl with only a C
source location. Every entity of lisa_node is checked here the same way, outputs and camera alike.
"""
from __future__ import annotations

import copy

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from lisa_ros.node.rclpy_internals import parameter_overrides

# The policies of QoSOverridingOptions.with_default_policies(), the ones lisa_node makes overridable.
_ENUM_POLICIES = {"history": HistoryPolicy, "reliability": ReliabilityPolicy}
MAX_DEPTH = 2**31 - 1  # rclpy refuses a deeper history with a TypeError


def entity_qos(profile: QoSProfile) -> QoSProfile:
    """A copy for one entity: rclpy applies qos_overrides to the profile it is given, in place."""
    return copy.copy(profile)


class QosOverrideError(ValueError):
    """Bad qos_overrides for an entity created at start-up: the node cannot start without it."""


def valid_values(policy: str) -> list[str]:
    """The spellings rclpy accepts for ``policy`` (it compares them case-insensitively)."""
    return [name.lower() for name in _ENUM_POLICIES[policy].__members__ if name != "UNKNOWN"]


def _value_problem(policy: str, value) -> str | None:
    if policy == "depth":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DEPTH:
            return f"must be an integer from 0 to {MAX_DEPTH}"
        return None
    if not isinstance(value, str) or value.lower() not in valid_values(policy):
        return f"must be one of {', '.join(valid_values(policy))}"
    return None


def qos_override_problems(node, entities: list[tuple[str, str]]) -> list[str]:
    """One sentence per bad ``qos_overrides.<topic>.<kind>.<policy>`` given to ``node`` (params file or -p).

    entities: (resolved topic name, 'publisher' or 'subscription'). QoS overrides are read-only, so the value
    the node started with is the one rclpy will apply.
    """
    overrides = parameter_overrides(node)
    problems = []
    for topic, kind in entities:
        for policy in ("history", "depth", "reliability"):
            name = f"qos_overrides.{topic}.{kind}.{policy}"
            given = overrides.get(name)
            if given is None:
                continue
            if problem := _value_problem(policy, given.value):
                problems.append(f"{name} is {given.value!r} but {problem} (QoS overrides are read-only: fix the "
                                "params file and restart lisa_node)")
    return problems
