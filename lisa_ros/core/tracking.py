"""Masks kept current between answers: each mask follows its object's image motion, frame to frame.

An answer takes seconds; the robot acts on the frame it sees now. After an answer, each of its
masks is carried from frame to frame until the next answer for that conversation, the
``max_age_s`` timeout, or loss. No ROS here: the node calls :meth:`TrackingRunner.put_frame`
once per camera frame and :meth:`TrackingRunner.track` once per result, and publishes what the
callback gets.

Method (chosen by measurement, ``benchmarks/tracking.py``, figures in docs/benchmarks.md): on grey frames
downscaled to ``work_width`` pixels, corners inside the (eroded) mask are followed by pyramidal
Lucas-Kanade flow forwards and backwards (OpenCV); the points that come back to where they
started give a similarity transform (RANSAC, 0.5 px), and the model's mask is warped by the product of
these transforms since the answer (never re-sampled frame after frame, so it does not erode).
Corners are taken only where the object still looks like the model's view warped there, a flow
window away from where it does not: points on an occluder sliding over the object (or whose
window straddles its edge) would drag the mask along (measured, ``benchmarks/tracking.py
--occlusion``: with a slow occluder the mask's IoU fell to 0.46 before the loss was reported).
The alternatives measured: OpenCV DIS dense flow warping the mask (as cheap at 320 px, but its
flow underestimates motion, so the mask lags behind and its IoU decays within two seconds), and
OpenCV's box trackers (in opencv-python-headless 5 only MIL runs without model files: 60-70 ms a
frame here, and a box, not a mask). The transform is rigid-in-the-image (shift, rotation,
scale): objects to grasp are rigid; a deforming object is tracked by its dominant motion.

Loss (reported once, with the reason, instead of a stale mask; a lost target stays lost):

- ``too_few_features``: fewer than ``min_features`` points to follow (a textureless object);
- ``flow_inconsistent``: fewer than ``min_inlier_fraction`` of the points come back within
  ``fb_threshold_px`` (forward-backward check) and fit one transform: a jump the flow cannot
  follow, a cut, parts moving apart;
- ``left_frame``: more than ``max_outside_fraction`` of the mask is outside the frame;
- ``occluded``: the pixels under the mask no longer look like the model's view of the object
  warped the same way (normalised cross-correlation below ``min_similarity``): something covers it;
- ``area_collapsed`` / ``area_exploded``: the transform's scale made the area leave
  [min_area_ratio, max_area_ratio] times the model's mask;
- ``max_age``: the answer is older than ``max_age_s`` (by stamps), which ends the tracking;
- ``time_jumped_back``: a frame older than the last one (a bag looping, a simulator reset) ends it too;
- ``stamp_not_advancing``: a different picture with the stamp of the frame the masks are on (a driver
  that leaves ``header.stamp`` zero or frozen): without stamps that advance, neither the order of
  frames nor the answer's age is known, so tracking ends (the same frame again is skipped).

The mask is the whole object where the transform puts it (a partly covered object keeps its full
mask until ``occluded``). Confidence = the model's score x that similarity (0..1); age = current
stamp - the answer's source-frame stamp.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import cv2
import numpy as np

from lisa_ros.core.bounds import Bound, range_problem

_log = logging.getLogger(__name__)

_LK_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 0.01)
# Grey levels (5x5 mean) a pixel of the object may differ from the model's view warped onto it and still count
# as the object (not an occluder) when choosing points; more where the whole view differs more (light, blur).
VISIBLE_DIFFERENCE = 12.0

# The ranges of the TrackingOptions a user sets (the node's tracking.work_width, tracking.max_age).
TRACKING_BOUNDS: dict[str, Bound] = {
    "work_width": (int, 32, None, False),
    "max_age_s": (float, 0, None, True),
}


@dataclasses.dataclass(frozen=True)
class TrackingOptions:
    """Tuning of the tracker (defaults measured in benchmarks/tracking.py). ``TRACKING_BOUNDS``: the ranges users
    set."""

    work_width: int = 320
    max_age_s: float = 10.0
    max_features: int = 100
    min_features: int = 8
    window_px: int = 9
    fb_threshold_px: float = 0.5
    min_inlier_fraction: float = 0.5
    max_outside_fraction: float = 0.5
    min_similarity: float = 0.5
    min_area_ratio: float = 0.25
    max_area_ratio: float = 4.0

    def __post_init__(self) -> None:
        problems = [problem for name, bound in TRACKING_BOUNDS.items()
                    if (problem := range_problem(name, getattr(self, name), bound)) is not None]
        if not 3 <= self.min_features <= self.max_features:
            problems.append(f"need 3 <= min_features <= max_features, got {self.min_features}, {self.max_features}")
        if self.window_px < 5 or self.window_px % 2 == 0:
            problems.append(f"window_px must be odd and >= 5, got {self.window_px}")
        if self.fb_threshold_px <= 0:
            problems.append(f"fb_threshold_px must be > 0, got {self.fb_threshold_px}")
        for name in ("min_inlier_fraction", "max_outside_fraction"):
            if not 0 < getattr(self, name) <= 1:
                problems.append(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if not -1 <= self.min_similarity < 1:
            problems.append(f"min_similarity must be in [-1, 1), got {self.min_similarity}")
        if not 0 <= self.min_area_ratio < 1 < self.max_area_ratio:
            problems.append(f"need 0 <= min_area_ratio < 1 < max_area_ratio, got {self.min_area_ratio}, "
                            f"{self.max_area_ratio}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclasses.dataclass(frozen=True)
class FlowFrame:
    """A camera frame as the tracker uses it: its full size and a small grey copy."""

    width: int
    height: int
    grey: np.ndarray  # (h, w) uint8, about work_width wide

    @property
    def to_work(self) -> np.ndarray:
        """3x3 map from full-resolution pixel coordinates to working ones (pixel centres aligned)."""
        sx, sy = self.grey.shape[1] / self.width, self.grey.shape[0] / self.height
        return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])


def flow_frame(image: np.ndarray | FlowFrame, work_width: int) -> FlowFrame:
    """RGB (H, W, 3) or grey (H, W) uint8 -> FlowFrame (downscaled with area averaging, never upscaled)."""
    if isinstance(image, FlowFrame):
        return image
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(f"expected an (H, W) or (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY if image.shape[2] == 3
                                                      else cv2.COLOR_RGBA2GRAY)
    height, width = grey.shape
    if width > work_width:
        small = (work_width, max(1, round(height * work_width / width)))
        grey = cv2.resize(grey, small, interpolation=cv2.INTER_AREA)
    return FlowFrame(width, height, np.ascontiguousarray(grey))


@dataclasses.dataclass
class TrackedTarget:
    """One of the answer's masks on the current frame.

    mask: (H, W) bool on the current frame, None once lost; box: (x, y, w, h) of the mask (the last
    one seen when lost); score: the model's; confidence: score x appearance similarity (0 when
    lost); area_ratio: area / the model's mask's area; lost_reason: "" or one of the module's reasons.
    """

    mask: np.ndarray | None
    box: tuple[int, int, int, int]
    score: float
    confidence: float
    area_ratio: float
    lost: bool = False
    lost_reason: str = ""


@dataclasses.dataclass
class TrackedState:
    """Every target of one answer on one camera frame (what ~/tracked publishes).

    header: the current frame's (opaque, passed through); age_s: current stamp - the answer's
    source stamp; finished: this is the tracker's last state (all lost, or max_age) and
    finished_reason says why.
    """

    request_id: str
    conversation_id: str
    stamp_ns: int
    header: Any
    age_s: float
    targets: list[TrackedTarget]
    finished: bool = False
    finished_reason: str = ""


class MaskTracker:
    """The masks of one answer, carried from its source frame to each newer frame by ``update``."""

    def __init__(self, request_id: str, conversation_id: str, masks: Sequence[np.ndarray], scores: Sequence[float],
                 image: np.ndarray | FlowFrame, stamp_ns: int, options: TrackingOptions = TrackingOptions()) -> None:
        if len(masks) != len(scores):
            raise ValueError(f"{len(masks)} masks but {len(scores)} scores")
        self.request_id = request_id
        self.conversation_id = conversation_id
        self.source_stamp_ns = stamp_ns
        self.options = options
        self._source = flow_frame(image, options.work_width)
        self._frame = self._source
        self._stamp_ns = stamp_ns
        self._targets = [self._target(mask, score) for mask, score in zip(masks, scores)]
        self.finished = all(t.lost for t in self._targets)
        self.finished_reason = "lost" if self.finished else ""  # kept: a finished tracker's states repeat it

    @property
    def stamp_ns(self) -> int:
        """Stamp of the frame the masks are on now."""
        return self._stamp_ns

    def is_on(self, frame: FlowFrame, stamp_ns: int) -> bool:
        """True when ``frame`` is the one the masks are on now (the same frame handed in again)."""
        return stamp_ns == self._stamp_ns and np.array_equal(frame.grey, self._frame.grey)

    def update(self, image: np.ndarray | FlowFrame, stamp_ns: int, header: Any = None) -> TrackedState:
        """Carry the masks to ``image`` and say where they are (a frame older than the last ends tracking)."""
        frame = flow_frame(image, self.options.work_width)
        age_s = (stamp_ns - self.source_stamp_ns) / 1e9
        if self.finished:
            return self._state(stamp_ns, header, age_s)
        if stamp_ns < self._stamp_ns:  # a bag looping, a simulator reset: the answer's frame is gone
            return self._finish(stamp_ns, header, age_s, "time_jumped_back")
        if (frame.width, frame.height, frame.grey.shape) != (self._frame.width, self._frame.height,
                                                             self._frame.grey.shape):
            return self._finish(stamp_ns, header, age_s, "frame_size_changed")
        if stamp_ns == self._stamp_ns and not np.array_equal(frame.grey, self._frame.grey):
            return self._finish(stamp_ns, header, age_s, "stamp_not_advancing")
        if age_s > self.options.max_age_s:
            return self._finish(stamp_ns, header, age_s, "max_age")
        for target in self._targets:
            if not target.lost:
                self._step(target, frame)
        self._frame, self._stamp_ns = frame, stamp_ns
        if all(t.lost for t in self._targets):
            self.finished, self.finished_reason = True, "lost"
        return self._state(stamp_ns, header, age_s)

    def _target(self, mask: np.ndarray, score: float) -> _Target:
        frame = self._source
        mask = np.asarray(mask)
        if mask.shape != (frame.height, frame.width):
            raise ValueError(f"mask of shape {mask.shape} does not match the frame {frame.width}x{frame.height}")
        full = np.where(mask != 0, np.uint8(255), np.uint8(0))
        work_h, work_w = frame.grey.shape
        work = cv2.resize(full, (work_w, work_h), interpolation=cv2.INTER_AREA)
        work = np.where(work >= 128, np.uint8(255), np.uint8(0))
        # Points and appearance come from inside the object: LK windows straddling its edge would be
        # pulled by the background (measured: the mask then lags behind a moving object).
        radius = self.options.window_px // 2
        inner = cv2.erode(work, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2))
        if cv2.countNonZero(inner) < 4 * self.options.min_features:
            inner = cv2.erode(work, np.ones((3, 3), np.uint8))
        if cv2.countNonZero(inner) < 4 * self.options.min_features:
            inner = work
        target = _Target(full, cv2.boundingRect(full), float(score), cv2.countNonZero(full), inner,
                         cv2.boundingRect(inner), np.eye(3))
        if target.initial_area == 0:
            target.lose("empty_mask")
        return target

    def _step(self, target: _Target, frame: FlowFrame) -> None:
        options = self.options
        work_h, work_w = frame.grey.shape
        # Where the object is on the previous frame, at working resolution.
        x0, y0, x1, y1 = _warped_box(target.inner_box, target.transform, work_w, work_h)
        if x1 <= x0 or y1 <= y0:
            target.lose("left_frame")
            return
        inner = _warp(target.inner, target.transform, (x0, y0, x1, y1))
        inner = self._still_visible(inner, target.transform, (x0, y0, x1, y1))
        points = cv2.goodFeaturesToTrack(self._frame.grey[y0:y1, x0:x1], options.max_features, 0.01, 3,
                                         mask=inner, blockSize=5)
        if points is None or len(points) < options.min_features:
            target.lose("too_few_features")
            return
        points = points.reshape(-1, 1, 2) + np.float32([x0, y0])
        window = (options.window_px, options.window_px)
        moved, found, _ = cv2.calcOpticalFlowPyrLK(self._frame.grey, frame.grey, points, None, winSize=window,
                                                   maxLevel=3, criteria=_LK_CRITERIA)
        back, found_back, _ = cv2.calcOpticalFlowPyrLK(frame.grey, self._frame.grey, moved, None, winSize=window,
                                                       maxLevel=3, criteria=_LK_CRITERIA)
        error = np.linalg.norm((back - points).reshape(-1, 2), axis=1)
        good = (found.ravel() == 1) & (found_back.ravel() == 1) & (error <= options.fb_threshold_px)
        if good.sum() < max(options.min_features // 2, 3) or good.mean() < options.min_inlier_fraction:
            target.lose("flow_inconsistent")
            return
        step, inliers = cv2.estimateAffinePartial2D(points[good], moved[good], method=cv2.RANSAC,
                                                    ransacReprojThreshold=0.5)
        if step is None or inliers.sum() < options.min_inlier_fraction * len(points):
            target.lose("flow_inconsistent")
            return
        transform = np.vstack([step, [0.0, 0.0, 1.0]]) @ target.transform
        area_ratio = abs(np.linalg.det(transform[:2, :2]))
        if area_ratio < options.min_area_ratio:
            target.lose("area_collapsed")
            return
        if area_ratio > options.max_area_ratio:
            target.lose("area_exploded")
            return
        # The model's mask at full resolution, warped into the frame.
        to_work = frame.to_work
        full = np.linalg.inv(to_work) @ transform @ to_work
        height, width = target.mask.shape
        bx0, by0, bx1, by1 = _warped_box(target.source_box, full, width, height)
        region = _warp(target.source_mask, full, (bx0, by0, bx1, by1)) if bx1 > bx0 and by1 > by0 else None
        inside = 0 if region is None else cv2.countNonZero(region)
        if 1.0 - inside / (target.initial_area * area_ratio) > options.max_outside_fraction:
            target.lose("left_frame")
            return
        similarity = self._similarity(target, transform, frame)
        if similarity < options.min_similarity:
            target.lose("occluded")
            return
        mask = np.zeros((height, width), bool)
        mask[by0:by1, bx0:bx1] = region.view(bool)  # 0/255 -> False/True without a copy
        x, y, w, h = cv2.boundingRect(region)
        target.transform, target.mask, target.box = transform, mask, (x + bx0, y + by0, w, h)
        target.area_ratio = inside / target.initial_area
        target.confidence = target.score * max(0.0, similarity)

    def _similarity(self, target: _Target, transform: np.ndarray, frame: FlowFrame) -> float:
        """Normalised cross-correlation of the object's source pixels (warped) with the current ones."""
        work_h, work_w = frame.grey.shape
        region = _warped_box(target.inner_box, transform, work_w, work_h)
        x0, y0, x1, y1 = region
        if x1 <= x0 or y1 <= y0:
            return -1.0
        inner = _warp(target.inner, transform, region) >= 128
        if inner.sum() < 4:
            return -1.0
        expected = _warp(self._source.grey, transform, region, binary=False)[inner].astype(np.float32)
        seen = frame.grey[y0:y1, x0:x1][inner].astype(np.float32)
        expected -= expected.mean()
        seen -= seen.mean()
        norm = float(np.sqrt((expected * expected).sum() * (seen * seen).sum()))
        return float((expected * seen).sum() / norm) if norm > 0 else -1.0

    def _still_visible(self, inner: np.ndarray, transform: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
        """``inner`` (the object's pixels on the previous frame, 0/255) less those that no longer look like the
        model's view warped there: points on something covering the object would drag the mask with it."""
        x0, y0, x1, y1 = region
        expected = _warp(self._source.grey, transform, region, binary=False)
        difference = cv2.blur(cv2.absdiff(expected, self._frame.grey[y0:y1, x0:x1]), (5, 5))
        inside = inner > 0
        if not inside.any():
            return inner
        typical = float(np.median(difference[inside]))
        visible = np.where(difference <= max(3.0 * typical, VISIBLE_DIFFERENCE), np.uint8(255), np.uint8(0))
        # A flow window straddling the occluder's edge follows the occluder: keep points a window away from it.
        radius = self.options.window_px // 2
        visible = cv2.erode(visible, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2),
                            borderValue=255)
        return cv2.bitwise_and(inner, visible)

    def _finish(self, stamp_ns: int, header: Any, age_s: float, reason: str) -> TrackedState:
        for target in self._targets:
            if not target.lost:
                target.lose(reason)
        self.finished, self.finished_reason = True, reason
        return self._state(stamp_ns, header, age_s)

    def _state(self, stamp_ns: int, header: Any, age_s: float) -> TrackedState:
        targets = [TrackedTarget(None if t.lost else t.mask, tuple(t.box), t.score,
                                 0.0 if t.lost else t.confidence, t.area_ratio, t.lost, t.lost_reason)
                   for t in self._targets]
        return TrackedState(self.request_id, self.conversation_id, stamp_ns, header, age_s, targets,
                            self.finished, self.finished_reason)


