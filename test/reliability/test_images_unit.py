"""Hostile image input, ROS-free: the conversion functions of lisa_ros.core.image under attack.

Random headers, absurd declared sizes, decompression bombs and corrupted compressed data
must each give a valid RGB array or ImageError (never another exception), big sizes refused
before anything is allocated (a memory bound, measured). The conversions' correctness, input
by input, is test/core/test_image.py's.
"""
from __future__ import annotations

import struct
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest

from image_samples import RNG, encode
from lisa_ros.core.image import SUPPORTED_ENCODINGS, ImageError, compressed_to_rgb, raw_to_rgb

CATEGORY = "Bad input: images (unit)"


# -- declared sizes and steps: refused before allocating, never another exception -------------------

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
