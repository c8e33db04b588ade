"""Camera image bytes -> (H, W, 3) uint8 RGB, validated first, without ROS.

Why not cv_bridge directly: the PyPI cv_bridge ignores ``step`` (row padding),
its big-endian path uses ``ndarray.newbyteorder`` (removed in NumPy 2), and it
allocates before checking sizes. So every message is validated here (declared
size, step, data length, pixel budget) before any conversion, and the pixel
work itself is done by NumPy/OpenCV (cvtColor for YUV and Bayer), which is what
cv_bridge does underneath.

Depth-like encodings (16UC1, 32FC1) are mapped to normalised grey: the valid
pixels (non-zero for 16UC1, finite for 32FC1) are scaled linearly from their min
to their max onto 1..255, invalid pixels become 0 (a constant image becomes 128).
mono16 is intensity, mapped by keeping the high byte (value >> 8).

A CompressedImage's format names the source encoding before its ";" (image_transport:
"16UC1; png compressed "), and a 16-bit PNG is read as that encoding, so depth sent
compressed looks the same as depth sent raw. compressed_depth_image_transport's
"16UC1; compressedDepth png" / "32FC1; compressedDepth png" put a 12-byte header
(codec enum, two float32 quantisation parameters) before a 16-bit PNG of the depth
(32FC1: quantised inverse depth, depth = a / (value - b), 0 = invalid); its RVL codec
is refused with the fix.
"""
from __future__ import annotations

import io
import struct

import cv2
import numpy as np

# encoding -> (bytes per pixel, channels, dtype)
_LAYOUTS: dict[str, tuple[int, int, str]] = {
    "rgb8": (3, 3, "u1"),
    "bgr8": (3, 3, "u1"),
    "rgba8": (4, 4, "u1"),
    "bgra8": (4, 4, "u1"),
    "mono8": (1, 1, "u1"),
    "8UC1": (1, 1, "u1"),
    "mono16": (2, 1, "u2"),
    "16UC1": (2, 1, "u2"),
    "32FC1": (4, 1, "f4"),
    "yuv422": (2, 2, "u1"),  # ROS's yuv422 is UYVY byte order
    "uyvy": (2, 2, "u1"),
    "yuv422_yuy2": (2, 2, "u1"),  # YUYV byte order
    "yuyv": (2, 2, "u1"),
}
# ROS names the Bayer pattern by its first row; OpenCV by the second (cv_bridge's table).
_BAYER_CODES = {
    "rggb": cv2.COLOR_BayerBG2RGB,
    "bggr": cv2.COLOR_BayerRG2RGB,
    "gbrg": cv2.COLOR_BayerGR2RGB,
    "grbg": cv2.COLOR_BayerGB2RGB,
}
for _pattern in _BAYER_CODES:
    _LAYOUTS[f"bayer_{_pattern}8"] = (1, 1, "u1")
    _LAYOUTS[f"bayer_{_pattern}16"] = (2, 1, "u2")

SUPPORTED_ENCODINGS = tuple(sorted(_LAYOUTS))
DEFAULT_MAX_PIXELS = 7680 * 4320  # 8K


class ImageError(ValueError):
    """The image cannot be used; the message says what is wrong and what to fix."""


