"""ROS messages of the 3D and tracking cores: real generated types, serialised by the real rmw."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros

sys.path.append(str(Path(__file__).resolve().parents[1] / "core"))
sys.path.append(str(Path(__file__).resolve().parents[2] / "benchmarks"))


@pytest.fixture(scope="module")
def ros():
    from rclpy.serialization import deserialize_message, serialize_message
    from std_msgs.msg import Header

    return serialize_message, deserialize_message, Header


def round_trip(ros, msg):
    serialize, deserialize, _ = ros
    return deserialize(serialize(msg), type(msg))


def test_status_constants_mirror_the_core():
    from lisa_ros.core.depth import DepthStatus
    from lisa_ros.msg import Target3D

    constants = {name[len("STATUS_"):]: getattr(Target3D, name) for name in dir(Target3D)
                 if name.startswith("STATUS_")}
    assert constants == {status.name: int(status) for status in DepthStatus}


def test_targets3d_point_and_cloud_from_a_measured_scene(ros):
    import test_depth
    from builtin_interfaces.msg import Time

    from lisa_ros.core.depth import TargetLocator
    from lisa_ros.node.targets_messages import point_cloud, point_stamped, targets3d_msg

    depth, mask = test_depth.scene()
    locator = TargetLocator(tolerance_s=0.02)
    locator.on_camera_info(k=[test_depth.F, 0, test_depth.CX, 0, test_depth.F, test_depth.CY, 0, 0, 1],
                           width=test_depth.W, height=test_depth.H)
    locator.on_depth(test_depth.depth_message(depth, 2_000_000_000, "cam_depth_optical"))
    measurement = locator.measure([np.zeros_like(mask), mask], 2_005_000_000, keep_points=True)
    header = ros[2](stamp=Time(sec=2, nanosec=5_000_000), frame_id="cam_colour_optical")
    msg = round_trip(ros, targets3d_msg(measurement, header, "req-7", "conv", [0.9, 0.6]))
    assert msg.header.frame_id == "cam_depth_optical" and msg.header.stamp.nanosec == 5_000_000
    assert (msg.depth_stamp.sec, msg.depth_stamp.nanosec) == (2, 0) and msg.request_id == "req-7"
    assert msg.best_index == 1 and msg.targets[0].status == msg.targets[0].STATUS_EMPTY_MASK
    assert "EMPTY_MASK" in msg.status_message
    best = msg.targets[1]
    assert best.status == best.STATUS_OK and best.valid_pixels == measurement.targets[1].valid_pixels
    assert (best.surfaces, best.surface_fraction) == (1, 1.0) and best.status_message == ""
    np.testing.assert_allclose([best.centroid.x, best.centroid.y, best.centroid.z], test_depth.CENTROID, atol=0.002)
    point = point_stamped(msg)
    assert point.header.frame_id == "cam_depth_optical" and point.point.z == pytest.approx(1.0)
    cloud = round_trip(ros, point_cloud(measurement.targets[1].points, msg.header))
    assert cloud.width == measurement.targets[1].valid_pixels and cloud.point_step == 12 and cloud.is_dense
    assert [f.name for f in cloud.fields] == ["x", "y", "z"]
    xyz = np.frombuffer(bytes(cloud.data), "<f4").reshape(-1, 3)
    np.testing.assert_array_equal(xyz, measurement.targets[1].points)


def test_frame_id_is_the_depth_cameras_whatever_the_status(ros):
    """No point (NO_CAMERA_INFO here): the depth camera's frame when one was received, the colour frame before."""
    from lisa_ros.core.depth import TargetLocator
    from lisa_ros.node.targets_messages import point_stamped, targets3d_msg

    locator = TargetLocator()
    measurement = locator.measure([np.ones((4, 4), bool)], 0)
    colour = ros[2](frame_id="cam_colour_optical")
    msg = targets3d_msg(measurement, colour, "r", "c", [0.5])
    assert msg.header.frame_id == "cam_colour_optical" and msg.best_index == -1
    assert msg.targets[0].status == msg.targets[0].STATUS_NO_CAMERA_INFO and point_stamped(msg) is None
    assert targets3d_msg(measurement, colour, "r", "c", [0.5], "cam_depth_optical").header.frame_id == \
        "cam_depth_optical"


def test_a_mask_over_two_surfaces_travels_with_its_split(ros):
    import test_depth
    from builtin_interfaces.msg import Time

    from lisa_ros.core.depth import Measurement, measure_targets
    from lisa_ros.node.targets_messages import targets3d_msg

    depth, mask, _, _ = test_depth.two_surfaces(0.6)
    measurement = Measurement(measure_targets([mask], depth, test_depth.camera()), "cam_depth_optical", 1)
    msg = round_trip(ros, targets3d_msg(measurement, ros[2](stamp=Time(sec=1)), "r", "c", [0.9]))
    target = msg.targets[0]
    assert target.status == target.STATUS_OK and target.surfaces == 2 and msg.best_index == 0
    assert target.surface_fraction == pytest.approx(measurement.targets[0].surface_fraction) and \
        0.55 < target.surface_fraction < 0.65
    assert target.centroid.z == pytest.approx(0.5) and "spans 2 surfaces" in target.status_message


def test_tracked_message_carries_masks_and_losses(ros):
    import scenes
    from lisa_ros.core.tracking import MaskTracker
    from lisa_ros.node.targets_messages import tracked_msg

    sequence = scenes.moving_square(frames=2)
    empty = np.zeros_like(sequence.masks[0])
    tracker = MaskTracker("req-3", "conv", [sequence.masks[0], empty], [0.9, 0.4], sequence.frames[0], 10)
    state = tracker.update(sequence.frames[1], 33_000_010)
    header = ros[2](frame_id="cam")
    msg = round_trip(ros, tracked_msg(state, header, tracker.source_stamp_ns))
    assert msg.request_id == "req-3" and msg.age == pytest.approx(0.033) and not msg.finished
    assert (msg.source_stamp.sec, msg.source_stamp.nanosec) == (0, 10)
    assert list(msg.lost) == [False, True] and list(msg.lost_reasons) == ["", "empty_mask"]
    mask = np.frombuffer(bytes(msg.masks[0].data), np.uint8).reshape(msg.masks[0].height, msg.masks[0].width)
    np.testing.assert_array_equal(mask > 0, state.targets[0].mask)
    assert msg.masks[1].width == 0 and msg.masks[1].encoding == "mono8"
    assert msg.boxes[0].width == state.targets[0].box[2] and msg.confidences[1] == 0.0
    assert list(msg.scores) == pytest.approx([0.9, 0.4]) and len(msg.targets_3d.targets) == 0
