"""lisa_node as a separate process with a params file, over real DDS (loopback)."""
import pytest
from sensor_msgs.msg import Image
from std_msgs.msg import String

from conftest import make_image_msg, wait_for

pytestmark = pytest.mark.ros


def test_instruction_answered_on_result_and_mask_with_source_header(lisa_node_process, ros_probe):
    from lisa_ros.msg import SegmentationResult

    node = lisa_node_process()
    results = ros_probe.collect(node.topic("~/result"), SegmentationResult)
    masks = ros_probe.collect(node.topic("~/mask"), Image)
    explanations = ros_probe.collect(node.topic("~/explanation"), String)
    images = ros_probe.publisher(node.topic("image"), Image)
    instructions = ros_probe.publisher(node.topic("instruction"), String)
    frame = make_image_msg(width=64, height=48, stamp=(1234, 5678), frame_id="cam_optical")
    images.publish(frame)
    instructions.publish(String(data="the cup and the table"))
    wait_for(lambda: results and masks and explanations, 15, "a result, a mask and an explanation")
    result = results[0]
    assert result.status == SegmentationResult.STATUS_OK, result.status_message
    assert (result.header.stamp.sec, result.header.stamp.nanosec, result.header.frame_id) == (1234, 5678, "cam_optical")
    assert result.instruction == "the cup and the table" and result.request_id
    assert len(result.masks) == 2 and len(result.scores) == 2 and len(result.boxes) == 2
    assert all(m.encoding == "mono8" and (m.width, m.height) == (64, 48) for m in result.masks)
    assert (result.boxes[0].x_offset, result.boxes[0].y_offset, result.boxes[0].width, result.boxes[0].height) == (0, 0, 64, 24)
    assert result.model_id == "plumbing" and result.total_ms >= result.inference_ms >= 0
    mask = masks[0]
    assert (mask.header.stamp.sec, mask.header.frame_id) == (1234, "cam_optical")
    assert mask.encoding == "mono8" and set(bytes(mask.data)) == {255}
    assert "the cup and the table" in explanations[0].data
