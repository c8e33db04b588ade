"""~/detections converter against the vision_msgs definitions, through real CDR (rosbags typestore)."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from lisa_ros.node.detections import DetectionTypes, detections_message, result_to_detections

VISION_MSGS = Path(__file__).parent / "data" / "vision_msgs"
REPO = Path(__file__).resolve().parents[2]
ARRAY = "vision_msgs/msg/Detection2DArray"
RESULT = "lisa_ros/msg/SegmentationResult"


@pytest.fixture(scope="module")
def store():
    store = get_typestore(Stores.ROS2_JAZZY)
    definitions = {}
    for path in sorted(VISION_MSGS.glob("*.msg")):
        definitions.update(get_types_from_msg(path.read_text(), f"vision_msgs/msg/{path.stem}"))
    definitions.update(get_types_from_msg((REPO / "msg" / "SegmentationResult.msg").read_text(), RESULT))
    store.register(definitions)
    return store


def _types(store) -> DetectionTypes:
    def module(package):
        return SimpleNamespace(**{name.rsplit("/", 1)[1]: cls for name, cls in store.types.items()
                                  if name.startswith(f"{package}/msg/")})
    return DetectionTypes.from_modules(module("vision_msgs"), module("geometry_msgs"))


def _header(store, frame_id="camera_optical"):
    time = store.types["builtin_interfaces/msg/Time"](sec=12, nanosec=345)
    return store.types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)


def _round_trip(store, message):
    return store.deserialize_cdr(store.serialize_cdr(message, ARRAY), ARRAY)


def test_one_detection_per_mask_with_box_score_and_instruction(store):
    message = detections_message(_types(store), _header(store), [(2, 5, 3, 4), (0, 0, 10, 1)], [0.9, 0.25],
                                 "the red mug", "7")
    decoded = _round_trip(store, message)
    assert decoded.header.frame_id == "camera_optical" and decoded.header.stamp.sec == 12
    assert len(decoded.detections) == 2
    first, second = decoded.detections
    assert (first.bbox.center.position.x, first.bbox.center.position.y) == (3.5, 7.0)
    assert (first.bbox.size_x, first.bbox.size_y) == (3.0, 4.0)
    assert first.results[0].hypothesis.class_id == "the red mug"
    assert first.results[0].hypothesis.score == pytest.approx(0.9)
    assert first.id == "7/0" and first.header.stamp.nanosec == 345
    assert (second.bbox.center.position.x, second.bbox.size_x, second.id) == (5.0, 10.0, "7/1")
    assert second.results[0].hypothesis.score == pytest.approx(0.25)
    assert second.results[0].pose.pose.orientation.w == 1.0


def test_nothing_found_is_an_empty_array_with_the_frame_header(store):
    decoded = _round_trip(store, detections_message(_types(store), _header(store), [], [], "a unicorn", "3"))
    assert decoded.detections == [] and decoded.header.frame_id == "camera_optical"


def test_mismatched_boxes_and_scores_are_refused(store):
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        detections_message(_types(store), _header(store), [(0, 0, 1, 1), (1, 1, 1, 1)], [0.5], "x", "1")


def test_from_a_segmentation_result(store):
    """The node's path: the result's boxes (bounding_box of each mask), scores, instruction and header."""
    types = store.types
    roi = types["sensor_msgs/msg/RegionOfInterest"]
    result = types[RESULT](
        header=_header(store, "wrist"), request_id="42", conversation_id="default",
        instruction="  the cup on the left  ", status=0, status_message="", explanation="Sure, [SEG].",
        mask_encoding="raw", masks=[], compressed_masks=[], scores=np.array([0.75], dtype=np.float32),
        boxes=[roi(x_offset=10, y_offset=20, width=4, height=6, do_rectify=False)],
        timing_names=["total"], timing_ms=np.array([1.0], dtype=np.float32), queue_wait_ms=0.0, inference_ms=0.0,
        total_ms=0.0, model_id="tiny")
    decoded = _round_trip(store, result_to_detections(_types(store), result))
    (detection,) = decoded.detections
    assert decoded.header.frame_id == "wrist"
    assert (detection.bbox.center.position.x, detection.bbox.center.position.y) == (12.0, 23.0)
    assert (detection.bbox.size_x, detection.bbox.size_y) == (4.0, 6.0)
    assert detection.results[0].hypothesis.class_id == "  the cup on the left  "
    assert detection.results[0].hypothesis.score == pytest.approx(0.75)
    assert detection.id == "42/0"


def test_the_node_publishes_detections_only_where_vision_msgs_is_installed(ros_context, capfd):
    """In-process: without vision_msgs the node says so once at start and has no ~/detections publisher."""
    from lisa_ros.node.lisa_node import LisaNode

    node = LisaNode("lisa_detections_probe", namespace="/detections_probe", context=ros_context,
                    cli_args=["--ros-args", "-p", "engine:=plumbing"])
    try:
        topics = dict(node.get_publisher_names_and_types_by_node("lisa_detections_probe", "/detections_probe"))
        detections = topics.get("/detections_probe/lisa_detections_probe/detections")
        try:
            import vision_msgs.msg  # noqa: F401
        except ImportError:
            assert detections is None
            assert capfd.readouterr().err.count("vision_msgs not installed: ~/detections is off") == 1
        else:
            assert detections == ["vision_msgs/msg/Detection2DArray"]
    finally:
        node.release("test over")
        node.destroy_node()


def test_detections_enabled_false_turns_detections_off(ros_context, capfd):
    """The mode launch's detections_enabled:=false switches: no ~/detections publisher, and the node says why."""
    from lisa_ros.node.lisa_node import LisaNode

    node = LisaNode("lisa_detections_off", namespace="/detections_off", context=ros_context,
                    cli_args=["--ros-args", "-p", "engine:=plumbing", "-p", "detections.enabled:=false"])
    try:
        topics = dict(node.get_publisher_names_and_types_by_node("lisa_detections_off", "/detections_off"))
        assert "/detections_off/lisa_detections_off/detections" not in topics
        assert node.describe_parameter("detections.enabled").read_only
        assert capfd.readouterr().err.count("detections.enabled is false: ~/detections is off") == 1
    finally:
        node.release("test over")
        node.destroy_node()
