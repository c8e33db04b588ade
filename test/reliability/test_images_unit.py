"""Adversarial image input, ROS-free: the conversion function in lisa_ros.core.image.

Every supported encoding is checked pixel-exactly against an expectation computed
here independently (index arithmetic, the documented depth formula, BT.601 by hand,
the Bayer samples that must survive demosaicing, OpenCV's own decoders for
compressed data), with row padding and both byte orders; everything else must be
refused with ImageError (never another exception), big sizes before any allocation.
"""
from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage

from lisa_ros.core.image import SUPPORTED_ENCODINGS, ImageError, compressed_to_rgb, raw_to_rgb
from rel_support import raw_fields

CATEGORY = "Bad input: images (unit)"
RNG = np.random.default_rng(2026)
H, W = 6, 10  # even width for YUV, several 2x2 Bayer cells

# -- independent expectations ------------------------------------------------------------


def _depth_expectation(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Documented mapping: valid pixels linearly min..max -> 1..255, invalid 0, constant 128."""
    out = np.zeros(values.shape, np.uint8)
    v = values[valid].astype(np.float64)
    if v.size == 0:
        return out
    lo, hi = v.min(), v.max()
    for (y, x) in zip(*np.nonzero(valid)):
        value = float(values[y, x])
        out[y, x] = 128 if hi == lo else int(np.floor(1 + (value - lo) * 254.0 / (hi - lo) + 0.5))
    return out


def _bt601(y, u, v):
    """Full-swing-free BT.601 (video range Y, as OpenCV's YUV2RGB): R,G,B as floats."""
    c, d, e = y - 16.0, u - 128.0, v - 128.0
    r = 1.164 * c + 1.596 * e
    g = 1.164 * c - 0.392 * d - 0.813 * e
    b = 1.164 * c + 2.017 * d
    return np.clip(np.stack([r, g, b], -1), 0, 255)


def sample(encoding: str):
    """(pixels in the message's layout, expected RGB or a checker callable)."""
    rgb = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    alpha = RNG.integers(0, 256, (H, W, 1), dtype=np.uint8)
    if encoding == "rgb8":
        return rgb, rgb
    if encoding == "bgr8":
        return rgb[:, :, [2, 1, 0]], rgb
    if encoding == "rgba8":
        return np.concatenate([rgb, alpha], 2), rgb
    if encoding == "bgra8":
        return np.concatenate([rgb[:, :, [2, 1, 0]], alpha], 2), rgb
    if encoding in ("mono8", "8UC1"):
        grey = rgb[:, :, 0]
        return grey, np.repeat(grey[:, :, None], 3, 2)
    if encoding == "mono16":
        grey16 = RNG.integers(0, 65536, (H, W), dtype=np.uint16)
        return grey16, np.repeat((grey16 // 256).astype(np.uint8)[:, :, None], 3, 2)
    if encoding == "16UC1":
        depth = RNG.integers(0, 5000, (H, W), dtype=np.uint16)
        depth[0, :3] = 0  # invalid (no return)
        return depth, np.repeat(_depth_expectation(depth, depth > 0)[:, :, None], 3, 2)
    if encoding == "32FC1":
        depth = RNG.uniform(0.2, 9.0, (H, W)).astype(np.float32)
        depth[1, 1], depth[2, 2], depth[3, 3] = np.nan, np.inf, -np.inf
        return depth, np.repeat(_depth_expectation(depth, np.isfinite(depth))[:, :, None], 3, 2)
    if encoding in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv"):
        y = RNG.integers(16, 236, (H, W)).astype(np.uint8)
        u = RNG.integers(16, 241, (H, W // 2)).astype(np.uint8)
        v = RNG.integers(16, 241, (H, W // 2)).astype(np.uint8)
        packed = np.zeros((H, W, 2), np.uint8)
        if encoding in ("yuv422", "uyvy"):  # U Y0 V Y1
            packed[:, 0::2, 0], packed[:, 1::2, 0] = u, v
            packed[:, :, 1] = y
        else:  # Y0 U Y1 V
            packed[:, :, 0] = y
            packed[:, 0::2, 1], packed[:, 1::2, 1] = u, v
        # Reference decode: OpenCV on a buffer re-packed here in its documented order (YUYV).
        yuyv = np.zeros((H, W, 2), np.uint8)
        yuyv[:, :, 0] = y
        yuyv[:, 0::2, 1], yuyv[:, 1::2, 1] = u, v
        expected = cv2.cvtColor(yuyv, cv2.COLOR_YUV2RGB_YUYV)
        hand = _bt601(y.astype(float), np.repeat(u, 2, 1).astype(float), np.repeat(v, 2, 1).astype(float))
        assert np.abs(expected.astype(float) - hand).max() <= 2.5  # the reference really is BT.601, U/V not swapped
        return packed, expected
    if encoding.startswith("bayer_"):
        pattern = encoding[6:10]
        bits16 = encoding.endswith("16")
        mosaic = RNG.integers(0, 65536 if bits16 else 256, (H, W), dtype=np.uint16 if bits16 else np.uint8)
        high = (mosaic >> 8).astype(np.uint8) if bits16 else mosaic

        def check(out: np.ndarray) -> bool:
            # Demosaicing interpolates the missing colours; the colour each cell carries must survive
            # exactly (interior cells: borders are extrapolated). Pattern names the first row (ROS).
            ok = out.shape == (H, W, 3) and out.dtype == np.uint8
            for index, letter in enumerate(pattern):
                channel, row, col = "rgb".index(letter), index // 2, index % 2
                ok = ok and np.array_equal(out[row::2, col::2, channel][1:-1, 1:-1], high[row::2, col::2][1:-1, 1:-1])
            return ok

        return mosaic, check
    raise AssertionError(f"no expectation for {encoding}")


def convert(encoding, pixels, *, padding=0, bigendian=False, flag=None, **kwargs):
    width, height, step, data = raw_fields(pixels, padding=padding, bigendian=bigendian)
    return raw_to_rgb(encoding, width, height, step, bigendian if flag is None else flag, data, **kwargs)


def matches(out, expected) -> bool:
    if callable(expected):
        return bool(expected(out))
    return out.shape == expected.shape and out.dtype == np.uint8 and np.array_equal(out, expected)


# -- supported encodings: pixel-exact ------------------------------------------------------

def test_the_issue_encodings_are_all_supported(case):
    wanted = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "16UC1", "32FC1", "yuv422", "yuyv",
              "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8", "bayer_rggb16", "bayer_bggr16",
              "bayer_gbrg16", "bayer_grbg16"]
    for encoding in wanted:
        case.check(encoding in SUPPORTED_ENCODINGS, f"{encoding} supported")
    assert not case.failures, case.failures


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_every_supported_encoding_is_pixel_exact_with_padding_and_both_byte_orders(case, encoding):
    pixels, expected = sample(encoding)
    multibyte = pixels.dtype.itemsize > 1
    for padding in (0, 1, 7):
        for bigendian in ((False, True) if multibyte else (False,)):
            out = convert(encoding, pixels, padding=padding, bigendian=bigendian)
            case.check(matches(out, expected), f"{encoding} padding={padding} bigendian={bigendian}")
        if not multibyte:  # the big-endian flag means nothing for bytes: same pixels
            out = convert(encoding, pixels, padding=padding, flag=True)
            case.check(matches(out, expected), f"{encoding} padding={padding} is_bigendian=1 on 8-bit data")
    assert not case.failures, case.failures


@pytest.mark.parametrize("encoding", ["mono16", "16UC1", "32FC1", "bayer_rggb16"])
def test_wrong_byte_order_flag_changes_the_pixels(case, encoding):
    """The flag is honoured, not ignored: big-endian bytes read as little-endian give other pixels."""
    pixels, expected = sample(encoding)
    out = convert(encoding, pixels, bigendian=True, flag=False)
    case.check(not matches(out, expected), f"{encoding}: big-endian data read with is_bigendian=0 differs")
    assert not case.failures


def test_output_is_a_fresh_contiguous_array_not_a_view_of_the_message(case):
    for encoding in ("rgb8", "mono8", "rgba8"):
        pixels, _ = sample(encoding)
        width, height, step, data = raw_fields(pixels)
        buffer = bytearray(data)
        out = raw_to_rgb(encoding, width, height, step, False, buffer)
        before = out.copy()
        buffer[:] = bytes(len(buffer))  # the transport reuses its buffer
        case.check(out.flags.c_contiguous and out.flags.owndata | (out.base is not None and not
                   np.shares_memory(out, np.frombuffer(buffer, np.uint8))) and np.array_equal(out, before),
                   f"{encoding}: output independent of the message buffer")
    assert not case.failures, case.failures


# -- inconsistent messages: refused with the reason, never another exception -----------------

@pytest.mark.parametrize("fields,fragment", [
    (dict(encoding="rgb8", width=4, height=2, step=12, data=bytes(25)), "data length 25"),
    (dict(encoding="rgb8", width=4, height=2, step=12, data=bytes(0)), "data length 0"),
    (dict(encoding="rgb8", width=4, height=2, step=16, data=bytes(24)), "data length 24"),
    (dict(encoding="mono16", width=4, height=2, step=7, data=bytes(14)), "step 7 is smaller"),
    (dict(encoding="32FC1", width=3, height=3, step=12, data=bytes(35)), "data length 35"),
    (dict(encoding="rgb8", width=0, height=0, step=0, data=b""), "zero size"),
    (dict(encoding="rgb8", width=5, height=0, step=15, data=b""), "zero size"),
    (dict(encoding="yuyv", width=5, height=2, step=10, data=bytes(20)), "even width"),
    (dict(encoding="RGB8", width=1, height=1, step=3, data=bytes(3)), "unsupported image encoding 'RGB8'"),
    (dict(encoding="rgb8\x00", width=1, height=1, step=3, data=bytes(3)), "unsupported image encoding"),
    (dict(encoding="nv12", width=2, height=2, step=2, data=bytes(6)), "unsupported image encoding 'nv12'"),
    (dict(encoding="bayer_rggb32", width=2, height=2, step=8, data=bytes(16)), "unsupported image encoding"),
    (dict(encoding="64FC1", width=2, height=2, step=16, data=bytes(32)), "unsupported image encoding"),
    (dict(encoding="16SC1", width=2, height=2, step=4, data=bytes(8)), "unsupported image encoding"),
])
def test_inconsistent_fields_are_refused_with_the_reason(case, fields, fragment):
    with pytest.raises(ImageError, match=fragment.replace("\x00", "")):
        raw_to_rgb(fields["encoding"], fields["width"], fields["height"], fields["step"], False, fields["data"])
    case.answered_ok(fragment, error=True)


@pytest.mark.parametrize("width,height", [(2**32 - 1, 2**32 - 1), (2**31, 1), (1, 2**31), (100_000, 100_000),
                                          (7680, 4321)])
def test_absurd_declared_sizes_are_refused_before_allocating(case, width, height):
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match="max_image_pixels"):
            raw_to_rgb("rgb8", width, height, width * 3, False, bytes(64))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    case.check(peak < 1_000_000, f"{width}x{height}: peak {peak} bytes", error=True)
    assert peak < 1_000_000, f"allocated {peak} bytes before refusing"


def test_step_far_beyond_data_is_refused_without_allocating(case):
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match="data length"):
            raw_to_rgb("rgb8", 4, 1000, 2**32 - 1, False, bytes(4 * 3 * 1000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    case.check(peak < 1_000_000, f"step 2**32-1: peak {peak}", error=True)
    assert peak < 1_000_000


def test_max_pixels_boundary_is_exact(case):
    pixels = RNG.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    width, height, step, data = raw_fields(pixels)
    case.check(raw_to_rgb("rgb8", width, height, step, False, data, max_pixels=120).shape == (10, 12, 3),
               "exactly max_pixels accepted")
    with pytest.raises(ImageError, match="max_image_pixels = 119"):
        raw_to_rgb("rgb8", width, height, step, False, data, max_pixels=119)
    case.answered_ok("max_pixels - 1 refused", error=True)


def test_random_header_fuzz_never_escapes_image_error(case):
    """Random (encoding, width, height, step, data length, byte order): a valid RGB array or ImageError."""
    encodings = list(SUPPORTED_ENCODINGS) + ["", "rgb16", "jpeg", "bgr8 ", "yuv420", "\u00e9"]
    rng = np.random.default_rng(11)
    converted = refused = 0
    for _ in range(600):
        encoding = encodings[rng.integers(len(encodings))]
        width, height = (int(v) for v in rng.choice([0, 1, 2, 3, 7, 16, 33, 2**16, 2**31], 2))
        step = int(rng.choice([0, 1, width, width * 2, width * 3, width * 4 + 1, 2**32 - 1]))
        length = int(rng.choice([0, 1, step * height if step * height < 10**6 else 5, max(step * height - 1, 0)
                                 if step * height < 10**6 else 3]))
        data = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
        what = f"{encoding!r} {width}x{height} step={step} len={length}"
        try:
            out = raw_to_rgb(encoding, width, height, step, bool(rng.integers(2)), data, max_pixels=10**6)
        except ImageError as error:
            refused += 1
            case.check(len(str(error)) > 20, what, error=True)
            continue
        except Exception as error:  # anything else would reach the node as an internal error
            case.failed_input(f"{what}: {type(error).__name__}: {error}")
            continue
        converted += 1
        case.check(out.shape == (height, width, 3) and out.dtype == np.uint8, what)
    case.note(f"header fuzz: {converted} converted, {refused} refused")
    assert not case.failures, case.failures[:10]


# -- compressed --------------------------------------------------------------------------------

def encode(array, fmt, **kwargs) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def opencv_rgb(data: bytes) -> np.ndarray:
    """Independent decoder: OpenCV (libpng / libjpeg-turbo in the wheel), alpha dropped, 16-bit -> high byte."""
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def _png_variants():
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


def _palette_png(rgb):
    buffer = io.BytesIO()
    PILImage.fromarray(rgb).convert("P", palette=PILImage.ADAPTIVE, colors=16).save(buffer, "PNG")
    return buffer.getvalue()


def _bilevel_png(rgb):
    buffer = io.BytesIO()
    PILImage.fromarray(rgb[:, :, 0] > 127).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("name,data,tolerance", list(_png_variants()), ids=lambda v: v if isinstance(v, str) else "")
def test_compressed_variants_match_an_independent_decoder(case, name, data, tolerance):
    out = compressed_to_rgb("jpeg" if "jpeg" in name else "png", data)
    expected = opencv_rgb(data)
    diff = int(np.abs(out.astype(int) - expected.astype(int)).max()) if out.shape == expected.shape else 999
    case.check(out.dtype == np.uint8 and diff <= tolerance, f"{name}: max diff {diff}")
    assert diff <= tolerance, f"{name}: {out.shape} vs {expected.shape}, max diff {diff}"


def _png_with_declared_size(width: int, height: int) -> bytes:
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def _jpeg_with_declared_size(width: int, height: int) -> bytes:
    data = bytearray(encode(np.zeros((8, 8, 3), np.uint8), "JPEG"))
    index = data.find(b"\xff\xc0")
    data[index + 5:index + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize("maker,width,height,max_pixels", [
    (_png_with_declared_size, 5_000, 5_000, 8_000_000),  # below PIL's own limit: our max_image_pixels check
    (_png_with_declared_size, 100_000, 100_000, 8_000_000),
    (_png_with_declared_size, 2**31 - 1, 2**31 - 1, 8_000_000),
    (_png_with_declared_size, 30_000, 30_000, 10**12),  # beyond PIL's own bomb limit
    (_jpeg_with_declared_size, 65_000, 65_000, 8_000_000),
], ids=["png-25M", "png-1e10", "png-2^62", "png-pil-bomb", "jpeg-65k"])
def test_compressed_bombs_are_refused_before_decoding(case, maker, width, height, max_pixels):
    data = maker(width, height)
    tracemalloc.start()
    try:
        with pytest.raises(ImageError) as error:
            compressed_to_rgb("png", data, max_pixels=max_pixels)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    clear = "max_image_pixels" in str(error.value) or "refused" in str(error.value) or "corrupted" in str(error.value)
    if width * height < 89_478_485:  # PIL's bomb limit does not apply: the project's own check must
        clear = "max_image_pixels = 8000000" in str(error.value)
    case.check(clear and peak < 20_000_000, f"{width}x{height}: {error.value} (peak {peak})", error=True)
    assert clear and peak < 20_000_000, (str(error.value), peak)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_corrupted_compressed_data_gives_an_image_or_image_error_never_a_crash(case, fmt):
    """Random byte flips, truncations and garbage: each input a valid RGB array or ImageError."""
    rgb = cv2.GaussianBlur(RNG.integers(0, 256, (32, 48, 3), dtype=np.uint8), (5, 5), 3)
    good = encode(rgb, fmt)
    rng = np.random.default_rng(5)
    mutants = [good[:cut] for cut in range(0, len(good), max(1, len(good) // 25))]
    for _ in range(250):
        data = bytearray(good)
        for position in rng.integers(0, len(data), int(rng.integers(1, 8))):
            data[position] = int(rng.integers(0, 256))
        mutants.append(bytes(data))
    mutants += [good[:2] + bytes(200), good + b"trailing garbage", bytes(len(good)), good[::-1]]
    decoded = refused = 0
    for index, data in enumerate(mutants):
        try:
            out = compressed_to_rgb(fmt.lower(), data)
        except ImageError:
            refused += 1
            case.answered_ok(f"mutant {index}", error=True)
            continue
        except Exception as error:
            case.failed_input(f"{fmt} mutant {index}: {type(error).__name__}: {error}")
            continue
        decoded += 1
        case.check(out.ndim == 3 and out.shape[2] == 3 and out.dtype == np.uint8, f"mutant {index} shape")
    case.note(f"{fmt} corruption fuzz: {decoded} still decodable, {refused} refused")
    assert not case.failures, case.failures[:10]


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "WEBP", "ICO"])
def test_other_compressed_formats_are_refused(case, fmt):
    data = encode(RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8), fmt)
    with pytest.raises(ImageError, match="expected JPEG or PNG|corrupted or unreadable"):
        compressed_to_rgb("jpeg", data)
    case.answered_ok(fmt, error=True)
