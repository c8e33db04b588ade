"""A slow model load (plumbing engine, model.load_delay_s): the node stays observable while it loads, and a
signal at any point of start-up ends the process cleanly and at once."""
from pathlib import Path

import pytest

from conftest import wait_for

pytestmark = pytest.mark.ros


class Observer:
    """get_state and /diagnostics of one lisa_node process, without waiting for it to be active."""

    def __init__(self, probe, node) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from lifecycle_msgs.srv import ChangeState, GetState

        self.probe, self.node = probe, node
        self._arrays = probe.collect("/diagnostics", DiagnosticArray)
        self.get_state_client = probe.client(node.topic("~/get_state"), GetState)
        self.change_state_client = probe.client(node.topic("~/change_state"), ChangeState)

    def state(self, timeout: float = 8.0) -> str:
        """The lifecycle state label, answered within ``timeout`` s (fails the test otherwise; resent every
        2 s, as a request sent before discovery completes goes unanswered)."""
        from lifecycle_msgs.srv import GetState

        return self.probe.call(self.get_state_client, GetState.Request(), timeout, resend_every=2.0).current_state.label

    def diagnostics_message(self) -> str:
        name = f"{self.node.namespace}/lisa_node: segmentation"
        for array in reversed(list(self._arrays)):
            for status in array.status:
                if status.name == name:
                    return status.message
        return ""

    def change_state_async(self, label: str):
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request()
        request.transition.label = label
        return self.change_state_client.call_async(request)


def test_get_state_and_diagnostics_answer_while_auto_configure_loads(lisa_node_process, ros_probe):
    """They used to stall for the whole load (minutes for LISA-7B): the load held the executor."""
    # A load far longer than the answer's time limit (which covers the client's discovery on a loaded machine).
    node = lisa_node_process(params={"model.load_delay_s": 20.0}, wait_active=False)
    observer = Observer(ros_probe, node)
    wait_for(lambda: "loading the model" in observer.diagnostics_message(), 5, "diagnostics saying 'loading'")
    assert observer.state() == "configuring"
    node.wait_for_state(ros_probe, "active", timeout=60)
    wait_for(lambda: observer.diagnostics_message() == "active", 5, "diagnostics saying 'active'")


def test_get_state_answers_while_a_configure_request_loads(lisa_node_process, ros_probe):
    node = lisa_node_process(params={"model.load_delay_s": 20.0, "auto_configure": False}, wait_active=False)
    observer = Observer(ros_probe, node)
    node.wait_for_state(ros_probe, "unconfigured")
    configured = observer.change_state_async("configure")
    wait_for(lambda: "loading the model" in observer.diagnostics_message(), 5, "diagnostics saying 'loading'")
    assert observer.state() == "configuring" and not configured.done()
    assert wait_for(configured.done, 60, "the configure reply") and configured.result().success
    assert observer.state() == "inactive"


def test_a_model_parameter_set_during_the_load_is_refused_saying_to_wait_for_it(lisa_node_process, ros_probe):
    """The refusal used to say "Deactivate, clean up..." to a node that was neither active nor done loading."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    node = lisa_node_process(params={"model.load_delay_s": 20.0}, wait_active=False)
    observer = Observer(ros_probe, node)
    wait_for(lambda: "loading the model" in observer.diagnostics_message(), 5, "diagnostics saying 'loading'")
    client = ros_probe.client(node.topic("~/set_parameters"), SetParameters)
    request = SetParameters.Request(parameters=[Parameter("model.delay_s", value=0.5).to_parameter_msg()])
    result, = ros_probe.call(client, request).results
    assert observer.state() == "configuring", "the load ended before the change: raise model.load_delay_s"
    assert not result.successful and "model.delay_s" in result.reason and "loading the model" in result.reason
    assert "wait for the load to end" in result.reason and "Deactivate" not in result.reason, result.reason


def _exit_cleanly(node, *signals, gap: float = 0.0) -> float:
    """Send the signals (``gap`` s apart) and wait for the exit: returns how long it took."""
    import subprocess
    import time

    started = time.monotonic()
    for index, sig in enumerate(signals):
        if index:
            time.sleep(gap)
        node.popen.send_signal(sig)
    try:
        node.popen.wait(10)
    except subprocess.TimeoutExpired:
        node.popen.kill()
        node.popen.wait()
    took = time.monotonic() - started
    assert node.popen.returncode == 0, (node.popen.returncode, node.log[-2000:])
    assert took < 2.0, f"exit took {took:.2f} s"
    assert "Traceback" not in node.log and "exception was never retrieved" not in node.log, node.log[-3000:]
    return took


@pytest.mark.parametrize("signals", [("SIGINT",), ("SIGTERM",), ("SIGINT", "SIGINT")],
                         ids=["SIGINT", "SIGTERM", "double SIGINT"])
def test_a_signal_during_the_model_load_ends_the_process_cleanly_within_2_s(lisa_node_process, signals):
    """It used to be lost (an exception raised in the load, swallowed by `except Exception`): the node
    stayed up unconfigured; a second SIGINT then aborted the clean-up with a traceback and exit code 1."""
    import signal

    for trial in range(3):
        node = lisa_node_process(params={"model.load_delay_s": 30.0}, wait_active=False)
        wait_for(lambda node=node: "loading engine 'plumbing'" in node.log, 30, "the load to start")
        _exit_cleanly(node, *(getattr(signal, name) for name in signals), gap=0.05 * trial)
        assert "model 'plumbing' loaded" not in node.log and "active:" not in node.log


def _catches_sigterm(pid: int) -> bool:
    """lisa_node's own handlers are installed (Python alone does not catch SIGTERM)."""
    import signal

    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


def test_a_signal_at_any_point_of_start_up_ends_the_process_cleanly(lisa_node_process):
    """During the imports, before rclpy is up, during configure, right after the load, before activate: always
    exit 0, at once. (From the moment the entry script runs: before that, the interpreter's own start-up, about
    0.1 s, has Python's default handlers.)"""
    import signal
    import time

    for delay in (0.0, 0.2, 0.5, 0.9, 1.3, 1.8):
        node = lisa_node_process(params={"model.load_delay_s": 0.3}, wait_active=False)
        wait_for(lambda node=node: _catches_sigterm(node.popen.pid), 10, "lisa_node's signal handlers", interval=0.001)
        time.sleep(delay)
        _exit_cleanly(node, signal.SIGINT, signal.SIGINT)
