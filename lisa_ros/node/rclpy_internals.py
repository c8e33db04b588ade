"""The private rclpy parts lisa_node cannot do without, each in one place with why no public API serves.

test/node/test_rclpy_internals.py checks that each still exists and behaves as used here: when an rclpy
release changes one, that test fails and names it, instead of lisa_node failing at run time.
"""
from __future__ import annotations

import threading

from rclpy.action import ActionServer
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile
from rclpy.qos_overriding_options import QoSOverridingOptions, _declare_qos_parameters
from rclpy.subscription import Subscription


def declare_qos_overrides(node, entity_type: type[Publisher] | type[Subscription], topic: str,
                          profile: QoSProfile) -> None:
    """Declares ``qos_overrides.<topic>.<publisher|subscription>.*`` (history, depth, reliability) and applies
    them to ``profile`` in place, as ``create_publisher(qos_overriding_options=...)`` does.

    rclpy.qos_overriding_options._declare_qos_parameters: the only way to apply the standard overrides where
    rclpy takes no QoSOverridingOptions (an ActionServer's feedback and status publishers), or to a profile
    before its entity exists (configure declares the camera's; ``lisa-ros doctor`` checks a camera's QoS).
    """
    _declare_qos_parameters(entity_type, node, topic, profile, QoSOverridingOptions.with_default_policies())


def parameter_overrides(node) -> dict[str, Parameter]:
    """The values the command line and params file give ``node`` (name -> Parameter), declared or not.

    rclpy.node.Node._parameter_overrides: rclpy shows an override only once the parameter is declared, and
    declaring applies it; lisa_node must see it first, to name a bad QoS override before the entity exists and to
    read a params-file 'null' or ``[]`` as "unset" (``ignore_override``).
    """
    return node._parameter_overrides


class ResultCountingActionServer(ActionServer):
    """rclpy's ActionServer, counting the result requests of known goals not answered yet: a process exit waits
    for them (rclpy sends each result as its own executor task, after the goal has finished).

    ActionServer._execute_get_result_request, ._send_result_response and ._result_futures: rclpy has no hook
    on a result request's arrival or on its response going out.
    """

    def __init__(self, *args, **kwargs) -> None:
        self._owed_lock = threading.Lock()
        self.results_owed = 0
        super().__init__(*args, **kwargs)

    async def _execute_get_result_request(self, request_header_and_message):
        _, request = request_header_and_message
        if bytes(request.goal_id.uuid) in self._result_futures:  # else rclpy answers UNKNOWN at once
            with self._owed_lock:
                self.results_owed += 1
        await super()._execute_get_result_request(request_header_and_message)

    def _send_result_response(self, request_header, future) -> None:
        try:
            super()._send_result_response(request_header, future)
        finally:
            with self._owed_lock:
                self.results_owed -= 1
