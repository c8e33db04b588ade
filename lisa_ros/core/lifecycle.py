"""The node's state as users see it, and what a request refused in each state is told (no ROS).

The lifecycle's own labels (unconfigured, inactive, ...) do not say what to do next:
an unconfigured node may be loading, or have failed to load; a finalized one can
never answer again. Messages are built here so each state gives advice that can work.
"""
from __future__ import annotations

import enum


class NodeState(enum.Enum):
    UNCONFIGURED = "unconfigured"
    LOADING = "loading the model"
    INACTIVE = "inactive (model loaded)"
    ACTIVE = "active"
    FINALIZED = "finalized (lifecycle shutdown)"
    EXITING = "exiting"


def not_ready_message(state: NodeState, problem: str = "") -> str:
    """Why a request is answered NOT_READY in ``state``, and what would make the next one succeed.

    ``problem``: the reason the last transition failed, if it did.
    """
    if state is NodeState.UNCONFIGURED and problem:
        return f"node is unconfigured: {problem}; fix it, then configure and activate the node and retry"
    advice = {
        NodeState.UNCONFIGURED: "node is unconfigured (no model loaded); configure and activate it (auto_configure "
                                "and auto_activate, or the lifecycle change_state service) and retry",
        NodeState.LOADING: "node is still loading the model; retry once it is active",
        NodeState.INACTIVE: "node is inactive; activate it (auto_activate, or the lifecycle change_state service) "
                            "and retry",
        NodeState.ACTIVE: "node is active but not accepting requests yet; retry",
        NodeState.FINALIZED: "node was shut down through its lifecycle and cannot answer again; restart lisa_node",
        NodeState.EXITING: "node is exiting; restart lisa_node",
    }
    return advice[state]


def frozen_parameter_advice(state: NodeState) -> str:
    """How to change a parameter that is read when the model loads, from ``state`` (not unconfigured)."""
    then = "set the parameter (ros2 param set), configure and activate"
    advice = {
        NodeState.LOADING: "wait for the load to end (the node becomes inactive, or unconfigured if the load fails: "
                           f"then set it at once); once inactive, clean up (ros2 lifecycle set <node> cleanup), {then}",
        NodeState.INACTIVE: f"clean up (ros2 lifecycle set <node> cleanup), {then}",
        NodeState.ACTIVE: "Deactivate, clean up, set the parameter, configure and activate (ros2 lifecycle set "
                          "<node> deactivate, cleanup, then ros2 param set, then configure, activate)",
        NodeState.FINALIZED: "restart lisa_node with the new value (params file or -p)",
        NodeState.EXITING: "restart lisa_node with the new value (params file or -p)",
    }
    return advice[state]
