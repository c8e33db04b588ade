"""3D targets from an aligned depth image: where each mask is, in metres, in the depth camera's optical frame.

No ROS here: the node feeds :class:`TargetLocator` the fields of ``sensor_msgs/CameraInfo`` and
``sensor_msgs/Image`` (depth) and calls :meth:`TargetLocator.measure` once per result (or per
tracked frame). Every point comes with a :class:`DepthStatus`; a mask that cannot be measured
gets a status and a reason, never a point.

Decisions (docs/3d-and-tracking.md says the same to users):

- **Frame.** Points are in the optical frame of the depth image's header (x right, y down,
  z forward, REP 103); transforming them elsewhere is the consumer's TF job.
- **Depth values** follow REP 118: ``16UC1`` in millimetres, ``32FC1`` in metres, depth measured
  along the optical axis (z). 0, NaN, +-inf and negative values are invalid (no return).
- **Camera info must describe the depth image**: its width/height must equal the depth
  image's, else ``CAMERA_INFO_MISMATCH``. A different size means the wrong camera info is
  paired (e.g. the colour camera's at another resolution); guessing a scale risks wrong points.
  Binning and ROI camera infos are refused (aligned depth streams do not use them).
- **Distortion.** Aligned depth from RealSense / ZED is registered to a rectified (or
  distortion-free) colour image and its camera info carries all-zero ``D``: pure pinhole.
  When ``D`` is non-zero (``plumb_bob``, ``rational_polynomial``: OpenCV's model;
  ``equidistant``: OpenCV's fisheye model) pixels are undistorted exactly, through a
  per-camera table of rays built once by OpenCV; other models with non-zero ``D`` are refused.
- **Depth of another size than the colour frame** (the masks' size): if the aspect ratio
  matches (the scaled width is within one pixel), the masks are resampled onto the depth grid
  (nearest, pixel-centre exact) and the depth camera's own intrinsics are used, which is the
  same as scaling the colour intrinsics; otherwise ``DEPTH_SIZE_MISMATCH``: the two images then
  do not cover the same field of view and no pixel correspondence is known.
- **Robust statistics.** Each mask is eroded by ``erosion_px`` (object edges hold mixed
  foreground/background "flying" pixels and SAM masks bleed a pixel or two; the image border
  counts as outside the mask, so a mask cut by the border is eroded there too and stays
  centred); if fewer than ``min_valid_pixels`` valid pixels survive the erosion, the
  un-eroded mask is used (tiny or thin masks).
- **One surface.** A mask may cover several surfaces (a cup and the wall behind it). Its
  valid depths are split into surfaces by a 1-D clustering (:func:`split_surfaces`): depths
  binned on a logarithmic scale, bins ``surface_bin`` (5 %) of the depth wide; a bin holding
  at least ``dense_fraction`` (0.5 %) of the points is dense; each run of adjacent dense
  bins is one surface, so two surfaces are told apart when a bin between them is (nearly)
  empty (about 5-10 % apart in depth: 5-10 cm at 1 m). The surface with the most points is
  chosen (the nearer on a tie); points in sparse bins (flying pixels between surfaces,
  stray returns) belong to none. The point, box and cloud are the chosen surface's, never a
  depth between two surfaces; ``surfaces`` counts the surfaces holding at least
  ``min_surface_fraction`` (5 %) of the points and ``surface_fraction`` is the chosen one's
  share, so a consumer sees when a mask spans several (a 50/50 split may go either way).
- **The point** (defined once, :func:`surface_centroid`, which the sample bag's ground truth
  uses too) is the centroid of the chosen surface's 3D points: the mean of its valid pixels
  deprojected at their own depths. Holes in the depth remove their pixels from the mean (it
  is the centroid of what the camera measured). The box spans the ``box_percentile`` .. 100 -
  ``box_percentile`` percentiles of each axis of those points (stray points do not stretch
  it; it sits slightly inside the visible surface: by the erosion margin and the trimmed
  tails). Large masks are measured on a regular pixel grid (about ``4 * max_points`` cells;
  every phase of the grid is tried before giving up, so a regular pattern of invalid depth
  such as NaN in every other column cannot hide the valid pixels) and at most about
  ``max_points`` evenly spread valid pixels are deprojected (the point cloud); the
  percentiles come from every k-th of those, about ``stat_points`` (their cost grows with
  the number of points; 5000 leave 50 points in each 1% tail).
"""
from __future__ import annotations

