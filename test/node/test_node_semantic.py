"""Semantic mode through lisa_node over real DDS: ~/segment_semantic, ~/semantic, ~/semantic_overlay.

The plumbing engine's stand-in labels band k with the k-th category kept (a name with
"nothing" is filtered out), so the node's side can be checked exactly and cheaply;
the LISA test runs the real method, filter included, on the tiny random checkpoint (meaningless masks).
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from conftest import REPO, make_image_msg, set_parameters, wait_for

pytestmark = pytest.mark.ros


def _semantic_client(ros_probe, node):
    from lisa_ros.srv import SegmentSemantic

    return ros_probe.client(node.topic("~/segment_semantic"), SegmentSemantic)


def _ask(ros_probe, client, categories=(), image=None, timeout=20.0):
    from lisa_ros.srv import SegmentSemantic

    request = SegmentSemantic.Request(categories=list(categories))
    if image is not None:
        request.image = image
    return ros_probe.call(client, request, timeout).result


def _label(msg) -> np.ndarray:
    dtype = {"mono8": np.uint8, "16UC1": np.dtype("<u2")}[msg.label.encoding]
    return np.frombuffer(bytes(msg.label.data), dtype).reshape(msg.label.height, msg.label.width)


def test_service_answers_a_label_map_of_the_source_size_and_an_overlay_while_subscribed(lisa_node_process,
                                                                                       ros_probe):
    from sensor_msgs.msg import Image

    node = lisa_node_process()
    client = _semantic_client(ros_probe, node)
    overlays = ros_probe.collect(node.topic("~/semantic_overlay"), Image)
    image = make_image_msg(width=64, height=48, stamp=(7, 8), frame_id="cam")
    for _ in range(20):  # the overlay goes out only once the node sees the subscription
        result = _ask(ros_probe, client, ["floor", "person", "nothing here"], image)
        if overlays:
            break
    assert result.status == result.STATUS_OK, result.status_message
    assert (result.header.stamp.sec, result.header.frame_id) == (7, "cam")
    assert (result.label.width, result.label.height, result.label.encoding) == (64, 48, "mono8")
    assert result.label.header.frame_id == "cam"
    assert list(result.label_ids) == [1, 2, 3] and list(result.label_names) == ["floor", "person", "nothing here"]
    assert list(result.filtered_out) == ["nothing here"] and len(result.filtered_reasons) == 1
    label = _label(result)
    assert (label[:24] == 1).all() and (label[24:] == 2).all()  # the stand-in's two bands
    assert list(result.pixel_fractions) == pytest.approx([0.5, 0.5, 0.0])
    assert re.fullmatch(r"lisa-[0-9a-f]{8}-\d+", result.request_id) and result.model_id == "plumbing"
    overlay = wait_for(lambda: overlays and overlays[-1], 10, "an overlay")
    assert (overlay.width, overlay.height, overlay.encoding, overlay.header.frame_id) == (64, 48, "rgb8", "cam")
    # Without an image: the newest camera frame; without categories: semantic.categories (empty here).
    newest = _ask(ros_probe, client, ["floor"])
    assert newest.status == newest.STATUS_NO_IMAGE and "no image received" in newest.status_message


def test_bad_category_lists_are_answered_with_a_clear_status_and_the_node_keeps_running(lisa_io, ros_probe):
    from lisa_ros.msg import SegmentationResult

    io = lisa_io()
    client = _semantic_client(ros_probe, io.node)
    image = make_image_msg(width=32, height=16)
    empty = _ask(ros_probe, client, [], image)
    assert empty.status == empty.STATUS_INVALID_INSTRUCTION and "semantic.categories" in empty.status_message
    twice = _ask(ros_probe, client, ["floor", "Floor "], image)
    assert twice.status == twice.STATUS_INVALID_INSTRUCTION and "repeats #0" in twice.status_message
    many = _ask(ros_probe, client, [f"class {i}" for i in range(10_000)], image, timeout=60)
    assert many.status == many.STATUS_INVALID_INSTRUCTION and "10000 categories" in many.status_message
    assert list(many.label_names) == [] and many.label.width == 0
    special = _ask(ros_probe, client, ["[SEG]", "<image>"], image)  # plain text, never special tokens
    assert special.status == special.STATUS_OK and list(special.label_names) == ["[SEG]", "<image>"]
    hung = _ask(ros_probe, client, ["floor", "#hang"], image)  # inference_timeout 1 s in plumbing_test.yaml
    assert hung.status == hung.STATUS_TIMEOUT and "inference_timeout" in hung.status_message
    assert hung.label.width == 32  # the frame was decoded: the label image keeps its size, all unlabelled
    oom = _ask(ros_probe, client, ["#oom"], image)
    assert oom.status == oom.STATUS_OUT_OF_MEMORY
    again = _ask(ros_probe, client, ["floor"], image)
    assert again.status == again.STATUS_OK
    assert io.call("the cup").status == SegmentationResult.STATUS_NO_IMAGE  # ~/segment still answers
    assert io.node.popen.poll() is None


def test_inactive_node_answers_not_ready(lisa_node_process, ros_probe):
    node = lisa_node_process()
    client = _semantic_client(ros_probe, node)
    assert node.change_state(ros_probe, "deactivate")
    answer = _ask(ros_probe, client, ["floor"], make_image_msg())
    assert answer.status == answer.STATUS_NOT_READY and "inactive" in answer.status_message
    assert node.change_state(ros_probe, "activate")
    assert _ask(ros_probe, client, ["floor"], make_image_msg()).status == answer.STATUS_OK


def test_bad_semantic_parameters_fail_configure_naming_each(lisa_node_process, ros_probe, tmp_path):
    broken = tmp_path / "descriptions.yaml"
    broken.write_text("floor: grey: flat\n  person: [unclosed\n")
    node = lisa_node_process(params={"semantic.descriptions_file": str(broken), "semantic.rate_hz": -1.0,
                                     "semantic.filter_threshold": 2.0}, wait_active=False)
    node.wait_for_state(ros_probe, "unconfigured")
    line = wait_for(lambda: [x for x in node.log.splitlines() if "[ERROR]" in x and "configure failed" in x], 10,
                    "the error line")[0]
    assert "filter_threshold must be in [0, 1]" in line and "semantic.rate_hz must be" in line
    node = lisa_node_process(params={"semantic.descriptions_file": str(broken)}, wait_active=False)
    node.wait_for_state(ros_probe, "unconfigured")
    line = wait_for(lambda: [x for x in node.log.splitlines() if "[ERROR]" in x and "configure failed" in x], 10,
                    "the error line")[0]
    assert f"semantic.descriptions_file: {broken} does not parse as YAML at line" in line
    refused = _ask(ros_probe, _semantic_client(ros_probe, node), ["floor"], make_image_msg())
    assert refused.status == refused.STATUS_NOT_READY  # and the caller is told what to fix:
    assert f"{broken} does not parse as YAML at line 1, column 12" in refused.status_message, refused.status_message
    node = lisa_node_process(params={"semantic.rate_hz": 2.0}, wait_active=False)
    node.wait_for_state(ros_probe, "unconfigured")
    assert wait_for(lambda: "semantic.rate_hz = 2.0 needs semantic.categories" in node.log, 10, "the reason")


def _in_process_node(ros_context, tmp_path, name: str, parameters: str, params_file=None):
    """A LisaNode in this process (not spun: transitions and requests are driven directly), ``parameters``
    the body of a ros__parameters block."""
    from lisa_ros.node.lisa_node import LisaNode

    params = tmp_path / f"{name}.yaml"
    params.write_text("/**:\n  ros__parameters:\n" + "".join(f"    {line}\n" for line in parameters.splitlines()))
    files = ([] if params_file is None else ["--params-file", str(params_file)]) + ["--params-file", str(params)]
    return LisaNode(name, namespace=f"/{name}", context=ros_context, cli_args=["--ros-args", *files])


def _semantic_answer(node, categories, image, timeout=60.0):
    """One request through the node's semantic worker, answered by the glue's publish path (the message)."""
    import time

    from rclpy.task import Future

    from lisa_ros.core.frames import Frame
    from lisa_ros.core.semantic_worker import SemanticJob

    answered = Future()
    frame = Frame(payload=image, header=image.header, received=time.monotonic(), key=("test", time.monotonic()))
    assert node._semantic._worker.submit(SemanticJob(categories=categories, frame=frame, context=answered))
    return wait_for(lambda: answered.done() and answered.result(), timeout, "the semantic answer")


def test_descriptions_file_is_parsed_at_configure_only(ros_context, tmp_path, tiny_lisa_checkpoint):
    """Activate used to parse the file again: an edit after configure raised there, after the request worker and
    the subscriptions were made. What configure checked is what the LISA segmenter uses."""
    from rclpy.lifecycle import TransitionCallbackReturn

    descriptions = tmp_path / "mine.yaml"
    descriptions.write_text("floor: flat grey concrete\n")
    node = _in_process_node(ros_context, tmp_path, "semantic_descriptions_probe", "\n".join([
        f"model.path: {tiny_lisa_checkpoint}", f"semantic.descriptions_file: {descriptions}",
        f"semantic.description_cache: {tmp_path / 'cache.json'}", "semantic.filter_threshold: 0.0"]),
        params_file=REPO / "config" / "lisa_cpu.yaml")
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        descriptions.write_text("floor: [unclosed\n")
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        answer = _semantic_answer(node, ["floor"], make_image_msg(width=32, height=24))
        assert answer.status in (answer.STATUS_OK, answer.STATUS_NOT_FOUND), answer.status_message
        assert list(answer.descriptions) == ["flat grey concrete"] and list(answer.description_sources) == ["user"]
    finally:
        node.release("test over")
        node.destroy_node()


def test_overlay_is_drawn_only_while_subscribed(ros_context, ros_probe, tmp_path, monkeypatch):
    """~/semantic_overlay costs a full-frame blend per answer: with no subscriber it is never drawn."""
    from rclpy.lifecycle import TransitionCallbackReturn
    from sensor_msgs.msg import Image

    from lisa_ros.node import semantic_glue

    drawn = []
    monkeypatch.setattr(semantic_glue, "label_overlay", lambda *args: drawn.append(args) or args[0])
    node = _in_process_node(ros_context, tmp_path, "semantic_overlay_probe", "engine: plumbing")
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        image = make_image_msg(width=20, height=10, frame_id="cam")
        unread = _semantic_answer(node, ["floor", "wall"], image)
        assert unread.status == unread.STATUS_OK and drawn == []
        overlays = ros_probe.collect(node.get_fully_qualified_name() + "/semantic_overlay", Image)
        wait_for(lambda: node._semantic._overlay_pub.get_subscription_count() == 1, 10, "the overlay subscriber")
        read = _semantic_answer(node, ["floor", "wall"], image)
        assert read.status == read.STATUS_OK and len(drawn) == 1
        frame, label, _ = drawn[0]
        assert frame.shape == (10, 20, 3) and np.array_equal(label, _label(read))
        overlay = wait_for(lambda: overlays and overlays[0], 10, "the overlay")
        assert (overlay.width, overlay.height, overlay.encoding, overlay.header.frame_id) == (20, 10, "rgb8", "cam")
    finally:
        node.release("test over")
        node.destroy_node()


def test_periodic_mode_labels_each_new_frame_once(lisa_io, ros_probe):
    from lisa_ros.msg import SemanticSegmentation

    io = lisa_io(params={"semantic.rate_hz": 20.0, "semantic.categories": ["floor", "wall", "door"]})
    published = ros_probe.collect(io.node.topic("~/semantic"), SemanticSegmentation)
    io.publish_frame(make_image_msg(width=30, height=12, stamp=(1, 0)))
    first = wait_for(lambda: published and published[0], 10, "a periodic label map")
    assert first.status == first.STATUS_OK and list(first.label_names) == ["floor", "wall", "door"]
    assert (first.label.width, first.label.height, first.header.stamp.sec) == (30, 12, 1)
    assert np.unique(_label(first)).tolist() == [1, 2, 3]
    io.publish_frame(make_image_msg(width=30, height=12, stamp=(2, 0)))
    wait_for(lambda: any(m.header.stamp.sec == 2 for m in published), 10, "the second frame's label map")
    assert [m.header.stamp.sec for m in published].count(1) == 1  # a frame is labelled once, not every tick
    service = _ask(ros_probe, _semantic_client(ros_probe, io.node))  # the parameter's list on the newest frame
    assert service.status == service.STATUS_OK and service.header.stamp.sec == 2
    assert all(m.request_id != service.request_id for m in published)  # service answers are not on ~/semantic


def test_lisa_engine_semantic_service_and_periodic_mode(lisa_io, ros_probe, tiny_lisa_checkpoint, tmp_path):
    from sensor_msgs.msg import Image

    from lisa_ros.msg import SemanticSegmentation

    descriptions = tmp_path / "mine.yaml"
    descriptions.write_text("floor: flat grey concrete\n")
    io = lisa_io(params_file=REPO / "config" / "lisa_cpu.yaml", start_timeout=180,
                 params={"model.path": str(tiny_lisa_checkpoint), "semantic.descriptions_file": str(descriptions),
                         "semantic.description_cache": str(tmp_path / "cache.json"),
                         "semantic.max_description_tokens": 4, "semantic.filter_threshold": 0.0,
                         "semantic.categories": ["floor", "person"], "semantic.rate_hz": 1.0})
    client = _semantic_client(ros_probe, io.node)
    overlays = ros_probe.collect(io.node.topic("~/semantic_overlay"), Image)
    published = ros_probe.collect(io.node.topic("~/semantic"), SemanticSegmentation)
    image = make_image_msg(width=64, height=48, stamp=(3, 4), frame_id="cam")
    first = _ask(ros_probe, client, ["floor", "person", "[SEG]"], image, timeout=180)
    assert first.status in (first.STATUS_OK, first.STATUS_NOT_FOUND), first.status_message
    assert (first.label.width, first.label.height, first.label.encoding) == (64, 48, "mono8")
    assert list(first.label_ids) == [1, 2, 3] and list(first.label_names) == ["floor", "person", "[SEG]"]
    assert list(first.description_sources) == ["user", "generated", "generated"]
    assert first.descriptions[0] == "flat grey concrete" and first.model_id == "lisa-tiny-7b"
    assert set(_label(first).ravel()) <= {0, 1, 2, 3} and "segment" in first.timing_names
    assert first.inference_ms > 0 and list(first.filtered_out) == []
    second = _ask(ros_probe, client, ["person", "[SEG]"], image, timeout=180)
    assert list(second.description_sources) == ["cache", "cache"]  # the robot pays once per category
    assert list(second.descriptions) == list(first.descriptions[1:])
    io.publish_frame(make_image_msg(width=40, height=30, stamp=(5, 0)))
    periodic = wait_for(lambda: published and published[0], 180, "a periodic label map")
    assert periodic.status in (periodic.STATUS_OK, periodic.STATUS_NOT_FOUND), periodic.status_message
    assert (periodic.label.width, periodic.label.height, periodic.header.stamp.sec) == (40, 30, 5)
    assert list(periodic.label_names) == ["floor", "person"]
    overlay = wait_for(lambda: overlays and overlays[0], 30, "an overlay")
    assert overlay.encoding == "rgb8" and (overlay.width, overlay.height) in ((64, 48), (40, 30))
    # The filter on the real engine, in the same process: semantic.* is read at configure (refused while
    # configured, there is no per-request threshold), so the node is reconfigured; the tiny model reloads at once.
    threshold = {"semantic.filter_threshold": 0.9}  # the untrained checkpoint's P(yes) is ~0.52 for any category
    successful, reason = set_parameters(io, **threshold)["semantic.filter_threshold"]
    assert not successful and "take effect when the model loads" in reason
    assert io.node.change_state(ros_probe, "deactivate") and io.node.change_state(ros_probe, "cleanup")
    assert set_parameters(io, **threshold)["semantic.filter_threshold"] == (True, "")
    assert io.node.change_state(ros_probe, "configure") and io.node.change_state(ros_probe, "activate")
    requested = ["floor", "person", "[SEG]"]
    filtered = _ask(ros_probe, client, requested, image, timeout=180)
    assert filtered.status == filtered.STATUS_NOT_FOUND, filtered.status_message
    assert "every category was filtered out (filter_threshold 0.9)" in filtered.status_message
    assert list(filtered.filtered_out) == requested and len(filtered.filtered_reasons) == len(requested)
    assert len(filtered.presence) == len(requested) and all(0.0 <= p <= 1.0 for p in filtered.presence)  # not NaN
    for reason, presence in zip(filtered.filtered_reasons, filtered.presence):
        assert reason.startswith("P(yes) ") and reason.endswith(" < filter_threshold 0.9"), reason
        assert float(reason.split()[1]) == pytest.approx(presence, abs=1e-3)
    assert (filtered.label.width, filtered.label.height) == (64, 48) and not _label(filtered).any()
    assert list(filtered.scores) == [0.0] * len(requested) and list(filtered.pixel_fractions) == [0.0] * len(requested)
    assert "filter" in filtered.timing_names
    assert io.node.popen.poll() is None and "Traceback" not in io.node.log
