"""``lisa-ros figure``: one picture of what a node published during a finished replay.

Three panels from a replay's results folder (``lisa-ros replay --output``, e.g. the demo's results/demo):
the colour frame with its instruction; the answer's mask (filled and outlined) with its ~/targets_3d
centroid projected back into the image and written in metres; the answer's ~/tracked mask on a later
frame. A footer names the model that made the masks (and says when it is not trained LISA), so the
picture cannot pass for real LISA output. The README's docs/output.png is made by (after
``source scripts/ros_env.sh``; the demo replays data/sample_bag in lock-step, so each answer is
tracked until the next frame's answer)::

    scripts/demo.sh && lisa-ros figure results/demo -o docs/output.png \
        --note "tiny random checkpoint (make-tiny-checkpoint), CPU fp32"

Everything comes from the folder: results.jsonl, frames/, masks/, and the output bag (the node's
~/tracked, the camera info, the frames the replay sent). The label is also in the PNG's
``Description`` text chunk, for tools and tests.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, PngImagePlugin

from lisa_ros.core.image import image_message_to_rgb
from lisa_ros.tools import bag_io, depth_replay, results_folder, visual
from lisa_ros.tools.report import NOT_A_REAL_MODEL

PANEL_W, PANEL_H = 400, 300
LINE_H, TITLE_H, FOOTER_H, GAP = 18, 64, 64, 8
WIDTH = 3 * PANEL_W + 4 * GAP
HEIGHT = TITLE_H + PANEL_H + FOOTER_H
ANSWER_RGB = visual.PREDICTION_RGB
TRACKED_RGB = (255, 140, 0)
POINT_RGB = (255, 30, 30)
TEXT_RGB = (20, 20, 20)
MARK_COLOURS = (ANSWER_RGB, TRACKED_RGB, POINT_RGB, TEXT_RGB, (0, 0, 0), (255, 255, 255))
TRACKED_TYPE = "lisa_ros/msg/TrackedTargets"
FONT = cv2.FONT_HERSHEY_SIMPLEX


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", help="results folder of a finished `lisa-ros replay` (with depth and tracking on "
                        "the node: the demo's results/demo)")
    parser.add_argument("--output", "-o", required=True, help="PNG to write (e.g. docs/output.png)")
    parser.add_argument("--request", type=int, help="the request to show (results.jsonl's `request`); default: the "
                        "first answer with a 3D point whose mask stayed tracked the longest")
    parser.add_argument("--note", default="", help="a line added to the model label (e.g. device and precision)")


def model_label(records: list[dict], note: str) -> str:
    """Which model made the masks; says so when it is not trained LISA (the eval report's rule)."""
    model_ids = sorted({r["model_id"] for r in records if r.get("model_id")}) or ["unknown model"]
    label = f"masks by {', '.join(model_ids)}"
    if any(word in model_id.lower() for model_id in model_ids for word in NOT_A_REAL_MODEL):
        label += ": not trained LISA weights, the masks are MEANINGLESS (the picture shows the outputs, not quality)"
    return f"{label}. {note}".strip() if note else label


def best_point(record: dict) -> list[float] | None:
    targets = record.get("targets_3d")
    if not targets or targets["best_index"] < 0:
        return None
    return targets["targets"][targets["best_index"]]["centroid"]


class OutputBag:
    """What the figure needs from the replay's output bag: ~/tracked, camera info, and the frames sent."""

    def __init__(self, path: Path):
        self.tracked: dict[str, list] = {}  # request_id -> its ~/tracked messages, in order
        self.camera_infos: list = []
        self.frames: dict[int, object] = {}  # header stamp -> the image message sent (the last, on re-sends)
        self.frame_stamps: list[int] = []  # distinct stamps in the order sent
        if not path.is_dir():
            return
        with bag_io.InputBag(path) as bag:
            namespaces = {topic.rsplit("/", 1)[0] for topic, kind in bag.topics.items() if kind == TRACKED_TYPE}
            for topic, kind in bag.topics.items():
                if kind == TRACKED_TYPE:
                    for _, msg in bag.messages(topic):
                        self.tracked.setdefault(msg.request_id, []).append(msg)
                elif kind == depth_replay.CAMERA_INFO:
                    self.camera_infos += [msg for _, msg in bag.messages(topic)]
                elif (kind in bag_io.IMAGE_TYPES and not depth_replay.is_depth_image(topic, kind)
                      and not any(topic.startswith(f"{ns}/") for ns in namespaces)):
                    for _, msg in bag.messages(topic):
                        stamp = bag_io.stamp_ns(msg.header)
                        if stamp not in self.frames:
                            self.frame_stamps.append(stamp)
                        self.frames[stamp] = msg

    def last_tracked(self, request_id: str):
        """The answer's latest ~/tracked message that still has a mask (None when it was never tracked)."""
        kept = [m for m in self.tracked.get(request_id, []) if not all(m.lost) and m.masks]
        return kept[-1] if kept else None

    def camera_info(self, stamp_ns: int):
        """The camera info nearest this depth stamp."""
        if not self.camera_infos:
            return None
        return min(self.camera_infos, key=lambda m: abs(bag_io.stamp_ns(m.header) - stamp_ns))


def choose_request(records: list[dict], bag: OutputBag, wanted: int | None) -> dict:
    if wanted is not None:
        for record in records:
            if record["request"] == wanted:
                if not record.get("masks"):
                    raise ValueError(f"request {wanted} has no mask ({record['status']}); choose another --request")
                return record
        raise ValueError(f"no request {wanted} in results.jsonl")
    answered = [r for r in records if r.get("masks")]
    if not answered:
        raise ValueError("no answer in results.jsonl has a mask: nothing to draw")

    def preference(record: dict) -> tuple:
        tracked = bag.last_tracked(record["request_id"])
        return best_point(record) is not None, tracked is not None and float(tracked.age)

    return max(answered, key=preference)  # max keeps the first of equals


def project(point: list[float], info, image_size: tuple[int, int]) -> tuple[int, int] | None:
    """The pixel of a 3D point (depth optical frame) in the colour image; None when behind the camera."""
    x, y, z = point
    if z <= 0:
        return None
    k = np.asarray(info.k, np.float64).reshape(3, 3)
    d = np.asarray(info.d, np.float64)
    points = np.array([[[x, y, z]]], np.float64)
    if info.distortion_model == "equidistant" and d.any():
        pixels, _ = cv2.fisheye.projectPoints(points, np.zeros(3), np.zeros(3), k, d[:4])
    else:
        pixels, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), k, d if d.any() else None)
    u, v = pixels.reshape(2)
    height, width = image_size  # an aligned depth image of another resolution sees the same view
    return int(round(u * width / info.width)), int(round(v * height / info.height))


