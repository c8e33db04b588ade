"""Image validation and conversion: pixel-exact per encoding, clear refusals."""
import io
import re
import struct
import types

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage

from lisa_ros.core.image import SUPPORTED_ENCODINGS, ImageError, compressed_to_rgb, image_message_to_rgb, raw_to_rgb

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)


def raw(encoding, pixels, *, padding=0, bigendian=False):
    """Message fields for pixels (H, W[, C]) with ``padding`` extra bytes per row."""
    height, width = pixels.shape[:2]
    data = np.ascontiguousarray(pixels)
    if bigendian and data.dtype.itemsize > 1:
        data = data.astype(data.dtype.newbyteorder(">"))
    rows = data.view(np.uint8).reshape(height, -1)
    step = rows.shape[1] + padding
    padded = np.zeros((height, step), np.uint8)
    padded[:, :rows.shape[1]] = rows
    return dict(encoding=encoding, width=width, height=height, step=step, is_bigendian=bigendian,
                data=padded.tobytes())


def convert(fields, **kwargs):
    return raw_to_rgb(fields["encoding"], fields["width"], fields["height"], fields["step"],
                      fields["is_bigendian"], fields["data"], **kwargs)


@pytest.mark.parametrize("padding", [0, 3])
@pytest.mark.parametrize("encoding,pixels", [
    ("rgb8", RGB),
    ("bgr8", RGB[:, :, ::-1]),
    ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 9, np.uint8)])),
    ("bgra8", np.dstack([RGB[:, :, ::-1], np.full(RGB.shape[:2], 9, np.uint8)])),
])
def test_colour_encodings_are_pixel_exact(encoding, pixels, padding):
    assert np.array_equal(convert(raw(encoding, pixels, padding=padding)), RGB)


def test_mono8_becomes_grey_rgb():
    grey = RGB[:, :, 0]
    assert np.array_equal(convert(raw("mono8", grey, padding=2)), np.dstack([grey] * 3))


@pytest.mark.parametrize("bigendian", [False, True])
def test_mono16_keeps_the_high_byte_in_either_byte_order(bigendian):
    values = RNG.integers(0, 65536, size=(4, 5), dtype=np.uint16)
    out = convert(raw("mono16", values, bigendian=bigendian))
    assert np.array_equal(out[:, :, 1], (values >> 8).astype(np.uint8))


@pytest.mark.parametrize("bigendian", [False, True])
def test_16uc1_depth_is_normalised_grey_with_zero_as_invalid(bigendian):
    depth = np.array([[0, 1000], [2000, 3000]], np.uint16)
    out = convert(raw("16UC1", depth, bigendian=bigendian))[:, :, 0]
    assert out.tolist() == [[0, 1], [128, 255]]


def test_32fc1_depth_is_normalised_grey_with_nan_as_invalid():
    depth = np.array([[np.nan, 0.5], [1.0, np.inf]], np.float32)
    out = convert(raw("32FC1", depth))[:, :, 0]
    assert out.tolist() == [[0, 1], [255, 0]]


