"""SIGINT/SIGTERM: the node exits cleanly within 2 s, even while the engine hangs."""
import signal

import pytest

from conftest import make_image_msg, wait_for

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_shuts_down_within_2_s_during_a_hung_inference(lisa_io, sig):
    io = lisa_io(params={"model.hang_s": 30.0, "inference_timeout": 60.0})
    io.publish_frame(make_image_msg(stamp=(1, 0)))
    io.ask("cup #hang")
    wait_for(lambda: io.diagnostics().get("queue_depth") == "1", 5, "the hung request in progress")
    took = io.node.stop(sig)
    assert io.node.popen.returncode == 0, io.node.log
    assert took < 2.0, f"exit took {took:.2f} s"
    assert "Traceback" not in io.node.log, io.node.log


def test_sigint_sends_the_result_of_the_running_and_of_the_queued_action_goal(lisa_io):
    """Ctrl-C with one goal running and one queued: the node answered both NOT_READY, but main returned before
    the queued goal's result response went out (rclpy sends each as an executor task of its own), and its client
    (`ros2 action send_goal`) waited until killed."""
    from action_msgs.msg import GoalStatus

    import action_goals as goals
    from lisa_ros.action import Segment

    io = lisa_io(params={"model.hang_s": 30.0, "inference_timeout": 60.0})
    io.publish_frame(make_image_msg(stamp=(1, 0)))
    client = goals.action_client(io.probe, io.node.topic("~/segment"))
    running = goals.Goal(client, "#hang the cup")
    wait_for(lambda: (Segment.Feedback.STAGE_ENCODING, 0) in running.stages(), 10, "the first goal running")
    queued = goals.Goal(client, "the mug")
    wait_for(lambda: (Segment.Feedback.STAGE_QUEUED, 1) in queued.stages(), 10, "the second goal queued")
    io.node.stop(signal.SIGINT)
    assert io.node.popen.returncode == 0, io.node.log
    for goal in (running, queued):
        status, result = goal.result(timeout=5)
        assert status == GoalStatus.STATUS_ABORTED and result.status == result.STATUS_NOT_READY, result.status_message
        assert "node shutting down" in result.status_message