import collections
import dataclasses
import enum
import functools
import math
import threading
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from lisa_ros.core.bounds import Bound, range_problem

DEPTH_ENCODINGS = ("16UC1", "32FC1")
_DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")


class DepthStatus(enum.IntEnum):
    """Why a mask has (or has no) 3D point; mirrors the STATUS_* constants of msg/Targets3D.msg."""

    OK = 0
    NO_CAMERA_INFO = 1          # no camera info received yet
    INVALID_CAMERA_INFO = 2     # K unusable, unsupported distortion, binning/ROI
    CAMERA_INFO_MISMATCH = 3    # camera info size differs from the depth image's
    NO_DEPTH = 4                # no depth frame within the stamp tolerance
    INVALID_DEPTH = 5           # encoding/size/step problem in the depth image
    DEPTH_SIZE_MISMATCH = 6     # depth and colour (mask) sizes have different aspect ratios
    EMPTY_MASK = 7              # the mask has no pixel
    NO_VALID_DEPTH = 8          # every depth pixel under the mask is invalid (0, NaN, inf, out of range)
    TOO_FEW_VALID_PIXELS = 9    # fewer than min_valid_pixels valid depth pixels under the mask (or on one surface)


class DepthError(ValueError):
    """Depth or camera info that cannot be used; ``status`` says which kind, the message what to fix."""

    def __init__(self, status: DepthStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


# The ranges of the DepthOptions a user sets (the node's depth.erosion_px, depth.min_valid_pixels).
DEPTH_BOUNDS: dict[str, Bound] = {
    "erosion_px": (int, 0, None, False),
    "min_valid_pixels": (int, 1, None, False),
}


@dataclasses.dataclass(frozen=True)
class DepthOptions:
    """How masks are measured (see the module docstring for why). ``DEPTH_BOUNDS``: the ranges users set."""

    erosion_px: int = 2
    min_valid_pixels: int = 20
    box_percentile: float = 1.0
    min_depth_m: float = 0.0
    max_depth_m: float = math.inf
    max_points: int = 20000
    stat_points: int = 5000
    surface_bin: float = 0.05
    dense_fraction: float = 0.005
    min_surface_fraction: float = 0.05

    def __post_init__(self) -> None:
        problems = [problem for name, bound in DEPTH_BOUNDS.items()
                    if (problem := range_problem(name, getattr(self, name), bound)) is not None]
        if not 0.0 <= self.box_percentile < 50.0:
            problems.append(f"box_percentile must be in [0, 50), got {self.box_percentile}")
        if not 0.0 <= self.min_depth_m < self.max_depth_m:
            problems.append(f"need 0 <= min_depth_m < max_depth_m, got {self.min_depth_m}, {self.max_depth_m}")
        if not 0.0 < self.surface_bin <= 1.0:
            problems.append(f"surface_bin must be in (0, 1], got {self.surface_bin}")
        if not (0.0 < self.dense_fraction < 1.0 and 0.0 < self.min_surface_fraction <= 1.0):
            problems.append(f"dense_fraction must be in (0, 1) and min_surface_fraction in (0, 1], got "
                            f"{self.dense_fraction}, {self.min_surface_fraction}")
        if min(self.max_points, self.stat_points) < self.min_valid_pixels:
            problems.append(f"max_points ({self.max_points}) and stat_points ({self.stat_points}) must be >= "
                            f"min_valid_pixels ({self.min_valid_pixels})")
        if problems:
            raise ValueError("; ".join(problems))


@dataclasses.dataclass(frozen=True)
class CameraModel:
    """Intrinsics of the depth image (K of its CameraInfo) and, when non-zero, its distortion."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    skew: float = 0.0
    distortion_model: str = ""
    distortion: tuple[float, ...] = ()

    @classmethod
    def from_camera_info(cls, *, k: Sequence[float], width: int, height: int, distortion_model: str = "",
                         d: Sequence[float] = (), binning_x: int = 0, binning_y: int = 0,
                         roi: tuple[int, int, int, int] = (0, 0, 0, 0)) -> CameraModel:
        """From CameraInfo fields (``roi`` = x_offset, y_offset, width, height); raises DepthError."""
        def refuse(reason: str) -> DepthError:
            return DepthError(DepthStatus.INVALID_CAMERA_INFO, f"camera info refused: {reason}")

        values = np.asarray(k, dtype=np.float64).ravel()
        if values.size != 9 or not np.isfinite(values).all():
            raise refuse(f"K must be 9 finite numbers, got {values.tolist()}")
        if width <= 0 or height <= 0:
            raise refuse(f"size {width}x{height} (an uncalibrated camera?); publish a calibrated camera info")
        fx, skew, cx, _, fy, cy = values[:6]
        if fx <= 0 or fy <= 0 or values[3] != 0 or tuple(values[6:]) != (0.0, 0.0, 1.0):
            raise refuse(f"K {values.tolist()} is not a camera matrix [fx s cx; 0 fy cy; 0 0 1] with fx, fy > 0")
        if binning_x > 1 or binning_y > 1 or any(roi):
            raise refuse(f"binning {binning_x}x{binning_y} / roi {tuple(roi)} are not supported; "
                         "publish the camera info of the full-resolution depth image")
        coefficients = tuple(float(c) for c in d)
        if not all(math.isfinite(c) for c in coefficients):
            raise refuse(f"distortion D {coefficients} is not finite")
        if not any(coefficients):
            return cls(int(width), int(height), float(fx), float(fy), float(cx), float(cy), float(skew))
        if distortion_model not in _DISTORTION_MODELS:
            raise refuse(f"distortion model {distortion_model!r} with non-zero D is not supported "
                         f"(supported: {', '.join(_DISTORTION_MODELS)}; or rectify the depth image)")
        wanted = 4 if distortion_model == "equidistant" else (5 if distortion_model == "plumb_bob" else 8)
        if len(coefficients) < wanted:
            raise refuse(f"{distortion_model} needs {wanted} coefficients, got {len(coefficients)}")
        return cls(int(width), int(height), float(fx), float(fy), float(cx), float(cy), float(skew),
                   distortion_model, coefficients[:wanted])

    @property
    def is_pinhole(self) -> bool:
        return not self.distortion

    def normalised_rays(self, us: np.ndarray, vs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x/z, y/z) of the rays through pixels (us, vs) (integer pixel indices), float32."""
        if not self.is_pinhole:
            table = self._ray_table
            return table[0][vs, us], table[1][vs, us]
        y = (vs.astype(np.float32) - np.float32(self.cy)) / np.float32(self.fy)
        x = (us.astype(np.float32) - np.float32(self.cx) - np.float32(self.skew) * y) / np.float32(self.fx)
        return x, y

    @functools.cached_property
    def _ray_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Undistorted (x/z, y/z) for every pixel, computed once per camera (tens of ms at 720p)."""
        vs, us = np.mgrid[0:self.height, 0:self.width].astype(np.float32)
        pixels = np.stack([us.ravel(), vs.ravel()], axis=1).reshape(-1, 1, 2)
        k = np.array([[self.fx, self.skew, self.cx], [0, self.fy, self.cy], [0, 0, 1]], dtype=np.float64)
        d = np.asarray(self.distortion, dtype=np.float64)
        if self.distortion_model == "equidistant":
            rays = cv2.fisheye.undistortPoints(pixels, k, d)
        else:
            criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-9)
            if hasattr(cv2, "undistortPointsIter"):  # OpenCV 4.x: the variant with criteria has its own name
                rays = cv2.undistortPointsIter(pixels, k, d, None, None, criteria)
            else:  # OpenCV 5 folded it into undistortPoints
                rays = cv2.undistortPoints(pixels, k, d, None, None, None, criteria)
        rays = rays.reshape(self.height, self.width, 2)
        return np.ascontiguousarray(rays[..., 0], np.float32), np.ascontiguousarray(rays[..., 1], np.float32)


def decode_depth(encoding: str, width: int, height: int, step: int, is_bigendian: bool, data: Any, *,
                 max_pixels: int = 7680 * 4320) -> np.ndarray:
    """Fields of a depth sensor_msgs/Image -> (H, W) float32 metres, NaN where invalid (REP 118)."""
    if encoding not in DEPTH_ENCODINGS:
        raise DepthError(DepthStatus.INVALID_DEPTH, f"depth encoding {encoding!r} is not supported; "
                         "REP 118 depth is 16UC1 (millimetres) or 32FC1 (metres)")
    if width <= 0 or height <= 0 or width * height > max_pixels:
        raise DepthError(DepthStatus.INVALID_DEPTH, f"depth image size {width}x{height} refused "
                         f"(empty, or over {max_pixels} pixels)")
    pixel_bytes = 2 if encoding == "16UC1" else 4
    if step < width * pixel_bytes:
        raise DepthError(DepthStatus.INVALID_DEPTH, f"depth step {step} < width*{pixel_bytes} = "
                         f"{width * pixel_bytes}; fix the publisher's step field")
    buffer = np.frombuffer(data, dtype=np.uint8) if len(data) else np.empty(0, np.uint8)
    if buffer.size != step * height:
        raise DepthError(DepthStatus.INVALID_DEPTH, f"depth data length {buffer.size} does not match "
                         f"step*height = {step * height}; the message is truncated or its header is wrong")
    rows = np.ascontiguousarray(buffer.reshape(height, step)[:, :width * pixel_bytes])
    order = ">" if is_bigendian else "<"
    if encoding == "16UC1":
        millimetres = rows.view(np.dtype("u2").newbyteorder(order)).reshape(height, width)
        metres = millimetres.astype(np.float32) * np.float32(0.001)
        metres[millimetres == 0] = np.nan
        return metres
    metres = rows.view(np.dtype("f4").newbyteorder(order)).reshape(height, width).astype(np.float32)
    metres[~(np.isfinite(metres) & (metres > 0))] = np.nan
    return metres


@dataclasses.dataclass
class Target3D:
    """One mask in 3D (metres, depth optical frame). Fields other than status/message are None unless OK.

    centroid: the centroid of the chosen surface's 3D points (:func:`surface_centroid`); distance:
    its norm (from the optical centre); box_min / box_max: the robust axis-aligned box of those
    points; median_depth: their median z; valid_pixels: valid depth pixels under the (eroded) mask;
    surfaces: how many surfaces they lie on (> 1: the mask spans several and the point is on the
    one with the most pixels); surface_fraction: the chosen surface's share of valid_pixels;
    mask_pixels: the mask's pixels on the depth grid; eroded: whether the erosion was kept (False:
    fell back to the whole mask); points: the chosen surface's (N, 3) float32 points, only when
    asked for (PointCloud2). ``message`` says, for an OK target, when the mask spans several surfaces.
    """

    status: DepthStatus
    message: str = ""
    centroid: np.ndarray | None = None
    box_min: np.ndarray | None = None
    box_max: np.ndarray | None = None
    distance: float | None = None
    median_depth: float | None = None
    valid_pixels: int = 0
    mask_pixels: int = 0
    surfaces: int = 0
    surface_fraction: float = 0.0
    eroded: bool = False
    points: np.ndarray | None = None

    @property
    def ok(self) -> bool:
        return self.status == DepthStatus.OK


def masks_on_depth_grid(masks: Sequence[np.ndarray], depth_shape: tuple[int, int]) -> list[np.ndarray]:
    """Masks (colour-frame size) as uint8 (non-zero = in) on the depth grid (no copy when the size matches);
    raises DepthError when they cannot map."""
    height, width = depth_shape
    out = []
    for mask in masks:
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise DepthError(DepthStatus.DEPTH_SIZE_MISMATCH, f"mask of shape {mask.shape} is not 2-D")
        mask_h, mask_w = mask.shape
        binary = _as_uint8(mask)
        if (mask_h, mask_w) == (height, width):
            out.append(binary)
            continue
        if abs(mask_w * height / mask_h - width) > 1.0:
            raise DepthError(DepthStatus.DEPTH_SIZE_MISMATCH,
                             f"depth {width}x{height} and colour frame {mask_w}x{mask_h} have different aspect "
                             "ratios: no pixel correspondence; publish depth aligned to the colour image")
        out.append(cv2.resize(binary, (width, height), interpolation=cv2.INTER_NEAREST_EXACT))
    return out


def measure_mask(mask: np.ndarray, depth_m: np.ndarray, camera: CameraModel,
                 options: DepthOptions = DepthOptions(), keep_points: bool = False) -> Target3D:
    """One mask already on the depth grid (uint8/bool, depth_m's shape) -> its Target3D."""
    mask = np.asarray(mask)
    if mask.shape != depth_m.shape:
        return Target3D(DepthStatus.DEPTH_SIZE_MISMATCH, f"mask of shape {mask.shape} is not on the depth grid "
                        f"{depth_m.shape}; use measure_targets (it resamples)")
    selection = _select_pixels(_as_uint8(mask), depth_m, options)
    if isinstance(selection, Target3D):
        return selection
    (us, vs, z), mask_pixels, valid_pixels, eroded = selection
    counts = dict(valid_pixels=valid_pixels, mask_pixels=mask_pixels, eroded=eroded)
    surfaces = split_surfaces(z, options)
    if surfaces is None:
        return Target3D(DepthStatus.TOO_FEW_VALID_PIXELS, f"the {valid_pixels} valid depths under the mask "
                        f"({float(z.min()):.3f}..{float(z.max()):.3f} m) are scattered: no surface holds "
                        f"{options.dense_fraction:.1%} of them in one {options.surface_bin:.0%} depth bin", **counts)
    on_surface, count, fraction = surfaces
    surface_pixels = round(fraction * valid_pixels)
    if surface_pixels < options.min_valid_pixels:
        return Target3D(DepthStatus.TOO_FEW_VALID_PIXELS, f"only {surface_pixels} of the {valid_pixels} valid depth "
                        f"pixels under the mask lie on one surface; need min_valid_pixels = "
                        f"{options.min_valid_pixels}", **counts)
    points = _deproject(us[on_surface], vs[on_surface], z[on_surface], camera)
    centroid = points.mean(axis=0, dtype=np.float64).astype(np.float32)
    sample = points[::max(1, -(-len(points) // options.stat_points))]  # the order statistics cost ~N
    low, high = np.percentile(sample, [options.box_percentile, 100.0 - options.box_percentile], axis=0)
    median_depth = float(np.median(sample[:, 2]))
    note = "" if count == 1 else (f"the mask spans {count} surfaces; the point is on the one with the most valid "
                                  f"pixels ({fraction:.0%}, median depth {median_depth:.3f} m)")
    return Target3D(DepthStatus.OK, note, centroid=centroid, box_min=low.astype(np.float32),
                    box_max=high.astype(np.float32), distance=float(np.linalg.norm(centroid)),
                    median_depth=median_depth, surfaces=count, surface_fraction=fraction,
                    points=points if keep_points else None, **counts)


def surface_centroid(mask: np.ndarray, depth_m: np.ndarray, camera: CameraModel,
                     options: DepthOptions = DepthOptions()) -> np.ndarray | None:
    """The published point of a mask on the depth grid: the centroid of its chosen surface's 3D points
    (see the module docstring); None when it has none. What ground-truth positions should be (make_sample_bag)."""
    target = measure_mask(mask, depth_m, camera, options)
    return target.centroid if target.ok else None


def split_surfaces(z: np.ndarray, options: DepthOptions = DepthOptions()) -> tuple[np.ndarray, int, float] | None:
    """Depths (metres, > 0, finite) -> (which lie on the chosen surface, how many surfaces, its share of them).

    The rule (module docstring, "One surface"): log-depth bins ``surface_bin`` wide; bins with at least
    ``dense_fraction`` of the depths are dense; a run of adjacent dense bins is a surface; the one with
    the most depths is chosen (the nearer on a tie). None when no bin is dense (scattered depths).
    """
    bins = np.floor(np.log(z.astype(np.float64)) / math.log1p(options.surface_bin)).astype(np.int64)
    bins -= bins.min()
    counts = np.bincount(bins)
    dense = counts >= max(1.0, options.dense_fraction * z.size)
    edges = np.diff(np.concatenate(([0], dense.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # runs [start, end)
    if starts.size == 0:
        return None
    cumulative = np.concatenate(([0], np.cumsum(counts)))
    sizes = cumulative[ends] - cumulative[starts]
    chosen = int(np.argmax(sizes))  # the first (nearest) on a tie
    on_surface = (bins >= starts[chosen]) & (bins < ends[chosen])
    surfaces = max(1, int(np.count_nonzero(sizes >= options.min_surface_fraction * z.size)))
    return on_surface, surfaces, float(sizes[chosen] / z.size)


def masked_points(mask: np.ndarray, depth_m: np.ndarray, camera: CameraModel,
                  options: DepthOptions = DepthOptions()) -> np.ndarray:
    """The (N, 3) float32 points of a mask on the depth grid (the same pixels as its centroid; N may be 0)."""
    target = measure_mask(mask, depth_m, camera, options, keep_points=True)
    return target.points if target.ok else np.empty((0, 3), np.float32)


def measure_targets(masks: Sequence[np.ndarray | None], depth_m: np.ndarray | None, camera: CameraModel | None,
                    options: DepthOptions = DepthOptions(), keep_points: bool = False) -> list[Target3D]:
    """Masks at the colour frame's size + decoded depth + the depth camera model -> one Target3D each.

    A None mask (a lost tracked target) gets EMPTY_MASK, so the targets stay aligned with the masks.
    """
    def every(status: DepthStatus, message: str) -> list[Target3D]:
        return [Target3D(status, message) for _ in masks]

    if camera is None:
        return every(DepthStatus.NO_CAMERA_INFO, "no depth camera info received yet")
    if depth_m is None:
        return every(DepthStatus.NO_DEPTH, "no depth frame")
    if depth_m.shape != (camera.height, camera.width):
        return every(DepthStatus.CAMERA_INFO_MISMATCH,
                     f"depth camera info is {camera.width}x{camera.height} but the depth image is "
                     f"{depth_m.shape[1]}x{depth_m.shape[0]}; pair the depth image with its own camera info")
    present = [mask for mask in masks if mask is not None]
    try:
        on_grid = iter(masks_on_depth_grid(present, depth_m.shape))
    except DepthError as error:
        return every(error.status, str(error))
    return [Target3D(DepthStatus.EMPTY_MASK, "no mask (the target is lost)") if mask is None else
            measure_mask(next(on_grid), depth_m, camera, options, keep_points) for mask in masks]


def best_target(targets: Sequence[Target3D], scores: Sequence[float]) -> int | None:
    """Index of the highest-scoring measured target (what ~/target_point publishes), None if none is OK."""
    candidates = [i for i, target in enumerate(targets) if target.ok]
    return max(candidates, key=lambda i: scores[i]) if candidates else None


def _as_uint8(mask: np.ndarray) -> np.ndarray:
    """A mask as uint8, non-zero = in (a free view for bool and uint8 masks)."""
    if mask.dtype == bool:
        return mask.view(np.uint8)
    return mask if mask.dtype == np.uint8 else (mask != 0).astype(np.uint8)


def _select_pixels(mask_u8: np.ndarray, depth_m: np.ndarray, options: DepthOptions):
    """Valid (eroded when possible) pixels of a mask, or a failed Target3D saying why there are none.

    Masks of more than 4 x max_points pixels are processed on a regular grid of every ``grid``-th
    pixel (rows and columns), so the cost stays bounded at any mask size; counts are then scaled
    by grid**2 and the erosion radius is rounded up to whole grid cells. When a phase of the grid
    finds too few valid pixels the other phases are tried (depth with NaN in every other column
    or a checkerboard would otherwise look empty). At most about max_points valid pixels,
    evenly spread over them, are returned.
    """
    x, y, w, h = cv2.boundingRect(mask_u8)
    if w == 0 or h == 0:
        return Target3D(DepthStatus.EMPTY_MASK, "the mask is empty")
    grid = max(1, int(math.sqrt(cv2.countNonZero(mask_u8[y:y + h, x:x + w]) / (4 * options.max_points))))
    radius = -(-options.erosion_px // grid)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2) if radius else None
    # Crop with a margin so the erosion sees the mask's own edges; beyond the image border counts as outside.
    pad = (radius + 1) * grid
    x0, y0 = max(0, x - pad), max(0, y - pad)
    x1, y1 = min(mask_u8.shape[1], x + w + pad), min(mask_u8.shape[0], y + h + pad)
    cell = grid * grid
    best = None
    for phase_y, phase_x in ((py, px) for py in range(grid) for px in range(grid)):
        found = _valid_cells(mask_u8[y0 + phase_y:y1:grid, x0 + phase_x:x1:grid],
                             depth_m[y0 + phase_y:y1:grid, x0 + phase_x:x1:grid], kernel, cell, options)
        if best is None or np.count_nonzero(found[0]) > np.count_nonzero(best[0][0]):
            best = (found, y0 + phase_y, x0 + phase_x)
        if np.count_nonzero(found[0]) * cell >= options.min_valid_pixels:
            break
    (valid, mask_cells, eroded), top, left = best
    mask_pixels, valid_pixels = mask_cells * cell, int(np.count_nonzero(valid)) * cell
    if valid_pixels == 0:
        return Target3D(DepthStatus.NO_VALID_DEPTH, f"all {mask_pixels} depth pixels under the mask are invalid "
                        "(0, NaN, inf or out of range)", mask_pixels=mask_pixels)
    if valid_pixels < options.min_valid_pixels:
        return Target3D(DepthStatus.TOO_FEW_VALID_PIXELS, f"only {valid_pixels} valid depth pixels under the mask "
                        f"(of {mask_pixels}); need min_valid_pixels = {options.min_valid_pixels}",
                        valid_pixels=valid_pixels, mask_pixels=mask_pixels)
    flat = np.flatnonzero(valid)  # 1-D: several times faster than np.nonzero's (rows, columns)
    if flat.size > options.max_points:  # evenly spread over the valid pixels: never empty, whatever their pattern
        flat = flat[np.linspace(0, flat.size - 1, options.max_points).round().astype(np.intp)]
    vs, us = np.divmod(flat, valid.shape[1])
    vs, us = vs * grid + top, us * grid + left
    return (us, vs, depth_m[vs, us]), mask_pixels, valid_pixels, eroded


def _valid_cells(crop: np.ndarray, depth: np.ndarray, kernel: np.ndarray | None, cell: int, options: DepthOptions):
    """(valid cells of the eroded crop, or of the whole crop when the erosion leaves too few; the crop's
    mask cells; whether eroded) for one phase of the grid."""
    crop = np.ascontiguousarray(crop)
    with np.errstate(invalid="ignore"):
        in_range = (depth > options.min_depth_m) & (depth < options.max_depth_m)  # NaN compares False
    if kernel is not None:
        inner = cv2.erode(crop, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        inner_valid = (inner != 0) & in_range
        if np.count_nonzero(inner_valid) * cell >= options.min_valid_pixels:
            return inner_valid, cv2.countNonZero(crop), True
    return (crop != 0) & in_range, cv2.countNonZero(crop), False


def _deproject(us: np.ndarray, vs: np.ndarray, z: np.ndarray, camera: CameraModel) -> np.ndarray:
    x, y = camera.normalised_rays(us, vs)
    points = np.empty((z.size, 3), np.float32)
    points[:, 0] = x * z
    points[:, 1] = y * z
    points[:, 2] = z
    return points


class StampBuffer:
    """The last few items (e.g. depth messages) by arrival, looked up by the stamp nearest another stream's.

    The oldest *arrival* goes first, not the oldest stamp: after a clock jump back (a bag
    looping, a simulator reset) new items are kept and found. Thread-safe: the subscription
    callback puts, the worker or tracking thread looks up.
    """

    def __init__(self, capacity: int = 8) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._lock = threading.Lock()
        self._items: collections.deque[tuple[int, Any]] = collections.deque(maxlen=capacity)

    def put(self, stamp_ns: int, item: Any) -> None:
        with self._lock:
            self._items.append((stamp_ns, item))

    def nearest(self, stamp_ns: int, tolerance_ns: int) -> tuple[int, Any] | None:
        """(stamp, item) nearest ``stamp_ns`` within ``tolerance_ns`` (ties: the newest arrival), else None."""
        with self._lock:
            best = None
            for stamp, item in self._items:
                gap = abs(stamp - stamp_ns)
                if gap <= tolerance_ns and (best is None or gap <= best[0]):
                    best = (gap, stamp, item)
            return None if best is None else (best[1], best[2])

    def newest_stamp(self) -> int | None:
        """Stamp of the last item put (None when empty)."""
        with self._lock:
            return self._items[-1][0] if self._items else None

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


@dataclasses.dataclass(frozen=True)
class DepthMessage:
    """The fields of a depth sensor_msgs/Image the locator needs (decoded only when used)."""

    stamp_ns: int
    frame_id: str
    encoding: str
    width: int
    height: int
    step: int
    is_bigendian: bool
    data: Any


@dataclasses.dataclass
class Measurement:
    """What :meth:`TargetLocator.measure` returns: the targets and the depth frame they are in.

    frame_id / depth_stamp_ns: of the paired depth image ("" / None when none matched);
    message: one line for a status message ("" when every target is OK).
    """

    targets: list[Target3D]
    frame_id: str = ""
    depth_stamp_ns: int | None = None
    message: str = ""

    @property
    def awaits_depth(self) -> bool:
        """Only a depth frame is missing (NO_DEPTH), so one arriving later could still give points.

        False when the camera info is missing or refused: a depth frame alone cannot help then.
        """
        return self.depth_stamp_ns is None and any(t.status == DepthStatus.NO_DEPTH for t in self.targets)


class TargetLocator:
    """Camera info + a short buffer of depth frames -> 3D targets for a colour stamp (what the node glues).

    ``on_camera_info`` / ``on_depth`` are the subscription callbacks' one call each;
    ``measure`` is the one call per result (or tracked frame). Thread-safe.
    """

    def __init__(self, tolerance_s: float = 0.05, buffer_size: int = 8, options: DepthOptions = DepthOptions(),
                 max_pixels: int = 7680 * 4320) -> None:
        if tolerance_s < 0:
            raise ValueError(f"tolerance_s must be >= 0, got {tolerance_s}")
        self.options = options
        self._tolerance_ns = int(round(tolerance_s * 1e9))
        self._max_pixels = max_pixels
        self._depth = StampBuffer(buffer_size)
        self._lock = threading.Lock()
        self._camera: CameraModel | None = None
        self._camera_key: tuple | None = None
        self._camera_error: DepthError | None = None
        self._decoded: tuple[DepthMessage, np.ndarray | DepthError] | None = None  # last decode, reused

    def on_camera_info(self, *, k: Sequence[float], width: int, height: int, distortion_model: str = "",
                       d: Sequence[float] = (), binning_x: int = 0, binning_y: int = 0,
                       roi: tuple[int, int, int, int] = (0, 0, 0, 0)) -> None:
        """Keep the depth camera's model; rebuilt only when the info changes (the ray table is cached)."""
        key = (tuple(k), width, height, distortion_model, tuple(d), binning_x, binning_y, tuple(roi))
        with self._lock:
            if key == self._camera_key:
                return
        try:
            camera, error = CameraModel.from_camera_info(
                k=k, width=width, height=height, distortion_model=distortion_model, d=d,
                binning_x=binning_x, binning_y=binning_y, roi=roi), None
        except DepthError as refused:
            camera, error = None, refused
        with self._lock:
            self._camera, self._camera_error, self._camera_key = camera, error, key

    def on_depth(self, message: DepthMessage) -> None:
        self._depth.put(message.stamp_ns, message)

    def measure(self, masks: Sequence[np.ndarray | None], stamp_ns: int, keep_points: bool = False) -> Measurement:
        """3D targets of ``masks`` (colour-frame size; None = lost) with the depth frame nearest ``stamp_ns``."""
        with self._lock:
            camera, camera_error = self._camera, self._camera_error
        if camera_error is not None:
            return self._failed(masks, camera_error.status, str(camera_error))
        if camera is None:
            return self._failed(masks, DepthStatus.NO_CAMERA_INFO, "no depth camera info received yet")
        paired = self._depth.nearest(stamp_ns, self._tolerance_ns)
        if paired is None:
            newest = self._depth.newest_stamp()
            detail = ("no depth frame received yet" if newest is None else
                      f"nearest depth frame is {abs(newest - stamp_ns) / 1e6:.1f} ms from the colour frame")
            return self._failed(masks, DepthStatus.NO_DEPTH, f"no depth frame within "
                                f"{self._tolerance_ns / 1e6:.1f} ms of the colour frame ({detail})")
        depth_stamp, message = paired
        depth = self._decode(message)
        if isinstance(depth, DepthError):
            return self._failed(masks, depth.status, str(depth), message)
        targets = measure_targets(masks, depth, camera, self.options, keep_points)
        problems = sorted({f"{t.status.name}: {t.message}" for t in targets if not t.ok})
        return Measurement(targets, message.frame_id, depth_stamp, "; ".join(problems))

    def clear(self) -> None:
        self._depth.clear()
        with self._lock:
            self._decoded = None

    def _decode(self, message: DepthMessage) -> np.ndarray | DepthError:
        with self._lock:
            if self._decoded is not None and self._decoded[0] is message:
                return self._decoded[1]
        try:
            depth: np.ndarray | DepthError = decode_depth(
                message.encoding, message.width, message.height, message.step, message.is_bigendian,
                message.data, max_pixels=self._max_pixels)
        except DepthError as error:
            depth = error
        with self._lock:
            self._decoded = (message, depth)
        return depth

    @staticmethod
    def _failed(masks: Sequence[np.ndarray], status: DepthStatus, message: str,
                depth: DepthMessage | None = None) -> Measurement:
        return Measurement([Target3D(status, message) for _ in masks], depth.frame_id if depth else "",
                           depth.stamp_ns if depth else None, f"{status.name}: {message}")
