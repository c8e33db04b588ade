"""The targets glue inside a real rclpy node, publishing over DDS: ~/tracked is built only while it has readers."""
import os
import sys

import numpy as np
import pytest

from conftest import REPO, wait_for

sys.path.append(str(REPO / "benchmarks"))
pytestmark = pytest.mark.ros


def test_tracked_is_built_and_published_only_while_someone_reads_it(ros_context, ros_probe, monkeypatch):
    """Full-resolution masks (and a 3D step with depth) for every camera frame cost CPU and bandwidth: with no
    reader tracking goes on (so it is current when one comes) but no ~/tracked message is built."""
    import rclpy
    from sensor_msgs.msg import Image

    import scenes
    from lisa_ros.core.frames import Frame
    from lisa_ros.core.node_config import TargetsConfig
    from lisa_ros.core.types import Answer, EngineOutput, Request, Status
    from lisa_ros.msg import TrackedTargets
    from lisa_ros.node import targets_glue
    from lisa_ros.node.requests import IMAGE_QOS

    built = []
    build = targets_glue.tracked_msg
    monkeypatch.setattr(targets_glue, "tracked_msg", lambda state, *rest: built.append(state.stamp_ns) or
                        build(state, *rest))
    sequence = scenes.moving_square(160, 120, frames=4, velocity=(3.0, 1.0))

    def image(k):
        msg = Image(width=160, height=120, encoding="rgb8", step=480, data=sequence.frames[k].tobytes())
        msg.header.stamp.nanosec, msg.header.frame_id = sequence.stamps_ns[k], "camera"
        return msg

    node = rclpy.create_node("glue_under_test", namespace=f"/glue_test_{os.getpid()}", context=ros_context)
    glue = targets_glue.TargetsGlue(node, TargetsConfig(), image_qos=IMAGE_QOS, max_image_pixels=10**6)
    try:
        source = image(0)
        glue.on_answer(Answer(Request("the square", request_id="r1", conversation_id="c"), Status.OK, "",
                              frame=Frame(source, source.header, "f0", 0.0), image=sequence.frames[0],
                              output=EngineOutput([sequence.masks[0]], [0.9], "[SEG]")))
        glue.on_image(image(1))
        assert glue._runner.wait_idle(10) and glue._runner.frames_processed == 1
        assert built == [] and glue.diagnostics()["tracked_answers"] == 1  # tracked, nothing built

        tracked = ros_probe.collect(node.resolve_topic_name("~/tracked"), TrackedTargets)
        wait_for(lambda: glue._tracked_pub.get_subscription_count() >= 1, 10, "a ~/tracked reader")
        glue.on_image(image(2))
        assert glue._runner.wait_idle(10)
        assert built == [sequence.stamps_ns[2]]
        state = wait_for(lambda: tracked and tracked[-1], 10, "~/tracked over DDS")
        assert state.request_id == "r1" and state.header.stamp.nanosec == sequence.stamps_ns[2]
        mask = np.frombuffer(bytes(state.masks[0].data), np.uint8).reshape(120, 160) > 0
        assert scenes.iou(mask, sequence.masks[2]) > 0.9  # followed through the frame nobody read
    finally:
        glue.close()
        node.destroy_node()
