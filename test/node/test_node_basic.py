"""lisa_node as a separate process with a params file, over real DDS (loopback): the happy paths."""
import pytest
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from conftest import make_image_msg, wait_for

pytestmark = pytest.mark.ros


def test_instruction_answered_on_result_mask_and_explanation_with_source_header(lisa_io, ros_probe):
    from lisa_ros.msg import SegmentationResult

    io = lisa_io()
    overlays = ros_probe.collect(io.node.topic("~/overlay"), Image)
    wait_for(lambda: ros_probe.node.count_publishers(io.node.topic("~/overlay")) >= 1, 10, "overlay publisher")
    io.publish_frame(make_image_msg(width=64, height=48, stamp=(1234, 5678), frame_id="cam_optical"))
    io.ask("the cup and the table")
    result, = io.results_for("the cup and the table")
    assert result.status == SegmentationResult.STATUS_OK, result.status_message
    assert (result.header.stamp.sec, result.header.stamp.nanosec, result.header.frame_id) == (1234, 5678, "cam_optical")
    assert result.request_id and result.conversation_id == "default"
    assert len(result.masks) == 2 and list(result.scores) == [1.0, 1.0] and len(result.boxes) == 2
    assert all(m.encoding == "mono8" and (m.width, m.height) == (64, 48) for m in result.masks)
    assert all(m.header.frame_id == "cam_optical" for m in result.masks)
    assert [(b.x_offset, b.y_offset, b.width, b.height) for b in result.boxes] == [(0, 0, 64, 24), (0, 24, 64, 24)]
    assert set(bytes(result.masks[0].data[:64 * 24])) == {255} and set(bytes(result.masks[0].data[64 * 24:])) == {0}
    assert result.model_id == "plumbing" and result.total_ms >= result.inference_ms > 0
    mask = wait_for(lambda: io.masks and io.masks[-1], 5, "~/mask")
    assert (mask.header.stamp.sec, mask.header.stamp.nanosec, mask.header.frame_id) == (1234, 5678, "cam_optical")
    assert mask.encoding == "mono8" and (mask.width, mask.height) == (64, 48) and set(bytes(mask.data)) == {255}
    assert "the cup and the table" in wait_for(lambda: io.explanations, 5, "~/explanation")[-1].data
    drawn = wait_for(lambda: overlays, 5, "~/overlay while subscribed")[-1]
    assert drawn.encoding == "rgb8" and drawn.header.frame_id == "cam_optical"


def test_service_on_given_image_and_on_latest_frame(lisa_io):
    from lisa_ros.msg import SegmentationResult

    io = lisa_io()
    given = make_image_msg(width=20, height=10, stamp=(7, 8), frame_id="given", encoding="bgr8")
    result = io.call("a bottle", image=given)
    assert result.status == SegmentationResult.STATUS_OK, result.status_message
    assert (result.header.stamp.sec, result.header.frame_id) == (7, "given") and result.masks[0].width == 20
    assert io.call("a bottle").status == SegmentationResult.STATUS_NO_IMAGE
    io.publish_frame(make_image_msg(stamp=(9, 0), frame_id="camera"))
    latest = io.call("a bottle")
    assert latest.status == SegmentationResult.STATUS_OK and latest.header.frame_id == "camera"
    assert latest.request_id != result.request_id
    assert len(io.results_for("a bottle", 3)) == 3  # service answers are also published on ~/result


def test_conversation_turns_reset_flag_and_reset_service(lisa_io, ros_probe):
    io = lisa_io()
    io.publish_frame(make_image_msg(stamp=(1, 0)))
    turns = [io.call("cup", conversation_id="kitchen").explanation.split(":")[0] for _ in range(2)]
    assert turns == ["turn 1", "turn 2"]
    assert io.call("cup", conversation_id="other").explanation.startswith("turn 1")
    assert io.call("cup", conversation_id="kitchen", reset=True).explanation.startswith("turn 1")
    reset = ros_probe.call(ros_probe.client(io.node.topic("~/reset"), Trigger), Trigger.Request())
    assert reset.success, reset.message
    assert io.call("cup", conversation_id="kitchen").explanation.startswith("turn 1")


def test_diagnostics_report_state_latency_and_frames(lisa_io):
    io = lisa_io()
    io.publish_frame(make_image_msg(stamp=(1, 0)))
    io.call("cup")
    values = wait_for(lambda: (d := io.diagnostics()) and "total_ms_p50" in d and d, 5, "latency in diagnostics")
    assert values["_message"] == "active" and values["_level"] == b"\x00"
    assert values["engine"] == "plumbing" and values["model_id"] == "plumbing"
    for key in ("queue_depth", "max_queue", "frames_received", "frames_dropped", "total_ms_p90",
                "inference_ms_p99", "answers_ok", "load_s"):  # load_s: the engine's load_stats
        assert key in values, key


