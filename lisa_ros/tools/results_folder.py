"""The replay's results folder: what a person (or ``lisa-ros eval``) reads afterwards.

    results.jsonl        one JSON object per request, appended and flushed as
                         each answer arrives (an interrupted run keeps them all)
    masks/RRRR_K.png     mask K of request RRRR, 0/255, source resolution
    overlays/RRRR.png    the frame with the request's masks drawn on it
    frames/NNNNN_STAMP.jpg  each frame that got an instruction (NNNNN = its index in the bag,
                         STAMP = its header stamp in ns: two frames with one stamp keep their own files)
    summary.json         counts and latency percentiles, written at the end

Each record names its frame by ``frame_name`` (the stamp, how ground truth is named) and
``frame_occurrence`` (0 for the first frame with that stamp in the bag, 1 for the next...),
so ground truth can tell frames with equal stamps apart too.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np

from lisa_ros.tools import visual

RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"
FRAME_FILE = re.compile(r"^\d{5,}_(\d+)")  # save_frame's NNNNN_STAMP, and names made from it (export-labels)


def frame_name(stamp_ns: int) -> str:
    """How frames are named in the results folder and matched to ground truth."""
    return str(stamp_ns)


def stamp_of_frame_file(name: str) -> int | None:
    """The header stamp (ns) in a frame file's name as save_frame writes it, or None for another name."""
    match = FRAME_FILE.match(Path(name).name)
    return int(match.group(1)) if match else None


class ResultsFolder:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        for sub in ("masks", "overlays", "frames"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._jsonl = (self.root / RESULTS_FILE).open("w", encoding="utf-8")

    def save_frame(self, frame_index: int, stamp_ns: int, image: np.ndarray) -> str:
        """Write the frame once (several requests may share it); returns its path relative to the folder."""
        relative = f"frames/{frame_index:05d}_{frame_name(stamp_ns)}.jpg"
        path = self.root / relative
        if not path.exists():
            bgr = cv2.cvtColor(visual.as_rgb(image), cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
        return relative

    def save_answer(self, request_index: int, image: np.ndarray, masks: list[np.ndarray]) -> tuple[list[str], str]:
        """Write the masks and the overlay; returns their paths relative to the folder."""
        names = []
        for k, mask in enumerate(masks):
            names.append(f"masks/{request_index:04d}_{k}.png")
            visual.write_png(self.root / names[-1], mask)
        union = np.logical_or.reduce(masks) if masks else None
        overlay_name = f"overlays/{request_index:04d}.png"
        visual.write_png(self.root / overlay_name, visual.eval_overlay(image, union))
        return names, overlay_name

    def append(self, record: dict) -> None:
        self._jsonl.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._jsonl.flush()

    def write_summary(self, summary: dict) -> None:
        (self.root / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")

    def close(self) -> None:
        self._jsonl.close()


def read_records(root: str | Path) -> list[dict]:
    path = Path(root) / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass the results folder written by `lisa-ros replay`")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def predicted_mask(root: str | Path, record: dict) -> np.ndarray:
    """The union of a request's masks; empty when it has none (NOT_FOUND or a failure)."""
    mask = np.zeros(record["image_size"], bool)
    for name in record.get("masks", []):
        mask |= visual.read_mask(Path(root) / name)
    return mask
