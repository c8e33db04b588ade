"""SegmentationResult masks raw or PNG (result_mask_encoding) over real DDS, decoded with docs/node.md's code."""
import re

import numpy as np
import pytest

from conftest import REPO, get_parameters, make_image_msg, set_parameters

pytestmark = pytest.mark.ros


def documented_result_masks():
    """The decoding example of docs/node.md ("Compact masks"), run as written."""
    text = (REPO / "docs" / "node.md").read_text()
    block = re.search(r"```python\n(import cv2\n(?:(?!```).)*?def result_masks\(result\):.*?)```", text, re.S)
    assert block, "docs/node.md's result_masks example"
    namespace: dict = {}
    exec(block.group(1), namespace)  # noqa: S102 (the project's own docs)
    return namespace["result_masks"]


def bands(count, height, width):
    """The plumbing engine's masks: one full-width horizontal band per part."""
    masks = [np.zeros((height, width), bool) for _ in range(count)]
    for k, mask in enumerate(masks):
        mask[k * height // count:(k + 1) * height // count] = True
    return masks


def test_result_masks_raw_and_png_over_dds_decode_to_the_same_pixels(lisa_io):
    from rclpy.serialization import serialize_message

    from lisa_ros.core.masks import PNG_MASK_FORMAT

    result_masks = documented_result_masks()
    io = lisa_io()
    assert get_parameters(io, "result_mask_encoding") == {"result_mask_encoding": "raw"}  # declared with its default
    io.publish_frame(make_image_msg(width=161, height=90, stamp=(3, 0)))
    io.ask("a and b and c")
    raw, = io.results_for("a and b and c")
    assert raw.mask_encoding == "raw" and len(raw.masks) == 3 and not raw.compressed_masks
    expected = bands(3, 90, 161)
    assert all(np.array_equal(got, want) for got, want in zip(result_masks(raw), expected, strict=True))

    refused, reason = set_parameters(io, result_mask_encoding="jpeg")["result_mask_encoding"]
    assert not refused and "'raw' or 'png'" in reason
    assert set_parameters(io, result_mask_encoding="png")["result_mask_encoding"] == (True, "")
    io.ask("a and b and c, as png")
    png, = io.results_for("a and b and c, as png")
    assert png.mask_encoding == "png" and len(png.compressed_masks) == 3 and not png.masks
    assert all(m.format == PNG_MASK_FORMAT and m.header == png.header for m in png.compressed_masks)
    assert all(np.array_equal(got, want) for got, want in zip(result_masks(png), expected, strict=True))
    assert [(b.x_offset, b.y_offset, b.width, b.height) for b in png.boxes] == [
        (b.x_offset, b.y_offset, b.width, b.height) for b in raw.boxes]
    assert len(serialize_message(png)) < len(serialize_message(raw)) / 10

    answer = io.call("a and b")  # the service's result too
    assert answer.mask_encoding == "png" and len(answer.compressed_masks) == 2 and not answer.masks
    assert all(np.array_equal(got, want) for got, want in zip(result_masks(answer), bands(2, 90, 161), strict=True))