def test_diagnostics_count_the_readers_the_result_writer_has_matched(lisa_io, ros_probe):
    """What a client waits for to be sure of its first answer (lisa-ros replay does): its own reader counted."""
    from lisa_ros.msg import SegmentationResult

    io = lisa_io()
    known = int(wait_for(lambda: io.diagnostics().get("result_subscribers"), 5, "the result reader count"))
    assert known >= 1  # NodeIO's own ~/result reader
    ros_probe.collect(io.node.topic("~/result"), SegmentationResult)
    wait_for(lambda: int(io.diagnostics()["result_subscribers"]) == known + 1, 5, "the new reader counted")


def test_engine_phase_timings_reach_the_result_and_their_means_the_diagnostics(lisa_io):
    io = lisa_io(params={"model.delay_s": 0.02})
    io.publish_frame(make_image_msg(stamp=(1, 0)))
    results = [io.call(f"cup {i}") for i in range(3)]
    phases = ["delay", "generate", "masks", "total"]  # the plumbing engine's
    assert all(list(r.timing_names) == phases and len(r.timing_ms) == 4 and min(r.timing_ms) >= 0 for r in results)
    names = results[0].timing_names
    means = {name: sum(r.timing_ms[i] for r in results) / len(results) for i, name in enumerate(names)}

    def diagnosed():
        values = io.diagnostics()
        return values.get("answers_ok") == "3" and values

    values = wait_for(diagnosed, 5, "the three answers in diagnostics")
    for name, mean in means.items():
        assert abs(float(values[f"phase_{name}_ms_mean"]) - mean) <= 0.06, (name, values)
    refused = io.call("")
    assert refused.status == refused.STATUS_INVALID_INSTRUCTION
    assert list(refused.timing_names) == [] and list(refused.timing_ms) == []  # no engine answer, no phases


def test_standard_ros_args_remap_topics_including_compressed(lisa_node_process, ros_probe):
    """`lisa_node --ros-args --params-file ... -r image:=... -r instruction:=...`, JPEG on <image>/compressed."""
    import io as bytes_io

    import numpy as np
    from PIL import Image as PILImage
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import String

    from lisa_ros.msg import SegmentationResult

    camera = f"/remap_{id(ros_probe)}/camera/image_raw"
    node = lisa_node_process(params={"compressed": True},
                             remaps={"image": camera, "instruction": "/remap_ask"})
    results = ros_probe.collect(node.topic("~/result"), SegmentationResult)
    raw_pub = ros_probe.publisher(camera, Image)
    jpeg_pub = ros_probe.publisher(f"{camera}/compressed", CompressedImage)
    ask = ros_probe.publisher("/remap_ask", String, qos=100)
    buffer = bytes_io.BytesIO()
    PILImage.fromarray(np.full((30, 40, 3), 200, np.uint8)).save(buffer, format="JPEG")
    frame = CompressedImage(format="jpeg", data=buffer.getvalue())
    frame.header.frame_id, frame.header.stamp.sec = "jpeg_cam", 42
    assert raw_pub.get_subscription_count() == 1
    wait_for(lambda: not jpeg_pub.publish(frame) and not ask.publish(String(data="remapped")) and (
        [r for r in results if r.status == r.STATUS_OK]), 15, "an answer on the JPEG frame", interval=0.3)
    result = [r for r in results if r.status == r.STATUS_OK][0]
    assert result.header.frame_id == "jpeg_cam" and (result.masks[0].width, result.masks[0].height) == (40, 30)


def test_qos_defaults_follow_rep_2003_and_can_be_overridden(lisa_node_process, ros_probe):
    from rclpy.qos import ReliabilityPolicy

    camera = f"/qos_{id(ros_probe)}/image"
    node = lisa_node_process(params={f"qos_overrides.{camera}.subscription.reliability": "reliable"},
                             remaps={"image": camera})
    default = lisa_node_process()  # its own namespace, default QoS

    def reliability(topic, kind="subscriptions"):
        infos = getattr(ros_probe.node, f"get_{kind}_info_by_topic")(topic)
        return [info.qos_profile.reliability for info in infos]

    def expect(topic, policy, kind="subscriptions"):
        wait_for(lambda: reliability(topic, kind) == [policy], 10, f"{kind} of {topic} to be {policy.name}")

    expect(camera, ReliabilityPolicy.RELIABLE)
    expect(default.topic("image"), ReliabilityPolicy.BEST_EFFORT)
    expect(node.topic("instruction"), ReliabilityPolicy.RELIABLE)
    for name in ("~/result", "~/mask", "~/explanation", "~/overlay"):
        expect(default.topic(name), ReliabilityPolicy.RELIABLE, "publishers")


