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
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from lisa_ros.tools import bag_io, visual
from lisa_ros.tools.results_folder import frame_key


class NoTruth:
    """No ground truth: every sample is listed and counted, none scored."""

    description = "none (statuses, latency and mask statistics only)"

    def get(self, key, size, occurrence=0):
        return None


class BagTopicTruth:
    def __init__(self, bag_path: str, topic: str):
        with bag_io.InputBag(bag_path) as bag:
            bag.require_topic(topic, bag_io.IMAGE_TYPES)
            self._masks: dict[str, list] = {}  # stamp key -> masks in bag order
            for _, msg in bag.messages(topic):
                self._masks.setdefault(frame_key(bag_io.stamp_ns(msg.header)), []).append(bag_io.mask_to_array(msg))
        count = sum(len(masks) for masks in self._masks.values())
        self.description = f"{bag_path} topic {topic} ({count} masks)"

    def get(self, key, size, occurrence=0):
        masks = self._masks.get(key, [])
        if len(masks) == 1:
            return masks[0], None
        return (masks[occurrence], None) if occurrence < len(masks) else None


class _FolderTruth:
    """One file per frame, named by the frame's key: ``<key><suffix>``."""

    suffix = folder_kind = files_kind = ""

    def __init__(self, folder: str):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.folder_kind} folder {self.folder} does not exist")
        self.description = f"{self.folder} ({len(list(self.folder.glob(f'*{self.suffix}')))} {self.files_kind})"

    def _file(self, key) -> Path | None:
        path = self.folder / f"{key}{self.suffix}"
        return path if path.is_file() else None


class PngFolderTruth(_FolderTruth):
    suffix, folder_kind, files_kind = ".png", "ground-truth", "PNG masks"

    def get(self, key, size, occurrence=0):
        path = self._file(key)
        return (visual.read_mask(path), None) if path else None


class ReasonSegTruth(_FolderTruth):
    suffix, folder_kind, files_kind = ".json", "ReasonSeg", "ReasonSeg annotations"

    def get(self, key, size, occurrence=0):
        path = self._file(key)
        if path is None:
            return None
        annotation = json.loads(path.read_text(encoding="utf-8"))
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
