"""Benchmark: mask tracking between answers, and the 3D step per mask (issue 12).

1. **Method choice**: the candidates on the synthetic sequences of benchmarks/scenes.py (exact
   ground truth): ms per frame and mask IoU over time.
   - ``lk_similarity`` = lisa_ros.core.tracking.MaskTracker (what the node uses);
   - ``dis_warp``: OpenCV DIS dense flow (ULTRAFAST; also with its finest scale lowered to 0)
     both ways, forward-backward check, the mask warped backwards frame to frame with cv2.remap
     (the issue's first candidate);
   - ``mil_box``: cv2.TrackerMIL on the box (the only OpenCV box tracker in
     opencv-python-headless 5 that needs no model file), the mask shifted with the box.
2. **Rate and added CPU**: TrackingRunner fed at 30 Hz from a feeder thread for ``--seconds``
   (640x480 and 1280x720, 1 and 3 masks): frames processed per second, frames dropped, and the
   process CPU (cores) above the same feeder without tracking.
3. **3D step per mask at 1280x720**: TargetLocator.measure per mask size (16UC1 depth with holes),
   pinhole and distorted camera, with and without the points for PointCloud2; depth decoding.

    source scripts/ros_env.sh --isolated && python -P benchmarks/tracking.py [--seconds 10] [--wait-load 1.0]

Not counted: decoding the ROS image to RGB (the node does that anyway for the model).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.append(str(Path(__file__).resolve().parent))

import common  # noqa: E402
import scenes  # noqa: E402
from lisa_ros.core import depth as depth_core  # noqa: E402
from lisa_ros.core.tracking import MaskTracker, TrackingOptions, TrackingRunner, flow_frame  # noqa: E402


class DisWarp:
    """Candidate: DIS dense flow warping the mask frame to frame (backward remap), FB-checked."""

    def __init__(self, mask: np.ndarray, frame: np.ndarray, work_width: int = 320,
                 finest_scale: int | None = None) -> None:
        self.work_width = work_width
        self.prev = flow_frame(frame, work_width)
        self.mask = np.where(mask, np.uint8(255), np.uint8(0))
        self.area = cv2.countNonZero(self.mask)
        self.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        if finest_scale is not None:  # ULTRAFAST stops at 1/4 of the input; 0 = full working resolution
            self.dis.setFinestScale(finest_scale)

    def update(self, frame: np.ndarray) -> tuple[np.ndarray | None, str]:
        cur = flow_frame(frame, self.work_width)
        forward = self.dis.calc(self.prev.grey, cur.grey, None)
        backward = self.dis.calc(cur.grey, self.prev.grey, None)
        to_work = cur.to_work
        sx, sy = float(to_work[0, 0]), float(to_work[1, 1])
        work_h, work_w = cur.grey.shape
        small = cv2.resize(self.mask, (work_w, work_h), interpolation=cv2.INTER_AREA) >= 128
        qy, qx = np.nonzero(small)
        if qx.size == 0:
            return None, "area_collapsed"
        flow = forward[qy, qx]
        to_x, to_y = qx + flow[:, 0], qy + flow[:, 1]
        inside = (to_x >= 0) & (to_x <= work_w - 1) & (to_y >= 0) & (to_y <= work_h - 1)
        if inside.mean() < 0.5:
            return None, "left_frame"
        back = backward[np.rint(to_y[inside]).astype(int), np.rint(to_x[inside]).astype(int)]  # nearest
        error = np.hypot(flow[inside, 0] + back[:, 0], flow[inside, 1] + back[:, 1])
        if np.mean(error <= 1.0) < 0.5:
            return None, "flow_inconsistent"
        height, width = self.mask.shape
        x0 = max(0, int((to_x[inside].min() - 2) / sx))
        x1 = min(width, int((to_x[inside].max() + 3) / sx))
        y0 = max(0, int((to_y[inside].min() - 2) / sy))
        y1 = min(height, int((to_y[inside].max() + 3) / sy))
        if x1 <= x0 or y1 <= y0:
            return None, "left_frame"
        xs, ys = np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32)
        at_x = np.broadcast_to((xs + 0.5) * sx - 0.5, (ys.size, xs.size)).astype(np.float32)
        at_y = np.broadcast_to(((ys + 0.5) * sy - 0.5)[:, None], (ys.size, xs.size)).astype(np.float32)
        pulled_flow = cv2.remap(backward, at_x, at_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        from_x = pulled_flow[..., 0] / np.float32(sx) + xs[None, :]
        from_y = pulled_flow[..., 1] / np.float32(sy) + ys[:, None]
        warped = np.zeros_like(self.mask)
        warped[y0:y1, x0:x1] = np.where(cv2.remap(self.mask, from_x, from_y, cv2.INTER_LINEAR) >= 128, 255, 0)
        ratio = cv2.countNonZero(warped) / self.area
        if not 0.25 <= ratio <= 4.0:
            return None, "area_collapsed" if ratio < 1 else "area_exploded"
        self.mask, self.prev = warped, cur
        return warped > 0, ""


class MilBox:
    """Candidate: cv2.TrackerMIL on the full-resolution frame; the model's mask moved with the box."""

    def __init__(self, mask: np.ndarray, frame: np.ndarray) -> None:
        self.source = np.where(mask, np.uint8(255), np.uint8(0))
        self.box = cv2.boundingRect(self.source)
        self.tracker = cv2.TrackerMIL_create()
        self.tracker.init(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), self.box)

    def update(self, frame: np.ndarray) -> tuple[np.ndarray | None, str]:
        found, box = self.tracker.update(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        if not found:
            return None, "lost"
        shift = np.float32([[1, 0, box[0] - self.box[0]], [0, 1, box[1] - self.box[1]]])
        height, width = self.source.shape
        return cv2.warpAffine(self.source, shift, (width, height)) >= 128, ""


class LkSimilarity:
    """The chosen method, through the core's MaskTracker."""

    def __init__(self, mask: np.ndarray, frame: np.ndarray, work_width: int = 320) -> None:
        self.tracker = MaskTracker("bench", "bench", [mask], [1.0], frame, 0, TrackingOptions(work_width=work_width,
                                                                                              max_age_s=1e6))
        self.stamp = 0

    def update(self, frame: np.ndarray) -> tuple[np.ndarray | None, str]:
        self.stamp += 33_333_333
        target = self.tracker.update(frame, self.stamp).targets[0]
        return target.mask, target.lost_reason


CANDIDATES = {
    "lk_similarity (work 320)": lambda m, f: LkSimilarity(m, f, 320),
    "lk_similarity (work 640)": lambda m, f: LkSimilarity(m, f, 640),
    "dis_warp (work 320)": lambda m, f: DisWarp(m, f, 320),
    "dis_warp (work 640)": lambda m, f: DisWarp(m, f, 640),
    "dis_warp (work 320, finest scale 0)": lambda m, f: DisWarp(m, f, 320, 0),
    "mil_box": MilBox,
}


def sequences() -> dict[str, tuple[scenes.Sequence, str]]:
    """name -> (sequence, which ground truth the IoU uses)."""
    return {
        "640x480 translating": (scenes.moving_square(frames=60), "visible"),
        "640x480 camera panning": (scenes.moving_square(frames=60, pan=(-2.0, 1.0), velocity=(3.0, 1.5)), "visible"),
        "640x480 approaching and turning": (scenes.moving_square(frames=60, velocity=(2.0, 1.0), scale_rate=1.01,
                                                                 rotation_deg=0.7, start=(200.0, 150.0)), "visible"),
        "1280x720 translating": (scenes.moving_square(1280, 720, frames=60), "visible"),
        "640x480 leaving the frame": (scenes.moving_square(frames=90, velocity=(8.0, 0.0), start=(300.0, 200.0)),
                                      "visible"),
        "640x480 occluder sliding over": (scenes.moving_square(frames=90, velocity=(1.0, 0.0), start=(300.0, 200.0),
                                                               occluder_velocity=8.0), "whole object"),
    }


def compare_methods(repeats: int) -> list[dict]:
    rows = []
    for seq_name, (sequence, truth_kind) in sequences().items():
        truths = sequence.full_masks if truth_kind == "whole object" else sequence.masks
        for name, make in CANDIDATES.items():
            times, cpu_times, ious, lost = [], [], [], None
            for repeat in range(repeats):
                candidate = make(sequence.masks[0], sequence.frames[0])
                run_ious = []
                for i in range(1, len(sequence.frames)):
                    start, cpu_start = time.perf_counter(), cpu_seconds()
                    mask, reason = candidate.update(sequence.frames[i])
                    times.append((time.perf_counter() - start) * 1000)
                    cpu_times.append((cpu_seconds() - cpu_start) * 1000)
                    if mask is None:
                        if repeat == 0:
                            visible = sequence.masks[i].sum() / sequence.full_masks[0].sum()  # of the whole object
                            lost = {"frame": i, "reason": reason, "visible_fraction": round(float(visible), 2)}
                        break
                    run_ious.append(scenes.iou(mask, truths[i]))
                if repeat == 0:
                    ious = run_ious
            rows.append({"sequence": seq_name, "method": name, "frames": len(sequence.frames) - 1,
                         "ms": common.summary(times), "cpu_ms": common.summary(cpu_times), "iou_truth": truth_kind,
                         "iou_min": round(min(ious), 3) if ious else None,
                         "iou_mean": round(float(np.mean(ious)), 3) if ious else None,
                         "iou_at": {str(k): round(ious[k - 1], 3) for k in (10, 30, 59) if k <= len(ious)},
                         "lost": lost})
    return rows


OBJECT_SIDE, OBJECT_AT = 120, (260.0, 180.0)  # the occlusion scenes' square at 640x480: x 260-380, y 180-300


def occlusion_scenes(quick: bool = False) -> list[dict]:
    """A textured bar sliding over a textured square, over a textured background: 5 textures x 3 occluder
    speeds x 3 directions x 2 object motions (a slow drift, or moving against the occluder), the bar's
    leading edge starting 20 px before the object. ``quick``: two of them."""
    against = {"right": (-1.5, 0.5), "left": (1.5, 0.5), "down": (0.5, -1.5)}
    lead = {"right": OBJECT_AT[0] - 20, "left": OBJECT_AT[0] + OBJECT_SIDE + 20, "down": OBJECT_AT[1] - 20}
    rows = []
    for seed in (0, 1) if quick else range(5):
        for speed in (8.0,) if quick else (2.0, 4.0, 8.0):
            for direction in ("right", "left", "down")[:1 if quick else 3]:
                for motion, velocity in (("drift", (0.5, 0.25)), ("against", against[direction]))[:2 - quick]:
                    closing = speed + abs(velocity[0 if direction != "down" else 1])
                    rows.append({"seed": seed, "occluder_px_per_frame": speed, "occluder_direction": direction,
                                 "object_motion": motion, "velocity": velocity, "lead": lead[direction],
                                 "frames": int(np.ceil((20 + OBJECT_SIDE + 10) / closing)) + 2})
    return rows


def occlusion_sweep(quick: bool = False) -> dict:
    """The node's tracker on each occlusion scene: when it reports the loss, how much of the object was covered
    then, and how good its (whole-object) mask was on every frame before."""
    rows = []
    for scene in occlusion_scenes(quick):
        sequence = scenes.moving_square(frames=scene["frames"], size=OBJECT_SIDE, start=OBJECT_AT,
                                        velocity=scene["velocity"], occluder_velocity=scene["occluder_px_per_frame"],
                                        occluder_direction=scene["occluder_direction"], occluder_lead=scene["lead"],
                                        seed=scene["seed"])
        tracker = LkSimilarity(sequence.masks[0], sequence.frames[0])
        ious, covered, lost = [], [], None
        for i in range(1, len(sequence.frames)):
            mask, reason = tracker.update(sequence.frames[i])
            covered.append(1.0 - sequence.masks[i].sum() / sequence.full_masks[i].sum())
            if mask is None:
                lost = {"frame": i, "reason": reason}
                break
            ious.append(scenes.iou(mask, sequence.full_masks[i]))
        rows.append({**{k: v for k, v in scene.items() if k not in ("lead", "frames")},
                     "lost": lost,
                     "covered_at_loss": round(covered[-1], 3) if lost else None,
                     "covered_last_tracked": round(covered[-2], 3) if lost and len(covered) > 1 else None,
                     "covered_max_tracked": round(max(covered[:len(ious)], default=0.0), 3),
                     "iou_last_tracked": round(ious[-1], 3) if ious else None,
                     "iou_min_tracked": round(min(ious), 3) if ious else None})
    lost = [r for r in rows if r["lost"]]
    covered = [r["covered_at_loss"] for r in lost]
    return {"scenes": rows, "summary": {
        "scenes": len(rows), "lost": len(lost),
        "never_lost_while_fully_covered": all(r["covered_max_tracked"] < 1.0 for r in rows),
        "covered_at_loss_min": min(covered, default=None),
        "covered_at_loss_median": round(float(np.median(covered)), 3) if covered else None,
        "covered_at_loss_max": max(covered, default=None),
        "covered_max_tracked_max": max(r["covered_max_tracked"] for r in rows),
        "iou_last_tracked_min": min(r["iou_last_tracked"] for r in rows if r["iou_last_tracked"] is not None),
        "iou_last_tracked_median": round(float(np.median([r["iou_last_tracked"] for r in rows
                                                           if r["iou_last_tracked"] is not None])), 3),
        "iou_min_tracked_min": min(r["iou_min_tracked"] for r in rows if r["iou_min_tracked"] is not None),
        "lost_reasons": {reason: sum(r["lost"]["reason"] == reason for r in lost)
                         for reason in sorted({r["lost"]["reason"] for r in lost})},
    }}


def ping_pong(sequence: scenes.Sequence) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames forwards then backwards: endless continuous motion that stays in the frame."""
    order = list(range(len(sequence.frames))) + list(range(len(sequence.frames) - 2, 0, -1))
    return [sequence.frames[i] for i in order], [sequence.masks[i] for i in order]


def cpu_seconds() -> float:
    return time.process_time()


def feed(runner: TrackingRunner | None, frames: list[np.ndarray], seconds: float, hz: float,
         locator: depth_core.TargetLocator | None = None, depth_data: bytes = b"") -> dict:
    """Put frames (and a depth frame each, with a locator) at ``hz`` for ``seconds`` from this thread."""
    period = 1.0 / hz
    count = int(seconds * hz)
    height, width = frames[0].shape[:2]
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    next_time = wall0
    for i in range(count):
        stamp = int((i + 1) * period * 1e9)
        if locator is not None:
            locator.on_depth(depth_core.DepthMessage(stamp, "depth", "16UC1", width, height, width * 2, False,
                                                     depth_data))
        if runner is not None:
            runner.put_frame(frames[i % len(frames)], stamp, i)
        next_time += period
        delay = next_time - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    if runner is not None:
        runner.wait_idle(10)
    wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    return {"frames_put": count, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "cpu_cores": round(cpu / wall, 3)}


def runner_rate(width: int, height: int, masks: int, seconds: float, hz: float, with_depth: bool = False) -> dict:
    """TrackingRunner at ``hz``; with_depth: each tracked state is also located in 3D (a depth frame per frame)."""
    sequence = scenes.moving_square(width, height, frames=40, velocity=(3.0, 1.5))
    frames, truths = ping_pong(sequence)
    first_masks = [sequence.masks[0]]
    for k in range(masks - 1):  # further targets: patches of the static background
        extra = np.zeros_like(sequence.masks[0])
        x0, y0 = int(width * (0.55 + 0.2 * k)), int(height * 0.7)
        extra[y0:y0 + height // 8, x0:x0 + width // 8] = True
        first_masks.append(extra)
    locator, depth_data = None, b""
    if with_depth:
        locator = depth_core.TargetLocator(tolerance_s=0.005)
        f = 0.75 * width
        locator.on_camera_info(k=[f, 0, (width - 1) / 2, 0, f, (height - 1) / 2, 0, 0, 1], width=width, height=height)
        depth_data = np.full((height, width), 1200, "<u2").tobytes()
    states: list = []
    ious: list[float] = []
    located: list[bool] = []

    def on_state(state) -> None:
        states.append(state)
        mask = state.targets[0].mask
        ious.append(scenes.iou(mask, truths[(state.header + 1) % len(frames)]) if mask is not None else 0.0)
        if locator is not None:
            measurement = locator.measure([t.mask for t in state.targets if t.mask is not None], state.stamp_ns)
            located.append(all(t.ok for t in measurement.targets))

    baseline = feed(None, frames, seconds, hz, locator, depth_data)
    runner = TrackingRunner(on_state, TrackingOptions(max_age_s=1e6))
    try:
        runner.track("bench", "bench", first_masks, [1.0] * len(first_masks), 0, frames[0])
        runner.wait_idle(10)
        result = feed(runner, frames[1:] + frames[:1], seconds, hz, locator, depth_data)
        processed, dropped = runner.frames_processed, runner.frames_dropped
    finally:
        runner.close()
    return {
        "resolution": f"{width}x{height}", "masks": masks, "with_depth": with_depth, "hz_offered": hz,
        "seconds": seconds, "frames_processed": processed, "frames_dropped": dropped,
        "processed_hz": round(processed / result["wall_s"], 2),
        "cpu_cores_with_tracking": result["cpu_cores"], "cpu_cores_feeder_only": baseline["cpu_cores"],
        "added_cpu_percent_of_one_core": round(100 * (result["cpu_cores"] - baseline["cpu_cores"]), 1),
        "iou_min": round(min(ious), 3) if ious else None,
        "iou_median": round(float(np.median(ious)), 3) if ious else None,
        "lost": bool(states and states[-1].finished), "all_located": all(located) if with_depth else None,
    }


def max_rate(width: int, height: int, frames_n: int = 60) -> dict:
    """Back-to-back MaskTracker.update on one mask (includes the RGB -> small grey conversion)."""
    sequence = scenes.moving_square(width, height, frames=frames_n, velocity=(1.5, 0.75))
    tracker = MaskTracker("b", "b", [sequence.masks[0]], [1.0], sequence.frames[0], 0, TrackingOptions(max_age_s=1e6))
    times = []
    cpu0 = cpu_seconds()
    wall0 = time.perf_counter()
    for i in range(1, frames_n):
        start = time.perf_counter()
        tracker.update(sequence.frames[i], i)
        times.append((time.perf_counter() - start) * 1000)
    wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    stats = common.summary(times)
    return {"resolution": f"{width}x{height}", "ms": stats, "max_hz": round(1000 / stats["median"], 1),
            "cpu_ms_per_frame": round(cpu * 1000 / len(times), 2), "cpu_cores_while_busy": round(cpu / wall, 2)}


def depth_step(repeats: int) -> list[dict]:
    width, height = 1280, 720
    rng = np.random.default_rng(0)
    depth_m = (1.0 + 0.3 * rng.random((height, width))).astype(np.float32)
    depth_m[rng.random((height, width)) < 0.1] = np.nan
    millimetres = np.where(np.isnan(depth_m), 0, np.rint(depth_m * 1000)).astype("<u2")
    k = [920.0, 0, 639.5, 0, 920.0, 359.5, 0, 0, 1]
    cameras = {"pinhole": depth_core.CameraModel.from_camera_info(k=k, width=width, height=height),
               "plumb_bob": depth_core.CameraModel.from_camera_info(k=k, width=width, height=height,
                                                                   distortion_model="plumb_bob",
                                                                   d=[-0.05, 0.06, 0.0005, -0.0003, 0.0])}
    start = time.perf_counter()
    cameras["plumb_bob"].normalised_rays(np.array([0]), np.array([0]))  # builds the ray table once
    table_ms = (time.perf_counter() - start) * 1000
    rows = []
    decode_times, decode_cpu = [], []
    data = millimetres.tobytes()
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), cpu_seconds()
        depth_core.decode_depth("16UC1", width, height, width * 2, False, data)
        decode_times.append((time.perf_counter() - start) * 1000)
        decode_cpu.append((cpu_seconds() - cpu_start) * 1000)
    rows.append({"step": "decode 16UC1 1280x720 (once per depth frame used)", "ms": common.summary(decode_times),
                 "cpu_ms": common.summary(decode_cpu)})
    rows.append({"step": "plumb_bob ray table 1280x720 (once per camera info)",
                 "ms": {"median": round(table_ms, 2), "min": round(table_ms, 2)}})
    for side in (70, 220, 450):  # ~5k, ~48k, ~200k pixels
        mask = np.zeros((height, width), bool)
        mask[100:100 + side, 200:200 + side] = True
        for camera_name, camera in cameras.items():
            for keep_points in (False, True):
                times, cpu_times = [], []
                for _ in range(repeats):
                    start, cpu_start = time.perf_counter(), cpu_seconds()
                    (target,) = depth_core.measure_targets([mask], depth_m, camera, keep_points=keep_points)
                    times.append((time.perf_counter() - start) * 1000)
                    cpu_times.append((cpu_seconds() - cpu_start) * 1000)
                assert target.ok
                rows.append({"step": f"measure one mask of {side * side} px, {camera_name}"
                                     f"{', with points' if keep_points else ''}", "mask_pixels": side * side,
                             "ms": common.summary(times), "cpu_ms": common.summary(cpu_times)})
    return rows


def wait_for_load(threshold: float, max_wait_s: float) -> float:
    deadline = time.monotonic() + max_wait_s
    while os.getloadavg()[0] > threshold and time.monotonic() < deadline:
        time.sleep(5)
    return os.getloadavg()[0]


def occlusion_markdown(occlusion: dict) -> str:
    summary = occlusion["summary"]
    return "\n".join([
        f"Occluder sliding over the object ({summary['scenes']} scenes; covered = share of the whole object hidden):\n",
        common.markdown_table(
            ["texture seed", "occluder px/frame", "from", "object", "lost at frame (reason)", "covered at loss",
             "IoU last tracked frame", "IoU min before loss"],
            [[r["seed"], r["occluder_px_per_frame"], r["occluder_direction"], r["object_motion"],
              f"{r['lost']['frame']} ({r['lost']['reason']})" if r["lost"] else "-", r["covered_at_loss"],
              r["iou_last_tracked"], r["iou_min_tracked"]] for r in occlusion["scenes"]]),
        "\n" + ", ".join(f"{k}: {v}" for k, v in summary.items())])


def markdown(result: dict) -> str:
    parts = ["Method choice (synthetic sequences, ms per frame incl. RGB -> small grey):\n",
             common.markdown_table(
                 ["sequence", "method", "ms median", "ms p95", "ms min", "CPU ms median", "IoU min", "IoU mean",
                  "lost at frame (reason, visible part)"],
                 [[r["sequence"], r["method"], r["ms"]["median"], r["ms"]["p95"], r["ms"]["min"],
                   r["cpu_ms"]["median"], r["iou_min"], r["iou_mean"],
                   "-" if not r["lost"] else f"{r['lost']['frame']} ({r['lost']['reason']}, "
                                             f"{r['lost']['visible_fraction']})"]
                  for r in result["methods"]]),
             "\nTrackingRunner fed at 30 Hz (one-slot buffer, own thread):\n",
             common.markdown_table(
                 ["resolution", "masks", "3D per frame", "processed Hz", "dropped", "added CPU (% of a core)",
                  "IoU min", "IoU median"],
                 [[r["resolution"], r["masks"], "yes" if r["with_depth"] else "no", r["processed_hz"],
                   r["frames_dropped"],
                   r["added_cpu_percent_of_one_core"], r["iou_min"], r["iou_median"]] for r in result["runner"]]),
             "\nBack-to-back MaskTracker.update, one mask:\n",
             common.markdown_table(["resolution", "ms median", "ms p95", "ms min", "max Hz", "CPU ms per frame",
                                    "CPU cores while busy"],
                                   [[r["resolution"], r["ms"]["median"], r["ms"]["p95"], r["ms"]["min"], r["max_hz"],
                                     r["cpu_ms_per_frame"], r["cpu_cores_while_busy"]] for r in result["max_rate"]]),
             "\n3D step at 1280x720:\n",
             common.markdown_table(["step", "ms median", "ms p95", "ms min", "CPU ms median"],
                                   [[r["step"], r["ms"]["median"], r["ms"].get("p95"), r["ms"].get("min"),
                                     r.get("cpu_ms", {}).get("median")] for r in result["depth"]])]
    if result.get("occlusion"):
        parts += ["\n" + occlusion_markdown(result["occlusion"])]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per runner measurement")
    parser.add_argument("--hz", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=3, help="per method x sequence, and x10 for the 3D step")
    parser.add_argument("--wait-load", type=float, default=None, help="wait until the 1-min load is below this")
    parser.add_argument("--max-wait", type=float, default=600.0)
    parser.add_argument("--quick", action="store_true", help="a few frames of each part (harness check)")
    parser.add_argument("--occlusion", action="store_true",
                        help="only the occlusion sweep (90 scenes, 1 min of CPU): results/tracking_occlusion.json")
    parser.add_argument("--note", default="")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.wait_load is not None:
        wait_for_load(args.wait_load, args.max_wait)
    result: dict = {"machine_start": common.machine(), "note": args.note, "opencv": cv2.__version__,
                    "opencv_threads": cv2.getNumThreads()}
    if args.occlusion:
        result["occlusion"] = occlusion_sweep()
        result["machine_end"] = common.machine()
        path = common.write_result("tracking_occlusion", result, args.out)
        print(occlusion_markdown(result["occlusion"]))
        print(f"\nwritten: {path}")
        return 0
    if args.quick:
        result["methods"] = []
        result["occlusion"] = occlusion_sweep(quick=True)
        result["runner"] = [runner_rate(320, 240, 1, 0.5, args.hz), runner_rate(320, 240, 1, 0.5, args.hz, True)]
        result["max_rate"] = [max_rate(320, 240, 5)]
        result["depth"] = depth_step(2)
    else:
        result["methods"] = compare_methods(args.repeats)
        result["occlusion"] = occlusion_sweep()
        result["runner"] = [runner_rate(w, h, n, args.seconds, args.hz, d)
                            for (w, h) in ((640, 480), (1280, 720)) for n, d in ((1, False), (3, False), (1, True))]
        result["max_rate"] = [max_rate(640, 480, 120), max_rate(1280, 720, 120)]
        result["depth"] = depth_step(10 * args.repeats)
    result["machine_end"] = common.machine()
    path = common.write_result("tracking", result, args.out)
    print(markdown(result))
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