def test_next_frame_pairing_waits_for_a_frame_after_the_instruction(lisa_io):
    io = lisa_io(params={"pairing_policy": "next", "next_frame_timeout": 1.0})
    io.publish_frame(make_image_msg(stamp=(1, 0), frame_id="before"))
    io.ask("wait for it")
    wait_for(lambda: io.diagnostics().get("queue_depth") == "1", 5, "the instruction waiting for a frame")
    io.images.publish(make_image_msg(stamp=(2, 0), frame_id="after"))
    result = io.results_for("wait for it")[0]
    assert result.status == result.STATUS_OK and result.header.frame_id == "after"
    io.ask("nothing comes")
    late = io.results_for("nothing comes", timeout=10)[0]
    assert late.status == late.STATUS_NO_IMAGE and "next_frame_timeout = 1.0" in late.status_message


def test_a_qos_override_applies_to_its_own_topic_only(lisa_node_process, ros_probe):
    """rclpy applies overrides to the profile it is given, in place: an override of ~/result used to
    change ~/mask, ~/explanation and ~/overlay too (they were created from the same profile object)."""
    from rclpy.qos import ReliabilityPolicy

    result = f"/qos_own_{id(ros_probe)}/result"
    node = lisa_node_process(params={f"qos_overrides.{result}.publisher.reliability": "best_effort"},
                             remaps={"~/result": result})

    def reliability(name):
        return [i.qos_profile.reliability for i in ros_probe.node.get_publishers_info_by_topic(name)]

    wait_for(lambda: reliability(result) == [ReliabilityPolicy.BEST_EFFORT], 10, "the overridden ~/result")
    for name in ("~/mask", "~/explanation", "~/overlay"):
        assert reliability(node.topic(name)) == [ReliabilityPolicy.RELIABLE], name


def test_an_answer_keeps_at_most_max_masks_and_says_how_many_were_dropped(lisa_io):
    """Answers had no cap: 334 parts made a 308 MB result, and ~/result keeps the last 10."""
    from lisa_ros.msg import SegmentationResult

    io = lisa_io()  # max_masks: the default, 16
    io.publish_frame(make_image_msg(width=8, height=40, stamp=(1, 0)))
    instruction = " and ".join(f"p{i}" for i in range(20))  # the plumbing engine: one mask per part
    result = io.call(instruction)
    assert result.status == SegmentationResult.STATUS_OK
    assert len(result.masks) == len(result.scores) == len(result.boxes) == 16
    assert result.status_message.startswith("16 of 20 masks kept") and "max_masks = 16" in result.status_message
    assert [b.y_offset for b in result.boxes] == list(range(0, 32, 2))  # equal scores: the first 16 parts


def test_masks_below_min_mask_score_are_refused_on_topic_service_and_action_and_the_threshold_is_live(lisa_io):
    """The plumbing engine scores every mask model.mask_score: 0.3 is below min_mask_score 0.5, so each path answers
    NOT_FOUND with the best score and the threshold, the model's text stays the explanation, and the node answers
    on; a lower threshold set at run time lets the masks through."""
    from action_msgs.msg import GoalStatus

    import action_goals as goals
    from conftest import set_parameters
    from lisa_ros.msg import SegmentationResult

    io = lisa_io(params={"model.mask_score": 0.3, "min_mask_score": 0.5})
    io.publish_frame(make_image_msg(width=8, height=6, stamp=(7, 0)))
    refusal = "best mask score 0.30 is below min_mask_score 0.5: refused"
    io.ask("the cup on the table")
    on_topic, = io.results_for("the cup on the table")
    on_service = io.call("the plate and the fork")
    status, on_action = goals.Goal(goals.action_client(io.probe, io.node.topic("~/segment")), "the bowl").result()
    assert status == GoalStatus.STATUS_SUCCEEDED  # an answer, as any NOT_FOUND
    for result, instruction in ((on_topic, "the cup on the table"), (on_service, "the plate and the fork"),
                                (on_action, "the bowl")):
        assert (result.status, result.status_message) == (SegmentationResult.STATUS_NOT_FOUND, refusal), instruction
        assert len(result.masks) == len(result.scores) == len(result.boxes) == 0
        assert result.explanation.startswith("turn") and repr(instruction) in result.explanation
    mask = wait_for(lambda: io.masks and io.masks[-1], 5, "~/mask")
    assert set(bytes(mask.data)) == {0}  # the union of no masks
    assert set_parameters(io, min_mask_score=1.5)["min_mask_score"][0] is False  # 0 .. 1
    assert set_parameters(io, min_mask_score=0.25) == {"min_mask_score": (True, "")}
    kept = io.call("the plate and the fork")
    assert (kept.status, kept.status_message) == (SegmentationResult.STATUS_OK, "2 mask(s)")
    assert list(kept.scores) == pytest.approx([0.3, 0.3])
