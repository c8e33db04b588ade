"""A plain rclpy node whose callbacks run on a background thread, beside a program's own work.

The replay, the tests' probe and the benchmark clients publish from their main
thread and receive on this one. Without a context it brings its own (initialised
without signal handlers: the program keeps its own Ctrl-C handling) and shuts it
down on ``close()``; a context passed in belongs to the caller.
"""
from __future__ import annotations

import threading

import rclpy
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions


class SpinningNode:
    def __init__(self, name: str, context: Context | None = None) -> None:
        self._own_context = context is None
        if context is None:
            context = Context()
            rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
        self.context = context
        self.node = rclpy.create_node(name, context=context)
        self._closing = threading.Event()
        self._executor = SingleThreadedExecutor(context=context)
        self._executor.add_node(self.node)
        self._spinner = threading.Thread(target=self._spin, name=f"spin {name}", daemon=True)
        self._spinner.start()

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except ExternalShutdownException:
            pass
        except Exception:
            if self._closing.is_set() or not self.context.ok():
                return  # torn down under the spinning thread
            raise

    def close(self) -> None:
        """Stop spinning and destroy the node (and the context, when it is this node's own)."""
        self._closing.set()
        self._executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        if self._own_context:
            rclpy.try_shutdown(context=self.context)
        self._spinner.join(timeout=2.0)