def raw_to_rgb(
    encoding: str,
    width: int,
    height: int,
    step: int,
    is_bigendian: bool,
    data,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Convert the fields of a sensor_msgs/Image to a new (H, W, 3) uint8 RGB array."""
    layout = _LAYOUTS.get(encoding)
    if layout is None:
        raise ImageError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    pixel_bytes, channels, dtype = layout
    _check_size(width, height, max_pixels)
    row_bytes = width * pixel_bytes
    if step < row_bytes:
        raise ImageError(
            f"step {step} is smaller than width*bytes_per_pixel = {width}*{pixel_bytes} = {row_bytes} "
            f"for {encoding}; fix the publisher's step field"
        )
    buffer = np.frombuffer(data, dtype=np.uint8) if len(data) else np.empty(0, np.uint8)
    if buffer.size != step * height:
        raise ImageError(
            f"data length {buffer.size} does not match step*height = {step}*{height} = {step * height} "
            f"({encoding} {width}x{height}); the message is truncated or its header is wrong"
        )
    if encoding in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv") and width % 2:
        raise ImageError(f"{encoding} needs an even width (2 pixels share chroma), got {width}")

    rows = buffer.reshape(height, step)[:, :row_bytes]
    order = ">" if is_bigendian else "<"
    pixels = np.ascontiguousarray(rows).view(np.dtype(dtype).newbyteorder(order) if dtype != "u1" else dtype)
    pixels = pixels.reshape(height, width, channels) if channels > 1 else pixels.reshape(height, width)
    return _to_rgb(encoding, pixels.astype(pixels.dtype.newbyteorder("=")))


def compressed_to_rgb(fmt: str, data, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (JPEG, PNG or compressedDepth PNG) to (H, W, 3) uint8 RGB.

    The declared size is read from the file header and checked before decoding;
    truncated or corrupted data is refused instead of being half-decoded.
    """
    raw = bytes(data)
    if not raw:
        raise ImageError("compressed image has no data")
    source_encoding = fmt.split(";", 1)[0].strip() if ";" in fmt else ""
    if "compresseddepth" in fmt.lower():
        return _compressed_depth_to_rgb(fmt, source_encoding, raw, max_pixels)
    pixels = _decode_jpeg_or_png(fmt, raw, max_pixels)
    if pixels.ndim == 2:  # a 16-bit grey PNG: depth or intensity, as the format's encoding says
        return _to_rgb("16UC1" if source_encoding == "16UC1" else "mono16", pixels)
    return pixels


def image_message_to_rgb(msg, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A sensor_msgs Image or CompressedImage, validated and decoded to (H, W, 3) uint8 RGB.

    Any object with the messages' fields will do (the node's rclpy messages, the tools' rosbags
    ones), so this stays ROS-free; a CompressedImage is the one with a ``format``. Raises ImageError.
    """
    if hasattr(msg, "format"):
        return compressed_to_rgb(msg.format, msg.data, max_pixels=max_pixels)
    return raw_to_rgb(msg.encoding, msg.width, msg.height, msg.step, bool(msg.is_bigendian), msg.data,
                      max_pixels=max_pixels)


# compressed_depth_image_transport's ConfigHeader: int32 codec, float32 depthParam[2], native (little) endian.
_DEPTH_HEADER = struct.Struct("<iff")


def _compressed_depth_to_rgb(fmt: str, source_encoding: str, raw: bytes, max_pixels: int) -> np.ndarray:
    codec = fmt.lower().split("compresseddepth", 1)[1].strip() or "png"  # no codec named: older versions, PNG
    if codec != "png":
        raise ImageError(f"compressedDepth codec {codec!r} is not supported (format {fmt!r}); set the publisher's "
                         "compressedDepth format parameter to png, or send depth raw")
    if source_encoding not in ("16UC1", "mono16", "32FC1"):
        raise ImageError(f"compressedDepth image of encoding {source_encoding!r} (format {fmt!r}); "
                         "compressedDepth carries 16UC1 or 32FC1 depth")
    if len(raw) <= _DEPTH_HEADER.size:
        raise ImageError(f"compressedDepth image ({fmt}) has {len(raw)} bytes, no PNG after its "
                         f"{_DEPTH_HEADER.size}-byte header")
    _, quant_a, quant_b = _DEPTH_HEADER.unpack_from(raw)
    pixels = _decode_jpeg_or_png(fmt, raw[_DEPTH_HEADER.size:], max_pixels, png_only=True)
    if source_encoding != "32FC1":
        return _to_rgb(source_encoding, pixels)
    inverse = pixels.astype(np.float32)
    with np.errstate(divide="ignore"):
        depth = np.where(pixels > 0, np.float32(quant_a) / (inverse - np.float32(quant_b)), np.float32(np.nan))
    return _to_rgb("32FC1", depth.astype(np.float32))


def _decode_jpeg_or_png(fmt: str, raw: bytes, max_pixels: int, png_only: bool = False) -> np.ndarray:
    """(H, W, 3) uint8 RGB, or (H, W) uint16 for a 16-bit grey PNG; size checked before decoding."""
    from PIL import Image, UnidentifiedImageError

    expected = ("PNG",) if png_only else ("JPEG", "PNG")
    try:
        with Image.open(io.BytesIO(raw)) as picture:
            if picture.format not in expected:
                raise ImageError(f"compressed data is {picture.format}, expected {' or '.join(expected)}")
            _check_size(picture.width, picture.height, max_pixels)
            picture.load()  # raises on truncated or corrupted data
            if picture.mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.asarray(picture, dtype=np.uint16)
            if png_only:
                raise ImageError(f"compressedDepth image ({fmt}) holds an 8-bit {picture.mode} PNG, "
                                 "expected 16-bit single-channel depth")
            return np.array(picture.convert("RGB"), dtype=np.uint8)
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"corrupted or unreadable compressed image ({fmt or 'no format'}): {error}") from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"compressed image refused: {error}") from None


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"image has zero size ({width}x{height}); the camera sent an empty frame")
    if width * height > max_pixels:
        raise ImageError(
            f"image of {width}x{height} = {width * height} pixels exceeds max_image_pixels = {max_pixels}; "
            "downscale the stream or raise the max_image_pixels parameter"
        )


def _to_rgb(encoding: str, pixels: np.ndarray) -> np.ndarray:
    if encoding == "rgb8":
        return pixels.copy()
    if encoding == "bgr8":
        return np.ascontiguousarray(pixels[:, :, ::-1])
    if encoding == "rgba8":
        return np.ascontiguousarray(pixels[:, :, :3])
    if encoding == "bgra8":
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    if encoding in ("mono8", "8UC1"):
        return _grey(pixels)
    if encoding == "mono16":
        return _grey((pixels >> 8).astype(np.uint8))
    if encoding == "16UC1":
        return _grey(_normalise(pixels.astype(np.float64), pixels > 0))
    if encoding == "32FC1":
        return _grey(_normalise(pixels.astype(np.float64), np.isfinite(pixels)))
    if encoding in ("yuv422", "uyvy"):
        return cv2.cvtColor(pixels, cv2.COLOR_YUV2RGB_UYVY)
    if encoding in ("yuv422_yuy2", "yuyv"):
        return cv2.cvtColor(pixels, cv2.COLOR_YUV2RGB_YUYV)
    if encoding.startswith("bayer_"):
        pattern = encoding[len("bayer_"):].rstrip("816")
        mosaic = pixels if pixels.dtype == np.uint8 else (pixels >> 8).astype(np.uint8)
        return cv2.cvtColor(np.ascontiguousarray(mosaic), _BAYER_CODES[pattern])
    raise ImageError(f"unsupported image encoding {encoding!r}")  # unreachable: checked by _LAYOUTS


def _grey(mono: np.ndarray) -> np.ndarray:
    return np.repeat(mono[:, :, None], 3, axis=2)


def _normalise(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = np.zeros(values.shape, np.uint8)
    if not valid.any():
        return out
    low, high = values[valid].min(), values[valid].max()
    if high == low:
        out[valid] = 128
    else:
        out[valid] = np.rint(1 + (values[valid] - low) * (254.0 / (high - low))).astype(np.uint8)
    return out