@dataclasses.dataclass
class _Target:
    source_mask: np.ndarray  # (H, W) uint8 0/255: the model's mask
    source_box: tuple[int, int, int, int]
    score: float
    initial_area: int
    inner: np.ndarray  # eroded source mask at working resolution (where points and appearance come from)
    inner_box: tuple[int, int, int, int]
    transform: np.ndarray  # 3x3, working pixels of the source frame -> of the current frame
    mask: np.ndarray | None = None  # (H, W) bool on the current frame (a new array each frame)
    box: tuple[int, int, int, int] = (0, 0, 0, 0)
    confidence: float = 0.0
    area_ratio: float = 1.0
    lost: bool = False
    lost_reason: str = ""

    def __post_init__(self) -> None:
        self.mask, self.box, self.confidence = self.source_mask > 0, self.source_box, self.score

    def lose(self, reason: str) -> None:
        self.lost, self.lost_reason, self.confidence = True, reason, 0.0


def _warped_box(box: tuple[int, int, int, int], transform: np.ndarray, width: int,
                height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) in the destination (clipped to width x height) covering ``box`` (x, y, w, h)
    once warped by ``transform``, with a pixel of margin for interpolation."""
    x, y, w, h = box
    corners = np.array([[x - 1, y - 1, 1], [x + w, y - 1, 1], [x - 1, y + h, 1], [x + w, y + h, 1]], float)
    moved = corners @ transform[:2].T
    x0, y0 = np.floor(moved.min(axis=0)).astype(int)
    x1, y1 = np.ceil(moved.max(axis=0)).astype(int) + 1
    return int(max(0, x0)), int(max(0, y0)), int(min(width, x1)), int(min(height, y1))


def _warp(image: np.ndarray, transform: np.ndarray, region: tuple[int, int, int, int],
          binary: bool = True) -> np.ndarray:
    """``image`` warped by ``transform`` (3x3) into the destination ``region`` (x0, y0, x1, y1) only;
    a binary (0/255) mask comes back thresholded at 128, so it stays binary."""
    x0, y0, x1, y1 = region
    shifted = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], float) @ transform
    out = cv2.warpAffine(image, shifted[:2], (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return np.where(out >= 128, np.uint8(255), np.uint8(0)) if binary else out


@dataclasses.dataclass
class _Command:
    request_id: str
    conversation_id: str
    masks: Sequence[np.ndarray]
    scores: Sequence[float]
    image: np.ndarray | None
    stamp_ns: int


class TrackingRunner:
    """Runs the trackers on their own thread: frames in through a one-slot buffer, states out by callback.

    ``put_frame`` never blocks: a frame not yet processed is replaced by the newer one (counted
    in ``frames_dropped``). ``track`` starts tracking an answer (replacing that conversation's
    tracker; no masks = stop tracking it); the new tracker first catches up from the answer's
    source frame through the recent frames it kept (at most ``catch_up_steps`` flow steps),
    then follows every processed frame. ``on_state`` is called on the runner thread with one
    TrackedState per tracker per processed frame (the catch-up publishes only its last state);
    a tracker's ``finished`` state is its last.
    """

    def __init__(self, on_state: Callable[[TrackedState], None], options: TrackingOptions = TrackingOptions(),
                 history_frames: int = 90, catch_up_steps: int = 10) -> None:
        if history_frames < 1 or catch_up_steps < 1:
            raise ValueError("history_frames and catch_up_steps must be >= 1")
        self.options = options
        self._on_state = on_state
        self._catch_up_steps = catch_up_steps
        self._history: collections.deque[tuple[int, FlowFrame, Any]] = collections.deque(maxlen=history_frames)
        self._condition = threading.Condition()
        self._frame: tuple[np.ndarray, int, Any] | None = None
        self._commands: collections.deque[_Command] = collections.deque()
        self._trackers: dict[Hashable, MaskTracker] = {}
        self._closed = False
        self.frames_received = 0
        self.frames_dropped = 0
        self.frames_processed = 0
        self._idle = True
        self._thread = threading.Thread(target=self._run, name="lisa-tracking", daemon=True)
        self._thread.start()

    def put_frame(self, image: np.ndarray | Callable[[], np.ndarray], stamp_ns: int, header: Any = None) -> None:
        """A new camera frame (RGB or grey uint8); replaces one not yet processed.

        ``image`` may be a function returning the frame (e.g. decoding the ROS message): it is
        called on the runner thread, and never for a frame that is dropped.
        """
        with self._condition:
            if self._frame is not None:
                self.frames_dropped += 1
            self._frame = (image, stamp_ns, header)
            self.frames_received += 1
            self._condition.notify_all()

    def track(self, request_id: str, conversation_id: str, masks: Sequence[np.ndarray], scores: Sequence[float],
              stamp_ns: int, image: np.ndarray | None = None) -> None:
        """Track an answer's masks from its source frame (``image``, stamped ``stamp_ns``).

        Without ``image`` the source frame is looked up in the kept frames by stamp (the tracker
        cannot start if it is not there). Empty ``masks``: stop tracking the conversation.
        """
        with self._condition:
            self._commands.append(_Command(request_id, conversation_id, list(masks), list(scores), image, stamp_ns))
            self._condition.notify_all()

    def stop(self, conversation_id: str) -> None:
        self.track("", conversation_id, [], [], 0)

    @property
    def tracked_conversations(self) -> list[str]:
        with self._condition:
            return list(self._trackers)

    def wait_idle(self, timeout: float) -> bool:
        """True once every frame and command handed in so far has been processed (for tests and shutdown)."""
        with self._condition:
            return self._condition.wait_for(
                lambda: self._idle and self._frame is None and not self._commands, timeout)

    def close(self, timeout: float = 2.0) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._condition:
                self._idle = True
                self._condition.notify_all()
                self._condition.wait_for(lambda: self._closed or self._frame is not None or self._commands)
                if self._closed:
                    return
                self._idle = False
                commands = list(self._commands)
                self._commands.clear()
                frame, self._frame = self._frame, None
            for command in commands:
                try:
                    self._start(command)
                except Exception:  # noqa: BLE001 (a bad answer must not end tracking for the others)
                    _log.exception("tracking: request %s could not be tracked", command.request_id)
            if frame is not None:
                self._process(*frame)

    def _start(self, command: _Command) -> None:
        with self._condition:
            self._trackers.pop(command.conversation_id, None)
        if not command.masks:
            return
        source = command.image
        if source is None:
            source = next((f for s, f, _ in self._history if s == command.stamp_ns), None)
            if source is None:
                _log.warning("tracking: source frame %d of request %s is no longer kept; not tracked",
                             command.stamp_ns, command.request_id)
                return
        tracker = MaskTracker(command.request_id, command.conversation_id, command.masks, command.scores, source,
                              command.stamp_ns, self.options)
        # Kept frames with the answer's own stamp but another picture (frozen stamps) end it at once.
        newer = [kept for kept in self._history
                 if kept[0] >= command.stamp_ns and not tracker.is_on(kept[1], kept[0])]
        if len(newer) > self._catch_up_steps:  # stride through, always ending on the newest
            stride = len(newer) / self._catch_up_steps
            newer = [newer[len(newer) - 1 - int(i * stride)] for i in reversed(range(self._catch_up_steps))]
        state = None
        for stamp, frame, header in newer:
            state = tracker.update(frame, stamp, header)
            if tracker.finished:
                break
        with self._condition:
            self._trackers[command.conversation_id] = tracker
        if state is not None:
            self._emit(tracker, state)

    def _process(self, image: np.ndarray | Callable[[], np.ndarray], stamp_ns: int, header: Any) -> None:
        try:
            frame = flow_frame(image() if callable(image) else image, self.options.work_width)
        except Exception as error:  # noqa: BLE001 (a bad frame is skipped, tracking goes on)
            _log.error("tracking: frame %d skipped: %s", stamp_ns, error)
            return
        if self._history and stamp_ns < self._history[-1][0]:
            self._history.clear()  # the clock jumped back: kept frames belong to another timeline
        self._history.append((stamp_ns, frame, header))
        with self._condition:
            trackers = list(self._trackers.values())
        for tracker in trackers:
            if tracker.is_on(frame, stamp_ns):
                continue  # the same frame again
            try:
                state = tracker.update(frame, stamp_ns, header)
            except Exception:  # noqa: BLE001 (one tracker's failure must not stop the others)
                _log.exception("tracking: request %s dropped", tracker.request_id)
                self._remove(tracker)
                continue
            self._emit(tracker, state)
        self.frames_processed += 1

    def _emit(self, tracker: MaskTracker, state: TrackedState) -> None:
        if state.finished:
            self._remove(tracker)
        try:
            self._on_state(state)
        except Exception:  # noqa: BLE001 (a consumer's bug must not stop tracking)
            _log.exception("tracking: on_state callback failed")

    def _remove(self, tracker: MaskTracker) -> None:
        with self._condition:
            if self._trackers.get(tracker.conversation_id) is tracker:
                del self._trackers[tracker.conversation_id]
