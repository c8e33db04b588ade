"""Transition failures are never silent: each is logged with its reason and shown on /diagnostics and in
NOT_READY answers; a deleted parameter, a QoS override typo and a bad transition id are named."""
import pytest

from conftest import wait_for

pytestmark = pytest.mark.ros


def _set(probe, node, name, value=None):
    """Set a parameter through the node's parameter service; value None deletes it (what `ros2 param delete`
    sends). Returns the SetParametersResult."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    if value is None:
        parameter_value = ParameterValue(type=ParameterType.PARAMETER_NOT_SET)
    else:
        parameter_value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    client = probe.client(node.topic("~/set_parameters"), SetParameters)
    request = SetParameters.Request(parameters=[Parameter(name=name, value=parameter_value)])
    return probe.call(client, request).results[0]


def test_deleting_a_parameter_is_refused_and_configure_keeps_working(lisa_node_process, ros_probe):
    """`ros2 param delete model.<x>` used to undeclare it: every later configure raised
    ParameterNotDeclaredException, swallowed by rclpy, until a restart."""
    node = lisa_node_process()
    for name in ("model.delay_s", "model.load_delay_s", "max_queue"):  # set, unset (engine default), node
        result = _set(ros_probe, node, name)
        assert not result.successful and "cannot be deleted" in result.reason and name in result.reason
    for transition in ("deactivate", "cleanup", "configure", "activate"):
        if transition == "configure":  # a model option is settable while unconfigured (refused while configured)
            assert _set(ros_probe, node, "model.delay_s", 0.01).successful
        assert node.change_state(ros_probe, transition), (transition, node.log[-2000:])
    assert "refused: model.delay_s cannot be deleted" in node.log


def test_a_typo_in_the_camera_qos_overrides_fails_configure_with_an_error_line(lisa_node_process, ros_probe):
    """It used to pass configure, fail activate inside rclpy and leave the node unconfigured without a word; the
    depth camera's overrides failed activate with rclpy's line that named neither parameter nor valid values."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    camera = f"/qos_typo_{id(ros_probe)}/image_raw"
    depth = f"/qos_typo_{id(ros_probe)}/depth"  # subscribed at activate, like the camera
    node = lisa_node_process(params={f"qos_overrides.{camera}.subscription.reliability": "reliabel",
                                     "depth.enabled": True, f"qos_overrides.{depth}.subscription.depth": "ten",
                                     "max_queue": 0}, remaps={"image": camera, "depth": depth}, wait_active=False)
    observed = ros_probe.collect("/diagnostics", DiagnosticArray)
    node.wait_for_state(ros_probe, "unconfigured")
    line = wait_for(lambda: [x for x in node.log.splitlines() if "[ERROR]" in x and "configure failed" in x], 10,
                    "the error line")[0]
    assert f"qos_overrides.{camera}.subscription.reliability is 'reliabel'" in line and "restart lisa_node" in line
    assert "one of system_default, reliable, best_effort, best_available" in line  # what to write instead
    assert f"qos_overrides.{depth}.subscription.depth is 'ten'" in line  # the depth side, checked the same way
    assert "an integer from 0 to" in line
    assert "max_queue must be >= 1" in line  # named together with the other problems

    def reported():
        for array in reversed(list(observed)):
            for status in array.status:
                if status.name == f"{node.namespace}/lisa_node: segmentation":
                    return status
        return None
    status = wait_for(reported, 5, "diagnostics")
    assert status.level == DiagnosticStatus.ERROR and "reliabel" in status.message


def test_change_state_to_a_transition_the_state_lacks_is_refused_and_the_node_lives_on(lisa_node_process,
                                                                                         ros_probe):
    """By id (not label), rclpy raised out of its service callback and the process ended with a traceback."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    node = lisa_node_process(params={"auto_configure": False}, wait_active=False)
    node.wait_for_state(ros_probe, "unconfigured")
    client = ros_probe.client(node.topic("~/change_state"), ChangeState)
    request = ChangeState.Request(transition=Transition(id=Transition.TRANSITION_ACTIVATE))
    assert not ros_probe.call(client, request).success
    assert node.popen.poll() is None and "refused in state 'unconfigured'" in node.log
    assert node.change_state(ros_probe, "configure") and node.change_state(ros_probe, "activate")


def test_an_exception_in_a_transition_is_logged_and_shown_to_requests(ros_context, ros_probe, tmp_path, capfd):
    """In-process (the one way to make configure raise: undeclare a parameter from the node's own code)."""
    from rclpy.lifecycle import TransitionCallbackReturn
    from std_msgs.msg import String

    from lisa_ros.msg import SegmentationResult
    from lisa_ros.node.lisa_node import LisaNode

    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters:\n    engine: plumbing\n")
    node = LisaNode("lisa_transition_probe", namespace="/transition_probe", context=ros_context,
                    cli_args=["--ros-args", "--params-file", str(params)])
    try:
        results = ros_probe.collect("/transition_probe/lisa_transition_probe/result", SegmentationResult)
        wait_for(lambda: node._result_pub.get_subscription_count() >= 1, 10, "the probe's subscription")
        node.undeclare_parameter("max_queue")
        assert node.trigger_configure() == TransitionCallbackReturn.ERROR
        node._on_instruction(String(data="after the failure"))
        answer = wait_for(lambda: results and results[-1], 10, "the NOT_READY answer")
        assert answer.status == SegmentationResult.STATUS_NOT_READY
        assert "configure failed: ParameterNotDeclaredException" in answer.status_message
        assert "configure failed: ParameterNotDeclaredException" in capfd.readouterr().err
    finally:
        node.release("test over")
        node.destroy_node()
