"""Image validation and conversion: every encoding pixel-exact, clear refusals.

Expectations come from test/image_samples.py, computed without lisa_ros. Hostile input
(header fuzz, absurd sizes and decompression bombs under a memory bound, corrupted-data
fuzz) is the reliability suite's: test/reliability/test_images_unit.py.
"""
import io
import re
import struct
import types

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage

from image_samples import RNG, H, W, encode, matches, opencv_rgb, raw_fields, sample
from lisa_ros.core.image import SUPPORTED_ENCODINGS, ImageError, compressed_to_rgb, image_message_to_rgb, raw_to_rgb

RGB = RNG.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)


def raw(encoding, pixels, *, padding=0, bigendian=False):
    """Message fields for pixels (H, W[, C]) with ``padding`` extra bytes per row."""
    width, height, step, data = raw_fields(pixels, padding=padding, bigendian=bigendian)
    return dict(encoding=encoding, width=width, height=height, step=step, is_bigendian=bigendian, data=data)


def convert(fields, *, flag=None, **kwargs):
    """raw_to_rgb on message fields; ``flag`` overrides the is_bigendian the data was written with."""
    bigendian = fields["is_bigendian"] if flag is None else flag
    return raw_to_rgb(fields["encoding"], fields["width"], fields["height"], fields["step"], bigendian,
                      fields["data"], **kwargs)


# -- raw encodings -------------------------------------------------------------------------------

def test_the_issue_encodings_are_all_supported():
    wanted = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "16UC1", "32FC1", "yuv422", "yuyv",
              "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8", "bayer_rggb16", "bayer_bggr16",
              "bayer_gbrg16", "bayer_grbg16"]
    assert set(wanted) <= set(SUPPORTED_ENCODINGS)


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_every_supported_encoding_is_pixel_exact_with_padding_and_both_byte_orders(encoding):
    pixels, expected = sample(encoding)
    multibyte = pixels.dtype.itemsize > 1
    for padding in (0, 1, 7):
        for bigendian in ((False, True) if multibyte else (False,)):
            out = convert(raw(encoding, pixels, padding=padding, bigendian=bigendian))
            assert matches(out, expected), f"{encoding} padding={padding} bigendian={bigendian}"
        if not multibyte:  # the big-endian flag means nothing for bytes: same pixels
            out = convert(raw(encoding, pixels, padding=padding), flag=True)
            assert matches(out, expected), f"{encoding} padding={padding} is_bigendian=1 on 8-bit data"


@pytest.mark.parametrize("encoding", ["mono16", "16UC1", "32FC1", "bayer_rggb16"])
def test_wrong_byte_order_flag_changes_the_pixels(encoding):
    """The flag is honoured, not ignored: big-endian bytes read as little-endian give other pixels."""
    pixels, expected = sample(encoding)
    assert not matches(convert(raw(encoding, pixels, bigendian=True), flag=False), expected)


def test_output_is_a_fresh_contiguous_array_not_a_view_of_the_message():
    for encoding in ("rgb8", "mono8", "rgba8"):
        pixels, _ = sample(encoding)
        width, height, step, data = raw_fields(pixels)
        buffer = bytearray(data)
        out = raw_to_rgb(encoding, width, height, step, False, buffer)
        before = out.copy()
        buffer[:] = bytes(len(buffer))  # the transport reuses its buffer
        assert out.flags.c_contiguous and not np.shares_memory(out, np.frombuffer(buffer, np.uint8)), encoding
        assert np.array_equal(out, before), encoding