def point_pixel(targets: dict | None, point, frame_id: str, bag: OutputBag, image_size) -> tuple:
    """(pixel or None, why not) for a centroid: only drawn when the depth frame is the colour frame (aligned)."""
    if point is None:
        return None, "no 3D point"
    if targets["frame_id"] != frame_id:
        return None, f"point in {targets['frame_id']}, not the colour frame {frame_id}: not drawn"
    info = bag.camera_info(targets["depth_stamp_ns"])
    if info is None:
        return None, "no camera info in the output bag: point not drawn"
    return project(point, info, image_size), ""


def draw_mask(image: np.ndarray, mask: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    """The mask half-tinted and its outline drawn, on a copy."""
    canvas = image.copy()
    if mask.shape != image.shape[:2]:
        mask = cv2.resize(mask.astype(np.uint8), image.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
    tint = np.empty_like(canvas)
    tint[:] = rgb
    canvas[mask] = cv2.addWeighted(canvas, 0.55, tint, 0.45, 0)[mask]
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(canvas, contours, -1, rgb, max(2, image.shape[1] // 320), cv2.LINE_AA)
    return canvas


def draw_point(panel_image: np.ndarray, pixel, point, image_size) -> None:
    """The centroid's pixel (source image coordinates) marked on the panel, with its xyz in metres."""
    u = int(round(pixel[0] * PANEL_W / image_size[1]))
    v = int(round(pixel[1] * PANEL_H / image_size[0]))
    cv2.circle(panel_image, (u, v), 9, (255, 255, 255), 3, cv2.LINE_AA)
    cv2.circle(panel_image, (u, v), 6, POINT_RGB, -1, cv2.LINE_AA)
    text = "({:.2f}, {:.2f}, {:.2f}) m".format(*point)
    (text_w, text_h), _ = cv2.getTextSize(text, FONT, 0.55, 2)
    x = min(max(u - text_w // 2, 3), PANEL_W - text_w - 3)
    y = v - 18 if v - 18 - text_h > 4 else v + 18 + text_h
    cv2.rectangle(panel_image, (x - 3, y - text_h - 4), (x + text_w + 3, y + 6), (0, 0, 0), -1)
    cv2.putText(panel_image, text, (x, y), FONT, 0.55, (255, 255, 255), 1, cv2.LINE_AA)


def panel(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (PANEL_W, PANEL_H), interpolation=cv2.INTER_AREA)


def wrap(text: str, width: int, size: float) -> list[str]:
    """Greedy word wrap to ``width`` pixels (nothing of the text is dropped)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and cv2.getTextSize(f"{lines[-1]} {word}", FONT, size, 1)[0][0] <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def put_lines(canvas: np.ndarray, lines: list[str], x: int, y: int, width: int, size: float = 0.45) -> None:
    """Draws the lines wrapped to ``width``, LINE_H apart."""
    for line in (part for text in lines for part in wrap(text, width, size)):
        cv2.putText(canvas, line, (x, y), FONT, size, TEXT_RGB, 1, cv2.LINE_AA)
        y += LINE_H


def make_figure(root: Path, request: int | None = None, note: str = "") -> tuple[np.ndarray, str]:
    """(the RGB picture, its model label)."""
    records = results_folder.read_records(root)
    bag = OutputBag(root / "bag")
    record = choose_request(records, bag, request)
    label = model_label(records, note)
    frame = visual.as_rgb(visual.read_rgb(root / record["frame"]))
    size = frame.shape[:2]
    answer = panel(draw_mask(frame, results_folder.predicted_mask(root, record), ANSWER_RGB))
    point = best_point(record)
    pixel, why = point_pixel(record.get("targets_3d"), point, record["frame_id"], bag, size)
    if pixel is not None:
        draw_point(answer, pixel, point, size)
    elif point is not None:
        why = "({:.2f}, {:.2f}, {:.2f}) m; ".format(*point) + why
    else:
        why = (record.get("targets_3d") or {}).get("status_message") or "no ~/targets_3d (depth off?)"

    tracked = bag.last_tracked(record["request_id"])
    if tracked is not None and bag_io.stamp_ns(tracked.header) in bag.frames:
        stamp = bag_io.stamp_ns(tracked.header)
        later = image_message_to_rgb(bag.frames[stamp])
        masks = [bag_io.mask_to_array(m) for m, lost in zip(tracked.masks, tracked.lost) if not lost]
        tracked_image = panel(draw_mask(later, np.logical_or.reduce(masks), TRACKED_RGB))
        ahead = [s for s in bag.frame_stamps if int(record["frame_name"]) < s <= stamp]
        targets = depth_replay.targets_record(tracked.targets_3d) if tracked.targets_3d.targets else None
        tracked_point = best_point({"targets_3d": targets})
        tracked_pixel, _ = point_pixel(targets, tracked_point, record["frame_id"], bag, later.shape[:2])
        if tracked_pixel is not None:
            draw_point(tracked_image, tracked_pixel, tracked_point, later.shape[:2])
        tracked_title = [f"~/tracked: {len(ahead)} frame(s), {tracked.age:.1f} s later",
                         f"{len(masks)} of {len(tracked.lost)} mask(s) kept; orange"]
    else:
        tracked_image = np.full((PANEL_H, PANEL_W, 3), 235, np.uint8)
        reasons = {r for m in bag.tracked.get(record["request_id"], []) for r in m.lost_reasons if r}
        text = (f"lost: {', '.join(sorted(reasons))}" if reasons else "no ~/tracked recorded for this answer")
        put_lines(tracked_image, [text], 12, PANEL_H // 2, PANEL_W - 24, 0.55)
        tracked_title = ["~/tracked: no later frame with a mask", ""]

    canvas = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    instruction = record["instruction"] if len(record["instruction"]) <= 80 else record["instruction"][:77] + "..."
    titles = [  # three lines at most: TITLE_H
        [f"frame {record['frame_index']}: \"{instruction}\"", f"{record['frame_id']}, {size[1]}x{size[0]}"],
        ["~/result mask (blue), ~/targets_3d centroid (red)", why or "xyz in metres, depth optical frame"],
        tracked_title,
    ]
    for index, (image, title) in enumerate(zip((panel(frame), answer, tracked_image), titles)):
        x = GAP + index * (PANEL_W + GAP)
        canvas[TITLE_H:TITLE_H + PANEL_H, x:x + PANEL_W] = image
        put_lines(canvas, title, x, 18, PANEL_W)
    footer = [label, f"lisa-ros figure {root}  (request {record['request']}, {record['status']})"]
    put_lines(canvas, footer, GAP, TITLE_H + PANEL_H + 20, WIDTH - 2 * GAP, 0.42)
    return canvas, label


def write_figure(path: Path, image: np.ndarray, label: str) -> None:
    """A small PNG with the label as its Description: a 256-colour palette (the README's picture stays
    under 300 KB), in which the marks' own colours are kept exact (a small red dot would otherwise be
    merged into the photo's colours)."""
    rgb = Image.fromarray(image)
    photo = rgb.quantize(256 - len(MARK_COLOURS), method=Image.Quantize.FASTOCTREE).getpalette()
    palette = Image.new("P", (1, 1))
    palette.putpalette([*photo[:3 * (256 - len(MARK_COLOURS))], *(c for colour in MARK_COLOURS for c in colour)])
    info = PngImagePlugin.PngInfo()
    info.add_text("Description", label)
    info.add_text("Software", "lisa-ros figure")
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(path, pnginfo=info, optimize=True)


def run(args: argparse.Namespace) -> int:
    try:
        image, label = make_figure(Path(args.results), args.request, args.note)
    except (FileNotFoundError, ValueError, bag_io.BagError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_figure(Path(args.output), image, label)
    print(f"wrote {args.output} ({image.shape[1]}x{image.shape[0]}): {label}")
    return 0
