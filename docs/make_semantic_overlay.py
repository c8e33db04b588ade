"""Draws docs/semantic_overlay.png: a synthetic frame, and semantic mode's label overlay of it.

Run with the project's venv: ``python docs/make_semantic_overlay.py``. It uses the tiny
*random* checkpoint (``lisa-ros make-tiny-checkpoint``), so the picture shows what the
output looks like (one colour per category, the legend), not what a real model labels:
its masks are meaningless.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np

from lisa_ros.core.semantic import PALETTE, SemanticOptions, label_overlay
from lisa_ros.model.engine import LisaEngine
from lisa_ros.model.semantic import SemanticSegmenter
from lisa_ros.model.tiny import write_tiny_checkpoint

CATEGORIES = ["floor", "wall", "glass door", "person", "cable"]
OUT = Path(__file__).resolve().parent / "semantic_overlay.png"


def synthetic_frame(height: int = 240, width: int = 320) -> np.ndarray:
    """A corridor-like RGB frame: wall, floor, a door and a figure (plain shapes)."""
    frame = np.full((height, width, 3), (200, 196, 186), np.uint8)
    frame[height * 3 // 5:] = (120, 110, 100)
    cv2.rectangle(frame, (200, 40), (270, height * 3 // 5), (150, 190, 210), -1)
    cv2.circle(frame, (90, 90), 18, (60, 40, 30), -1)
    cv2.rectangle(frame, (75, 108), (105, 190), (40, 60, 140), -1)
    return frame


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = write_tiny_checkpoint(Path(folder), layout="7b", seed=0, train_steps=0).lisa_dir
        engine = LisaEngine.from_options({"path": str(checkpoint), "device": "cpu", "precision": "fp32"})
        engine.load()
        options = SemanticOptions(filter_threshold=0.0, generate_descriptions=False,
                                  description_cache=str(Path(folder) / "descriptions.json"))
        frame = synthetic_frame()
        result = SemanticSegmenter(engine, options).segment(frame, CATEGORIES, frame_key="docs")
    overlay = label_overlay(frame, result.label, 0.5)
    legend = np.full((frame.shape[0], 150, 3), 255, np.uint8)
    for index, (name, fraction) in enumerate(zip(result.label_names, result.fractions)):
        colour = tuple(int(c) for c in PALETTE[index % len(PALETTE)])
        cv2.rectangle(legend, (8, 14 + 22 * index), (24, 30 + 22 * index), colour, -1)
        cv2.putText(legend, f"{name} {100 * fraction:.0f}%", (30, 28 + 22 * index), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(legend, "tiny random model:", (8, frame.shape[0] - 30), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 160))
    cv2.putText(legend, "masks are meaningless", (8, frame.shape[0] - 14), cv2.FONT_HERSHEY_SIMPLEX, 0.38,
                (0, 0, 160))
    picture = np.concatenate([frame, overlay, legend], axis=1)
    cv2.imwrite(str(OUT), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    print(f"wrote {OUT} ({result.status.name}: {result.message})")


if __name__ == "__main__":
    main()