@pytest.mark.parametrize("fields,fragment", [
    (dict(encoding="rgb8", width=4, height=2, step=12, data=bytes(23)), "data length 23"),
    (dict(encoding="rgb8", width=4, height=2, step=12, data=bytes(25)), "data length 25"),
    (dict(encoding="rgb8", width=4, height=2, step=12, data=bytes(0)), "data length 0"),
    (dict(encoding="rgb8", width=4, height=2, step=16, data=bytes(24)), "data length 24"),
    (dict(encoding="32FC1", width=3, height=3, step=12, data=bytes(35)), "data length 35"),
    (dict(encoding="rgb8", width=4, height=2, step=10, data=bytes(20)), "step 10 is smaller"),
    (dict(encoding="mono16", width=4, height=2, step=7, data=bytes(14)), "step 7 is smaller"),
    (dict(encoding="rgb8", width=0, height=2, step=0, data=b""), "zero size"),
    (dict(encoding="rgb8", width=5, height=0, step=15, data=b""), "zero size"),
    (dict(encoding="rgb8", width=0, height=0, step=0, data=b""), "zero size"),
    (dict(encoding="yuyv", width=5, height=2, step=10, data=bytes(20)), "even width"),
    (dict(encoding="jpeg", width=4, height=2, step=12, data=bytes(24)), "unsupported image encoding 'jpeg'"),
    (dict(encoding="", width=4, height=2, step=12, data=bytes(24)), "unsupported image encoding ''"),
    (dict(encoding="RGB8", width=1, height=1, step=3, data=bytes(3)), "unsupported image encoding 'RGB8'"),
    (dict(encoding="rgb8\x00", width=1, height=1, step=3, data=bytes(3)), "unsupported image encoding"),
    (dict(encoding="nv12", width=2, height=2, step=2, data=bytes(6)), "unsupported image encoding 'nv12'"),
    (dict(encoding="bayer_rggb32", width=2, height=2, step=8, data=bytes(16)), "unsupported image encoding"),
    (dict(encoding="64FC1", width=2, height=2, step=16, data=bytes(32)), "unsupported image encoding"),
    (dict(encoding="16SC1", width=2, height=2, step=4, data=bytes(8)), "unsupported image encoding"),
])
def test_inconsistent_fields_are_refused_with_the_reason(fields, fragment):
    with pytest.raises(ImageError, match=fragment):
        raw_to_rgb(fields["encoding"], fields["width"], fields["height"], fields["step"], False, fields["data"])


def test_every_supported_encoding_is_listed_in_the_error():
    with pytest.raises(ImageError) as error:
        raw_to_rgb("nv12", 2, 2, 2, False, bytes(4))
    assert all(name in str(error.value) for name in SUPPORTED_ENCODINGS)


def test_max_pixels_boundary_is_exact():
    fields = raw("rgb8", RNG.integers(0, 256, (10, 12, 3), dtype=np.uint8))
    assert convert(fields, max_pixels=120).shape == (10, 12, 3)
    with pytest.raises(ImageError, match="max_image_pixels = 119"):
        convert(fields, max_pixels=119)


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


# -- compressed ----------------------------------------------------------------------------------

def _palette_png(rgb):
    buffer = io.BytesIO()
    PILImage.fromarray(rgb).convert("P", palette=PILImage.ADAPTIVE, colors=16).save(buffer, "PNG")
    return buffer.getvalue()


def _bilevel_png(rgb):
    buffer = io.BytesIO()
    PILImage.fromarray(rgb[:, :, 0] > 127).save(buffer, "PNG")
    return buffer.getvalue()


def _compressed_variants():
    rgb = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    yield "png rgb", encode(rgb, "PNG"), 0
    yield "png rgba", encode(np.concatenate([rgb, rgb[:, :, :1]], 2), "PNG"), 0
    yield "png grey", encode(rgb[:, :, 1], "PNG"), 0
    yield "png palette", _palette_png(rgb), 0
    yield "png 1-bit", _bilevel_png(rgb), 0
    grey16 = RNG.integers(0, 65536, (H, W), dtype=np.uint16)
    yield "png grey16", cv2.imencode(".png", grey16)[1].tobytes(), 0
    rgb16 = RNG.integers(0, 65536, (H, W, 3), dtype=np.uint16)
    yield "png rgb16", cv2.imencode(".png", rgb16[:, :, ::-1])[1].tobytes(), 0
    yield "png interlaced", cv2.imencode(".png", rgb[:, :, ::-1])[1].tobytes(), 0
    smooth = cv2.GaussianBlur(rgb, (5, 5), 2)
    # JPEG decoders may round differently in the IDCT: within 2 of OpenCV's libjpeg-turbo.
    yield "jpeg rgb q95", encode(smooth, "JPEG", quality=95), 2
    yield "jpeg grey", encode(smooth[:, :, 0], "JPEG", quality=90), 2
    yield "jpeg progressive 4:2:0", encode(smooth, "JPEG", quality=80, progressive=True, subsampling=2), 2


@pytest.mark.parametrize("name,data,tolerance", list(_compressed_variants()),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_compressed_variants_match_an_independent_decoder(name, data, tolerance):
    out = compressed_to_rgb("jpeg" if "jpeg" in name else "png", data)
    expected = opencv_rgb(data)
    assert out.dtype == np.uint8 and out.shape == expected.shape, (name, out.shape, expected.shape)
    assert int(np.abs(out.astype(int) - expected.astype(int)).max()) <= tolerance, name


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
])
def test_corrupted_compressed_data_is_refused(data, message):
    with pytest.raises(ImageError, match=message):
        compressed_to_rgb("jpeg", data)


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "WEBP", "ICO"])
def test_other_compressed_formats_are_refused(fmt):
    data = encode(RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8), fmt)
    with pytest.raises(ImageError, match="expected JPEG or PNG|corrupted or unreadable"):
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
