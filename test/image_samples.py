"""Image test data with independent expectations, shared by test/core/test_image.py and the reliability suite.

Each supported encoding gets pixels in the message's layout and the RGB that must come
out, computed here without lisa_ros (index arithmetic, the documented depth formula,
BT.601 by hand, the Bayer samples that must survive demosaicing); compressed data is
checked against OpenCV's own decoders.
"""
from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image as PILImage

RNG = np.random.default_rng(2026)
H, W = 6, 10  # even width for YUV, several 2x2 Bayer cells


def raw_fields(pixels: np.ndarray, *, padding: int = 0, bigendian: bool = False) -> tuple[int, int, int, bytes]:
    """(width, height, step, data) of pixels (H, W[, C]) with ``padding`` bytes after each row."""
    height, width = pixels.shape[:2]
    data = np.ascontiguousarray(pixels)
    if data.dtype.itemsize > 1:
        data = data.astype(data.dtype.newbyteorder(">" if bigendian else "<"))
    rows = data.view(np.uint8).reshape(height, -1)
    step = rows.shape[1] + padding
    padded = np.full((height, step), 0xAB, np.uint8)  # padding bytes that must never be read as pixels
    padded[:, :rows.shape[1]] = rows
    return width, height, step, padded.tobytes()


def _depth_expectation(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Documented mapping: valid pixels linearly min..max -> 1..255, invalid 0, constant 128."""
    out = np.zeros(values.shape, np.uint8)
    v = values[valid].astype(np.float64)
    if v.size == 0:
        return out
    lo, hi = v.min(), v.max()
    for (y, x) in zip(*np.nonzero(valid), strict=True):
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


def matches(out, expected) -> bool:
    if callable(expected):
        return bool(expected(out))
    return out.shape == expected.shape and out.dtype == np.uint8 and np.array_equal(out, expected)


def encode(array, fmt, **kwargs) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def opencv_rgb(data: bytes) -> np.ndarray:
    """Independent decoder: OpenCV (libpng / libjpeg-turbo in the wheel), alpha dropped, 16-bit -> high byte."""
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
