"""Bad and unusual input end to end: lisa_node as a process, over real DDS on loopback.

Pixel exactness end to end: with an instruction containing "nothing" the plumbing
engine returns no mask, and the node then publishes ``~/overlay`` = the decoded
frame itself (blending no mask leaves every pixel as it was). So the overlay shows
exactly which pixels the engine saw, and is compared with the independent
expectation of test/image_samples.py.
"""
from __future__ import annotations

import struct
import time

import numpy as np
import pytest

from image_samples import matches, sample
from lisa_ros.core.types import Status
from rel_support import bare_image, image_msg, settle, wait_for

CATEGORY = "Bad input: end to end (DDS)"
pytestmark = pytest.mark.ros

OK, NOT_FOUND, INVALID_IMAGE, INVALID_INSTRUCTION = 0, 1, 2, 3


def cdr_string(raw: bytes) -> bytes:
    """A serialized std_msgs/String carrying arbitrary bytes (little-endian CDR)."""
    return b"\x00\x01\x00\x00" + struct.pack("<I", len(raw) + 1) + raw + b"\x00"


@pytest.fixture
def node(lisa_io, ros_probe):
    from sensor_msgs.msg import Image

    # These cases send bursts of content to check, not load: a queue that holds a whole burst keeps
    # BUSY answers (the load suite's subject) out even on a slow machine.
    io = lisa_io(params={"compressed": True, "publish_overlay": True, "max_queue": 64})
    io.overlays = ros_probe.collect(io.node.topic("~/overlay"), Image)
    wait_for(lambda: ros_probe.node.count_publishers(io.node.topic("~/overlay")) >= 1, 10, "overlay publisher")
    return io


def overlay_pixels(io, sec: int, timeout: float = 30.0) -> np.ndarray:
    """The overlay of the frame stamped ``sec`` s (up to 30 s: once, with two CPU hogs beside the suite, one
    had not arrived within 10 s though its result had)."""
    msg = wait_for(lambda: next((o for o in list(io.overlays) if o.header.stamp.sec == sec), None), timeout,
                   f"the overlay of frame {sec}")
    assert msg.encoding == "rgb8" and msg.step == msg.width * 3
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)


def test_every_encoding_is_seen_pixel_exactly_by_the_engine_service_and_topic(case, node):
    from lisa_ros.core.image import SUPPORTED_ENCODINGS

    sent = []
    sec = 100
    for index, encoding in enumerate(SUPPORTED_ENCODINGS):
        pixels, expected = sample(encoding)
        bigendian = pixels.dtype.itemsize > 1 and index % 2 == 0
        sec += 1
        text = f"nothing via service {encoding}"
        sent.append(text)
        result = node.call(text, image=image_msg(pixels, encoding, padding=3, bigendian=bigendian, stamp=(sec, 0)))
        seen = overlay_pixels(node, sec)
        ok = result.status == NOT_FOUND and matches(seen, expected)
        case.check(ok, f"service {encoding} be={bigendian}: {Status.name_of(result.status)} {result.status_message}")
    # The camera path (topic), including compressed frames.
    from sensor_msgs.msg import CompressedImage

    for encoding in ("rgb8", "bgra8", "yuv422", "bayer_grbg16", "32FC1", "16UC1"):
        pixels, expected = sample(encoding)
        sec += 1
        node.publish_frame(image_msg(pixels, encoding, padding=1, bigendian=encoding.endswith("16"), stamp=(sec, 0)))
        text = f"nothing via topic {encoding}"
        sent.append(text)
        node.ask(text)
        result = node.results_for(text)[0]
        case.check(result.status == NOT_FOUND and matches(overlay_pixels(node, sec), expected), f"topic {encoding}")
    compressed = node.probe.publisher(node.node.topic("image/compressed"), CompressedImage)
    from image_samples import encode, opencv_rgb

    rgb = np.random.default_rng(3).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    for fmt, data in (("png", encode(rgb, "PNG")), ("jpeg", encode(rgb, "JPEG", quality=90))):
        sec += 1
        msg = CompressedImage(format=fmt, data=data)
        msg.header.stamp.sec = sec
        node.publish_frame(msg, publisher=compressed)  # sent again until received (best effort, new publisher)
        text = f"nothing via compressed {fmt}"
        sent.append(text)
        node.ask(text)
        result = node.results_for(text)[0]
        seen = overlay_pixels(node, sec)
        tolerance = 0 if fmt == "png" else 2
        diff = int(np.abs(seen.astype(int) - opencv_rgb(data).astype(int)).max())
        case.check(result.status == NOT_FOUND and diff <= tolerance, f"compressed {fmt}: diff {diff}")
    time.sleep(0.3)
    accounting = case.account(sent, node.results)
    # The accounting above counted each instruction; the checks added per-input verdicts too.
    assert not accounting["lost"] and not accounting["duplicates"], accounting
    assert not case.failures, case.failures


