"""LisaNode's /diagnostics: state, the last failure, the queue, frames, latency percentiles, answer counts, memory."""
from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from lisa_ros.core.lifecycle import NodeState


class NodeDiagnostics:
    """LisaNode's /diagnostics publishing (a mixin: the state it reports is LisaNode's)."""

    def _start_diagnostics(self) -> None:
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Until the first configure has validated diagnostics_period (each configure and live change applies it).
        period = self.get_parameter("diagnostics_period").value
        self._diagnostics_timer = self.create_timer(period if isinstance(period, (int, float)) and period > 0
                                                    else 1.0, self._publish_diagnostics)

    def _retime_diagnostics(self, period: float) -> None:
        """/diagnostics every ``period`` s, the next one ``period`` s from now."""
        self._diagnostics_timer.timer_period_ns = int(period * 1e9)
        self._diagnostics_timer.reset()

    def _publish_diagnostics(self) -> None:
        engine, config, worker = self._engine, self._config, self._worker
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: segmentation",
                                  hardware_id=engine.model_id if engine is not None else "")
        if self._problem:
            status.level = DiagnosticStatus.ERROR
        elif self._state is NodeState.ACTIVE:
            status.level = DiagnosticStatus.OK
        else:
            status.level = DiagnosticStatus.WARN
        status.message = self._problem or self._state.value
        loading = self._loading
        if loading is not None and self._state is NodeState.LOADING:
            status.message = f"loading the model {loading[0].model_id!r} ({time.monotonic() - loading[1]:.0f} s so far)"
        values = {
            "engine": config.engine if config is not None else "",
            "model_id": engine.model_id if engine is not None else "",
            "queue_depth": worker.queue_depth if worker is not None else 0,
            "max_queue": config.max_queue if config is not None else 0,
            "frames_received": self._frames.received_count,
            "frames_dropped": self._frames.dropped_count,  # replaced by a newer frame before being used
            # Readers this node's ~/result writer has matched: a client sure to get its first answer waits
            # for its own here (its side of discovery can finish before the node's; lisa-ros replay does).
            "result_subscribers": self._result_pub.get_subscription_count(),
        }
        values.update(engine.diagnostics() if engine is not None else {})
        targets = self._targets
        values.update(targets.diagnostics() if targets is not None else {})
        for kind in ("total", "inference", "queue_wait"):
            percentiles = self._stats.percentiles(kind)
            for q, value in (percentiles or {}).items():
                values[f"{kind}_ms_p{q}"] = f"{value:.1f}"
        values.update({f"phase_{phase}_ms_mean": f"{mean:.1f}" for phase, mean in self._stats.phase_means().items()})
        values.update({f"answers_{name.lower()}": count for name, count in self._stats.counts().items()})
        if engine is not None:
            try:
                values.update(engine.memory_stats())
                values.update(engine.load_stats())
            except Exception as error:
                values["memory_stats_error"] = repr(error)
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)