def test_yuv422_uyvy_and_yuyv_orders_give_the_same_pixels():
    # The same pixels in UYVY (ROS yuv422, uyvy) and YUYV (yuv422_yuy2, yuyv) byte order.
    height, width = 2, 4
    uyvy = np.tile(np.array([128, 100, 128, 100], np.uint8), (height, width // 2)).reshape(height, width, 2)
    out = convert(raw("yuv422", uyvy))
    assert np.array_equal(out, cv2.cvtColor(uyvy, cv2.COLOR_YUV2RGB_UYVY))
    yuyv = np.tile(np.array([100, 128, 100, 128], np.uint8), (height, width // 2)).reshape(height, width, 2)
    assert np.array_equal(convert(raw("yuv422_yuy2", yuyv)), out)
    assert np.array_equal(convert(raw("yuyv", yuyv)), out)
    assert np.array_equal(convert(raw("uyvy", uyvy)), out)
    assert np.all(out == out[0, 0]) and out[0, 0, 0] == out[0, 0, 1] == out[0, 0, 2]


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
@pytest.mark.parametrize("bits", [8, 16])
def test_bayer_patterns_reconstruct_a_flat_colour(pattern, bits):
    colour = {"r": 200, "g": 120, "b": 40}
    mosaic = np.zeros((8, 8), np.uint16 if bits == 16 else np.uint8)
    for index, letter in enumerate(pattern):
        value = colour[letter] * (256 if bits == 16 else 1)
        mosaic[index // 2::2, index % 2::2] = value
    out = convert(raw(f"bayer_{pattern}{bits}", mosaic))
    assert out[2:6, 2:6].reshape(-1, 3).tolist() == [[200, 120, 40]] * 16


@pytest.mark.parametrize("fields,message", [
    (dict(encoding="rgb8", width=4, height=2, step=12, data=bytes(23)), "data length 23"),
    (dict(encoding="rgb8", width=4, height=2, step=10, data=bytes(20)), "step 10 is smaller"),
    (dict(encoding="rgb8", width=0, height=2, step=0, data=b""), "zero size"),
    (dict(encoding="rgb8", width=4, height=0, step=12, data=b""), "zero size"),
    (dict(encoding="jpeg", width=4, height=2, step=12, data=bytes(24)), "unsupported image encoding 'jpeg'"),
    (dict(encoding="", width=4, height=2, step=12, data=bytes(24)), "unsupported image encoding ''"),
    (dict(encoding="yuv422", width=3, height=2, step=6, data=bytes(12)), "even width"),
    (dict(encoding="rgb8", width=100000, height=100000, step=300000, data=bytes(10)), "max_image_pixels"),
])
def test_inconsistent_messages_are_refused_with_the_reason(fields, message):
    with pytest.raises(ImageError, match=message):
        raw_to_rgb(fields["encoding"], fields["width"], fields["height"], fields["step"], False, fields["data"])


def test_every_supported_encoding_is_listed_in_the_error():
    with pytest.raises(ImageError) as error:
        raw_to_rgb("nv12", 2, 2, 2, False, bytes(4))
    assert all(name in str(error.value) for name in SUPPORTED_ENCODINGS)


def encode(image, fmt, **kwargs):
    buffer = io.BytesIO()
    PILImage.fromarray(image).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_png_round_trip_is_pixel_exact():
    assert np.array_equal(compressed_to_rgb("png", encode(RGB, "PNG")), RGB)
    grey16 = RNG.integers(0, 65536, size=(4, 5), dtype=np.uint16)
    out = compressed_to_rgb("png", encode(grey16, "PNG"))
    assert np.array_equal(out[:, :, 0], (grey16 >> 8).astype(np.uint8))


def test_jpeg_decodes_close_to_the_source():
    smooth = np.full((16, 16, 3), (10, 130, 250), np.uint8)
    out = compressed_to_rgb("rgb8; jpeg compressed bgr8", encode(smooth, "JPEG", quality=95))
    assert out.shape == (16, 16, 3) and np.abs(out.astype(int) - smooth).max() <= 3


@pytest.mark.parametrize("data,message", [
    (b"", "no data"),
    (b"not an image at all", "corrupted or unreadable"),
    (encode(RGB, "PNG")[:-30], "corrupted or unreadable"),
    (encode(RGB, "JPEG")[:40], "corrupted or unreadable"),
    (encode(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8), "JPEG")[:-200], "corrupted or unreadable"),
    (encode(RGB, "BMP"), "expected JPEG or PNG"),
])
def test_corrupted_compressed_data_is_refused(data, message):
    with pytest.raises(ImageError, match=message):
        compressed_to_rgb("jpeg", data)


def test_compressed_size_is_checked_before_decoding():
    with pytest.raises(ImageError, match="max_image_pixels"):
        compressed_to_rgb("png", encode(np.zeros((100, 100, 3), np.uint8), "PNG"), max_pixels=5000)


DEPTH_MM = np.array([[0, 400, 800, 1200], [1600, 2000, 0, 4000], [3000, 2500, 900, 650]], np.uint16)


def opencv_png16(values: np.ndarray) -> bytes:
    """A 16-bit grey PNG as image_transport's publishers write it (cv::imencode)."""
    ok, data = cv2.imencode(".png", values)
    assert ok and values.dtype == np.uint16
    return data.tobytes()


def test_16bit_png_over_compressed_image_is_read_as_the_format_encoding():
    """compressed_image_transport sends "16UC1; png compressed ": the same grey as the raw 16UC1 depth."""
    png = opencv_png16(DEPTH_MM)
    expected = convert(raw("16UC1", DEPTH_MM))
    assert np.array_equal(compressed_to_rgb("16UC1; png compressed ", png), expected)
    assert (expected[0, 1, 0], expected[1, 1, 0], expected[1, 3, 0]) == (1, 114, 255)  # not the near-black high byte
    intensity = compressed_to_rgb("mono16; png compressed ", png)
    assert np.array_equal(intensity, convert(raw("mono16", DEPTH_MM)))


COMPRESSED_DEPTH_HEADER = struct.Struct("<iff")  # compressed_depth_image_transport's ConfigHeader


def test_compressed_depth_png_16uc1_matches_raw_depth():
    data = COMPRESSED_DEPTH_HEADER.pack(0, 0.0, 0.0) + opencv_png16(DEPTH_MM)
    assert np.array_equal(compressed_to_rgb("16UC1; compressedDepth png", data), convert(raw("16UC1", DEPTH_MM)))
    assert np.array_equal(compressed_to_rgb("16UC1; compressedDepth", data), convert(raw("16UC1", DEPTH_MM)))


def test_compressed_depth_png_32fc1_inverse_depth_matches_raw_depth():
    """Quantised as the transport's encoder does (depth_quantization 100, depth_max 10 m, its defaults)."""
    depth = np.array([[0.5, 1.0, np.nan], [2.0, 3.5, 12.0], [5.0, 7.5, 9.0]], np.float32)
    quant_a = np.float32(100.0 * 101.0)
    quant_b = np.float32(1.0 - quant_a / 10.0)
    with np.errstate(invalid="ignore"):
        inverse = np.where(depth < 10.0, quant_a / depth + quant_b, 0).astype(np.uint16)
    data = COMPRESSED_DEPTH_HEADER.pack(0, float(quant_a), float(quant_b)) + opencv_png16(inverse)
    out = compressed_to_rgb("32FC1; compressedDepth png", data)[:, :, 0].astype(int)
    expected = convert(raw("32FC1", np.where(depth < 10.0, depth, np.nan).astype(np.float32)))[:, :, 0].astype(int)
    assert out[0, 2] == out[1, 2] == 0  # NaN and beyond depth_max: invalid
    assert np.abs(out - expected).max() <= 1  # the quantisation's rounding


@pytest.mark.parametrize("fmt,data,message", [
    ("16UC1; compressedDepth rvl", bytes(40), "codec 'rvl' is not supported"),
    ("16UC1; compressedDepth png", encode(RGB, "PNG"), "unreadable compressed image (16UC1; compressedDepth"),
    ("16UC1; compressedDepth png", bytes(12), "no PNG after its 12-byte header"),
    ("16UC1; compressedDepth png", bytes(12) + encode(RGB, "PNG"), "8-bit RGB PNG"),
    ("rgb8; compressedDepth png", bytes(12) + opencv_png16(DEPTH_MM), "16UC1 or 32FC1"),
], ids=["rvl", "no-header", "header-only", "8-bit-png", "colour-encoding"])
def test_unusable_compressed_depth_is_refused_with_the_reason(fmt, data, message):
    with pytest.raises(ImageError, match=re.escape(message)):
        compressed_to_rgb(fmt, data)


def test_a_message_is_decoded_by_its_fields_whatever_library_made_it():
    """The node's rclpy messages and the tools' rosbags ones: an Image by its encoding, a CompressedImage
    by its format, both under max_pixels."""
    image = types.SimpleNamespace(**raw("bgr8", RGB[:, :, ::-1]))
    assert np.array_equal(image_message_to_rgb(image), RGB)
    compressed = types.SimpleNamespace(format="rgb8; png compressed bgr8", data=encode(RGB, "PNG"))
    assert np.array_equal(image_message_to_rgb(compressed), RGB)
    for msg in (image, compressed):
        with pytest.raises(ImageError, match="max_image_pixels = 47"):
            image_message_to_rgb(msg, max_pixels=47)