INCONSISTENT = [
    ("step smaller than a row", dict(width=8, height=4, step=20, data=bytes(80)), "step 20 is smaller"),
    ("data longer than step*height", dict(width=8, height=4, step=24, data=bytes(97)), "data length 97"),
    ("data shorter than step*height", dict(width=8, height=4, step=24, data=bytes(95)), "data length 95"),
    ("height 0 with data", dict(width=8, height=0, step=24, data=bytes(24)), "zero size"),
    ("width 0 with data", dict(width=0, height=3, step=0, data=bytes(9)), "zero size"),
    ("declared 65535x65535", dict(width=65535, height=65535, step=65535 * 3, data=bytes(10)), "max_image_pixels"),
    ("declared 2^32-1 x 2^32-1", dict(width=2**32 - 1, height=2**32 - 1, step=2**32 - 1, data=bytes(10)),
     "max_image_pixels"),
    ("unknown encoding", dict(width=2, height=2, step=6, data=bytes(12), encoding="hsv8"), "unsupported"),
    ("empty encoding", dict(width=2, height=2, step=6, data=bytes(12), encoding=""), "unsupported"),
    ("odd-width yuyv", dict(width=3, height=2, step=6, data=bytes(12), encoding="yuyv"), "even width"),
    ("mono16 with odd step", dict(width=3, height=2, step=5, data=bytes(10), encoding="mono16"), "step 5"),
]


def test_inconsistent_service_images_are_refused_and_the_next_request_succeeds(case, node):
    sent = []
    for index, (name, fields, fragment) in enumerate(INCONSISTENT):
        text = f"bad service image {index} ({name})"
        sent.append(text)
        result = node.call(text, image=bare_image(stamp=(500 + index, 0), **fields))
        case.check(result.status == INVALID_IMAGE and fragment in result.status_message,
                   f"{name}: {Status.name_of(result.status)} {result.status_message[:80]}", error=True)
        good = f"good after {index}"
        sent.append(good)
        pixels = np.full((4, 6, 3), index, np.uint8)
        after = node.call(good, image=image_msg(pixels, "rgb8", stamp=(600 + index, 0)))
        case.check(after.status == OK, f"after {name}: {Status.name_of(after.status)}")
    time.sleep(0.2)
    accounting = case.account(sent, node.results)
    assert not accounting["lost"] and not accounting["duplicates"], accounting
    assert not case.failures, case.failures


def test_oversized_service_image_payload_is_refused_without_harm(case, lisa_io):
    """A real 12 MP (36 MB) frame over DDS, with max_image_pixels 4 MP: refused, memory back, node answers."""
    from lisa_ros.tools.node_process import rss_mb

    io = lisa_io()
    pid = io.node.popen.pid
    before = rss_mb(pid)
    big = np.zeros((3000, 4000, 3), np.uint8)
    big[::7] = 200
    started = time.monotonic()
    result = io.call("oversized frame", image=image_msg(big, "rgb8", stamp=(1, 0)), timeout=60)
    took = time.monotonic() - started
    case.check(result.status == INVALID_IMAGE and "max_image_pixels = 4000000" in result.status_message,
               f"12 MP: {Status.name_of(result.status)} {result.status_message[:80]}", error=True)
    small = io.call("small after oversized", image=image_msg(np.ones((4, 4, 3), np.uint8), "rgb8", stamp=(2, 0)))
    case.check(small.status == OK, "next request")
    after = rss_mb(pid)
    case.note(f"36 MB request answered in {took:.2f} s; node RSS {before:.0f} -> {after:.0f} MB")
    assert not case.failures, case.failures


