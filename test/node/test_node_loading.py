"""A slow model load (plumbing engine, model.load_delay_s): the node stays observable while it loads."""
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

    def state(self, timeout: float = 2.0) -> str:
        """The lifecycle state label, answered within ``timeout`` s (fails the test otherwise)."""
        from lifecycle_msgs.srv import GetState

        return self.probe.call(self.get_state_client, GetState.Request(), timeout).current_state.label

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
    node = lisa_node_process(params={"model.load_delay_s": 6.0}, wait_active=False)
    observer = Observer(ros_probe, node)
    wait_for(lambda: "loading the model" in observer.diagnostics_message(), 5, "diagnostics saying 'loading'")
    assert observer.state() == "configuring"
    node.wait_for_state(ros_probe, "active", timeout=30)
    wait_for(lambda: observer.diagnostics_message() == "active", 5, "diagnostics saying 'active'")


def test_get_state_answers_while_a_configure_request_loads(lisa_node_process, ros_probe):
    node = lisa_node_process(params={"model.load_delay_s": 4.0, "auto_configure": False}, wait_active=False)
    observer = Observer(ros_probe, node)
    node.wait_for_state(ros_probe, "unconfigured")
    configured = observer.change_state_async("configure")
    wait_for(lambda: "loading the model" in observer.diagnostics_message(), 5, "diagnostics saying 'loading'")
    assert observer.state() == "configuring" and not configured.done()
    assert wait_for(configured.done, 30, "the configure reply") and configured.result().success
    assert observer.state() == "inactive"
