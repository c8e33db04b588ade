"""Malformed input and engine faults: each gets an error result that says why, and the node keeps answering."""
import struct
import time

import numpy as np
import pytest

from conftest import make_image_msg, wait_for

pytestmark = pytest.mark.ros


def cdr_string(raw: bytes) -> bytes:
    """A serialized std_msgs/String carrying arbitrary bytes (little-endian CDR)."""
    return b"\x00\x01\x00\x00" + struct.pack("<I", len(raw) + 1) + raw + b"\x00"


@pytest.fixture
def io(lisa_io):
    return lisa_io(params={"compressed": True})


def expect(io, text, status_name, fragment):
    from lisa_ros.msg import SegmentationResult

    result = io.results_for(text)[-1]
    assert result.status == getattr(SegmentationResult, f"STATUS_{status_name}"), (
        f"{text!r}: {result.status} {result.status_message}")
    assert fragment in result.status_message, result.status_message
    return result


def test_bad_instructions_and_images_each_get_an_error_result(io, ros_probe):
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import String

    io.ask("before any frame")
    expect(io, "before any frame", "NO_IMAGE", "no image received yet")

    for text in ("", "   \t "):
        io.ask(text)
    empties = wait_for(lambda: (found := [r for r in io.results if "instruction is empty" in r.status_message])
                       and len(found) == 2 and found, 10, "two empty-instruction results")
    assert all(r.request_id and r.status == r.STATUS_INVALID_INSTRUCTION for r in empties)
    io.ask("x" * 1000)
    expect(io, "xxx", "INVALID_INSTRUCTION", "max_instruction_chars = 200")
    raw = ros_probe.node.create_publisher(String, io.node.topic("instruction"), 100)
    wait_for(lambda: raw.get_subscription_count() >= 1, 10, "instruction subscriber")
    raw.publish(cdr_string(b"bad \xff\xfe utf8"))
    expect(io, "bad ", "INVALID_INSTRUCTION", "not valid UTF-8")

    def via_topic(msg, text, fragment):
        io.publish_frame(msg)
        io.ask(text)
        expect(io, text, "INVALID_IMAGE", fragment)

    padded = make_image_msg(width=8, height=4)
    padded.step = 20  # smaller than 8 * 3
    via_topic(padded, "step mismatch", "step 20 is smaller")
    truncated = make_image_msg(width=8, height=4)
    truncated.data = bytes(truncated.data)[:50]
    via_topic(truncated, "short data", "data length 50")
    unknown = make_image_msg(width=8, height=4, encoding="mono8")
    unknown.encoding = "nv21"
    via_topic(unknown, "odd encoding", "unsupported image encoding 'nv21'")
    via_topic(_image(width=0, height=0, step=0, data=b""), "empty frame", "zero size")
    via_topic(_image(width=200000, height=100000, step=600000, data=bytes(16)), "huge frame", "max_image_pixels")

    compressed = ros_probe.publisher(io.node.topic("image/compressed"), CompressedImage)
    io.publish_frame(CompressedImage(format="jpeg", data=b"\xff\xd8\xff\xe0 definitely not a jpeg"),
                     publisher=compressed)
    io.ask("corrupt jpeg")
    expect(io, "corrupt jpeg", "INVALID_IMAGE", "corrupted or unreadable")

    # Service images are checked the same way; a zero-width image with data is not "the latest frame".
    bad_service = _image(width=0, height=5, step=0, data=bytes(3))
    result = io.call("service zero", image=bad_service)
    assert result.status == result.STATUS_INVALID_IMAGE and "zero size" in result.status_message

    # Still answering, on a big-endian 16-bit depth image.
    depth = np.arange(12, dtype=">u2").reshape(3, 4) * 100
    ok = io.call("depth", image=_image(width=4, height=3, step=8, data=depth.tobytes(), encoding="16UC1",
                                       is_bigendian=1))
    assert ok.status == ok.STATUS_OK, ok.status_message
    assert "with mean" in ok.explanation
    log = io.node.log
    assert "step 20 is smaller" in log and "max_instruction_chars" in log  # a log line tells the user


def test_engine_faults_and_timeouts_get_a_status_and_later_requests_are_answered(io):
    io.publish_frame(make_image_msg(stamp=(5, 0)))
    io.ask("cup #raise")
    expect(io, "cup #raise", "ENGINE_ERROR", "injected failure")
    io.ask("cup #oom")
    expect(io, "cup #oom", "OUT_OF_MEMORY", "caches cleared")
    started = time.monotonic()
    io.ask("cup #hang")
    expect(io, "cup #hang", "TIMEOUT", "inference_timeout = 1.0")
    assert time.monotonic() - started < 2.5
    io.ask("cup after the hang")
    after = io.results_for("cup after the hang", timeout=10)[0]
    assert after.status == after.STATUS_OK, after.status_message  # the hung call was cancelled
    time.sleep(0.3)  # a second answer for the hung request would come in this window
    assert len(io.results_for("cup #hang")) == 1  # the hung call finishing did not answer a second time


def _image(**fields):
    from sensor_msgs.msg import Image

    data = fields.pop("data")
    msg = Image(encoding=fields.pop("encoding", "rgb8"), **fields)
    msg.data = data
    msg.header.frame_id = "camera"
    return msg



def test_answers_refused_before_reaching_a_frame_carry_the_stamp_of_reception(lisa_io):
    """They used to have an empty header, so consumers that sort or pair by stamp saw time 0."""
    from lisa_ros.msg import SegmentationResult

    io = lisa_io()
    before = time.time()
    io.ask("no frame yet")  # NO_IMAGE
    io.ask("x" * 300)  # INVALID_INSTRUCTION (max_instruction_chars 200)
    refused = io.results_for("no frame yet") + io.results_for("x" * 100)
    after = time.time()
    assert [r.status for r in refused] == [SegmentationResult.STATUS_NO_IMAGE,
                                           SegmentationResult.STATUS_INVALID_INSTRUCTION]
    for result in refused:
        stamp = result.header.stamp.sec + result.header.stamp.nanosec * 1e-9
        assert before - 0.1 <= stamp <= after and result.header.frame_id == ""
