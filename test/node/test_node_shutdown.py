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
