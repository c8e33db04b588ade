"""Ground-truth masks for ``lisa-ros eval``, keyed like the results folder's frames.

Three sources, one answer per frame key (the frame's stamp in ns):
- a bag topic of mono8 masks (Image or PNG CompressedImage) carrying the frame's header;
- a folder of PNG masks named ``<key>.png`` (non-zero = object);
- ReasonSeg annotations: ``<key>.json`` with labelme polygons, label "target" for
  the object and "ignore" for pixels that count neither way (as in LISA's eval).

Each source has ``get(key, (height, width), occurrence)`` -> (mask, ignore or None), or None
when it has nothing for that frame, and a ``description`` for the report. ``occurrence``
tells frames with one stamp apart (the replay's ``frame_occurrence``: 0 for the bag's first
frame with that stamp, 1 for the next): a bag topic with several masks of one stamp gives
them in that order; a single mask (or a file named by the stamp) is every such frame's.

3D positions of the targets (``lisa-ros eval``'s 3D error) come with the bag and ReasonSeg
sources: ``position(key, occurrence)`` -> Position or None, and ``position_description``
(None: the source has none). In a bag, a ``geometry_msgs/PointStamped`` topic (default
``/ground_truth/position``) carrying the frame's stamp and the frame the point is in; in a
ReasonSeg JSON, ``position_m`` [x, y, z] with ``position_frame_id``. Metres, like the node's
points. To score the node's point and nothing else, a position should follow its one definition
(``lisa_ros.core.depth.surface_centroid`` of the ground-truth mask at the true depth, as
data/sample_bag's do: a perfect mask then scores ~0); other definitions measure their difference too.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np

from lisa_ros.tools import bag_io, visual
from lisa_ros.tools.results_folder import frame_name

POINT_STAMPED = "geometry_msgs/msg/PointStamped"
POSITION_TOPIC = "/ground_truth/position"


@dataclasses.dataclass(frozen=True)
class Position:
    """A target's ground-truth 3D position: metres in ``frame_id``."""

    xyz: tuple[float, float, float]
    frame_id: str


def _in_order(items: list, occurrence: int):
    """One item is every frame's of that stamp; several go to the frames in bag order."""
    if len(items) == 1:
        return items[0]
    return items[occurrence] if occurrence < len(items) else None


class NoTruth:
    """No ground truth: every sample is listed and counted, none scored."""

    description = "none (statuses, latency and mask statistics only)"
    position_description = None

    def get(self, key, size, occurrence=0):
        return None

    def position(self, key, occurrence=0):
        return None


class BagTopicTruth:
    """Masks on ``topic``; positions on ``position_topic`` when the bag has it (``position_required``: or else fail)."""

    def __init__(self, bag_path: str, topic: str, position_topic: str = POSITION_TOPIC,
                 position_required: bool = False):
        self._positions: dict[str, list[Position]] = {}  # stamp key -> positions in bag order
        self.position_description = None
        with bag_io.InputBag(bag_path) as bag:
            bag.require_topic(topic, bag_io.IMAGE_TYPES)
            self._masks: dict[str, list] = {}  # stamp key -> masks in bag order
            for _, msg in bag.messages(topic):
                self._masks.setdefault(frame_name(bag_io.stamp_ns(msg.header)), []).append(bag_io.mask_to_array(msg))
            if position_required or position_topic in bag.topics:
                bag.require_topic(position_topic, (POINT_STAMPED,))
                for _, msg in bag.messages(position_topic):
                    point = (float(msg.point.x), float(msg.point.y), float(msg.point.z))
                    self._positions.setdefault(frame_name(bag_io.stamp_ns(msg.header)), []).append(
                        Position(point, msg.header.frame_id))
                count = sum(len(positions) for positions in self._positions.values())
                self.position_description = f"{bag_path} topic {position_topic} ({count} positions)"
        count = sum(len(masks) for masks in self._masks.values())
        self.description = f"{bag_path} topic {topic} ({count} masks)"

    def get(self, key, size, occurrence=0):
        mask = _in_order(self._masks.get(key, []), occurrence)
        return None if mask is None else (mask, None)

    def position(self, key, occurrence=0):
        return _in_order(self._positions.get(key, []), occurrence)


class _FolderTruth:
    """One file per frame, named by the frame's key: ``<key><suffix>``."""

    suffix = folder_kind = files_kind = ""
    position_description = None

    def __init__(self, folder: str):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.folder_kind} folder {self.folder} does not exist")
        self.description = f"{self.folder} ({len(list(self.folder.glob(f'*{self.suffix}')))} {self.files_kind})"

    def _file(self, key) -> Path | None:
        path = self.folder / f"{key}{self.suffix}"
        return path if path.is_file() else None

    def position(self, key, occurrence=0):
        return None


class PngFolderTruth(_FolderTruth):
    suffix, folder_kind, files_kind = ".png", "ground-truth", "PNG masks"

    def get(self, key, size, occurrence=0):
        path = self._file(key)
        return (visual.read_mask(path), None) if path else None


class ReasonSegTruth(_FolderTruth):
    suffix, folder_kind, files_kind = ".json", "ReasonSeg", "ReasonSeg annotations"

    def __init__(self, folder: str):
        super().__init__(folder)
        self.position_description = f"position_m in {self.folder}'s annotations"

    def _annotation(self, key) -> dict | None:
        path = self._file(key)
        return None if path is None else json.loads(path.read_text(encoding="utf-8"))

    def position(self, key, occurrence=0):
        annotation = self._annotation(key)
        if annotation is None or "position_m" not in annotation:
            return None
        xyz = annotation["position_m"]
        if len(xyz) != 3:
            raise ValueError(f"{self._file(key)}: position_m must be [x, y, z] in metres, got {xyz!r}")
        return Position(tuple(float(v) for v in xyz), str(annotation.get("position_frame_id", "")))

    def get(self, key, size, occurrence=0):
        annotation = self._annotation(key)
        if annotation is None:
            return None
        # As LISA's loader: larger polygons first so smaller ones drawn over them win;
        # outline and fill; a label containing "ignore" marks don't-care pixels.
        shapes = [(np.round(np.asarray(shape["points"], np.float64)).astype(np.int32),
                   255 if "ignore" in shape.get("label", "").lower() else 1)
                  for shape in annotation.get("shapes", [])]
        canvas = np.zeros(size, np.uint8)
        for points, value in sorted(shapes, key=lambda shape: -cv2.contourArea(shape[0])):
            cv2.polylines(canvas, [points], True, value, 1)
            cv2.fillPoly(canvas, [points], value)
        ignore = canvas == 255
        return canvas == 1, ignore if ignore.any() else None