def test_hostile_instructions_over_dds_are_answered_or_refused_with_the_reason(case, node, ros_probe):
    from std_msgs.msg import String

    node.publish_frame(image_msg(np.full((6, 8, 3), 40, np.uint8), "rgb8", stamp=(900, 0)))
    ok_texts = ["[SEG] <image> <im_start> <im_end> </s> <s>", "x" * 200, "\U0001F600" * 200,
                "  padded with spaces  ", "log injection\n[ERROR] [lisa_node]: forged line",
                "tab\tand\r\ncontrol \x1b[31m red"]
    refused = {"": "empty", " \t\n ": "empty", "\u3000\u00a0": "empty", "y" * 201: "max_instruction_chars = 200",
               "z" * 1_000_000: "max_instruction_chars = 200"}
    for text in ok_texts:
        node.ask(text)
    # ROS strings end at the first NUL (C strings in rosidl): "cut\x00off" arrives as "cut". The node's NUL
    # check only matters for in-process callers; over DDS the tail never arrives.
    node.ask("cut\x00off")
    ok_texts.append("cut")
    for text in refused:
        node.ask(text)
    raw = ros_probe.node.create_publisher(String, node.node.topic("instruction"), 100)
    wait_for(lambda: raw.get_subscription_count() >= 1, 10, "instruction subscriber")
    invalid_utf8 = [b"bad1 \xff\xfe", b"bad2 \xc0\xaf", b"bad3 \xed\xa0\x80", b"bad4 \xe2\x82"]
    for data in invalid_utf8:
        raw.publish(cdr_string(data))
    expected_count = len(ok_texts) + len(refused) + len(invalid_utf8)
    settle(lambda: len(node.results) >= expected_count, 20)
    results = list(node.results)
    by_echo = {}
    for result in results:
        by_echo.setdefault(result.instruction, []).append(result)
    for text in ok_texts:
        got = by_echo.get(text.strip(), [])
        case.check(len(got) == 1 and got[0].status == OK and got[0].instruction == text.strip(),
                   f"{text[:30]!r}: {[Status.name_of(r.status) for r in got]}")
    refusals = [r for r in results if r.status == INVALID_INSTRUCTION]
    for text, fragment in refused.items():
        echo = text[:500] + "..." if len(text) > 500 else text  # refused instructions are echoed as sent
        got = [r for r in refusals if r.instruction == echo]
        case.check(len(got) >= 1 and fragment in got[0].status_message,
                   f"{text[:20]!r}: {[r.status_message[:60] for r in got]}", error=True)
    utf8 = [r for r in refusals if "not valid UTF-8" in r.status_message]
    for data in invalid_utf8:
        prefix = data.split(b" ")[0].decode()
        got = [r for r in utf8 if r.instruction.startswith(prefix)]
        case.check(len(got) == 1, f"{data!r}: {len(got)} UTF-8 refusals", error=True)
    total = len(results)
    case.lost += max(0, expected_count - total)
    case.duplicates += max(0, total - expected_count)
    log = node.node.log
    forged = [line for line in log.splitlines() if line.startswith("[ERROR] [lisa_node]: forged")]
    case.check(not forged, "no forged log line", error=True)
    assert total == expected_count, f"{total} results for {expected_count} instructions"
    assert not case.failures, case.failures


def test_corrupted_compressed_frames_on_the_camera_topic_are_refused_and_the_node_recovers(case, node, ros_probe):
    from sensor_msgs.msg import CompressedImage

    from image_samples import encode
    from test_images_unit import _png_with_declared_size

    rgb = np.random.default_rng(9).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    png, jpeg = encode(rgb, "PNG"), encode(rgb, "JPEG")
    frames = [
        ("png", png[: len(png) // 2], "corrupted or unreadable"),
        ("jpeg", jpeg[:60], "corrupted or unreadable"),
        ("jpeg", b"", "no data"),
        ("jpeg", bytes(range(256)) * 4, "corrupted or unreadable"),
        ("png", encode(rgb, "BMP"), "expected JPEG or PNG"),
        ("png", _png_with_declared_size(100_000, 100_000), "refused"),  # PIL's own bomb limit fires first
        ("16UC1; compressedDepth png", png, "compressedDepth"),
    ]
    publisher = ros_probe.publisher(node.node.topic("image/compressed"), CompressedImage)
    sent = []
    for index, (fmt, data, fragment) in enumerate(frames):
        msg = CompressedImage(format=fmt, data=data)
        msg.header.stamp.sec = 700 + index
        node.publish_frame(msg, publisher=publisher)  # sent again until received (best effort, new publisher)
        text = f"compressed case {index}"
        sent.append(text)
        node.ask(text)
        result = node.results_for(text)[0]
        case.check(result.status == INVALID_IMAGE and fragment in result.status_message,
                   f"{fmt} case {index}: {Status.name_of(result.status)} {result.status_message[:70]}", error=True)
    node.publish_frame(image_msg(rgb, "rgb8", stamp=(800, 0)))
    node.ask("after the corrupted frames")
    sent.append("after the corrupted frames")
    case.check(node.results_for("after the corrupted frames")[0].status == OK, "recovered")
    accounting = case.account(sent, node.results)
    assert not accounting["lost"] and not accounting["duplicates"], accounting
    assert not case.failures, case.failures
