"""A generated reasoning-segmentation task for proving fine-tuning on the CPU (``lisa-ros make-shapes-task``).

Scenes of coloured shapes at random places; each instruction names a shape only by what it is
good for ("segment the thing a ball could roll on"), so the model must map the use to the
shape kind, find it and outline it. Some instructions ask for a kind that is not in the scene
(negatives: LISA's refusal is taught). Each kind has its own shape and colour, so the tiny
checkpoint's random CLIP and SAM encoders still carry what tells the kinds apart; the task
tests the LLM -> ``[SEG]`` -> mask-decoder path that fine-tuning trains. Written in the
training-set format (``lisa_ros.training.dataset``); one scene = one group, so the split never
shares a scene.
"""
from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import cv2
import numpy as np

from lisa_ros.training.dataset import FORMAT

WIDTH, HEIGHT = 160, 120
CLIP_MARGIN = 24  # shapes stay this far from the left/right edges: CLIP's centre crop cuts ~20 px there


@dataclasses.dataclass(frozen=True)
class Kind:
    name: str
    rgb: tuple[int, int, int]
    instructions: tuple[str, ...]


KINDS = (
    Kind("ball", (220, 40, 40), ("Segment the thing a dog would fetch.", "What in this picture could bounce?",
                                 "Which object could you kick into a goal? Please output segmentation mask.")),
    Kind("ramp", (40, 170, 60), ("Segment the thing a ball could roll down.", "What could a cart roll up?",
                                 "Which object has a slope? Please output segmentation mask.")),
    Kind("box", (40, 80, 220), ("What could you store toys in?", "Segment the thing you could stack others on.",
                                "Which object could be a shipping container? Please output segmentation mask.")),
    Kind("bowl", (230, 200, 40), ("What could hold water?", "Segment the thing you could eat soup from.",
                                  "Which object could collect rain? Please output segmentation mask.")),
    Kind("plank", (150, 60, 190), ("Segment the thing that could bridge a gap.", "What could you walk across a "
                                   "stream on?", "Which object is long and flat? Please output segmentation mask.")),
)


def draw_shape(mask: np.ndarray, kind: str, centre: tuple[int, int], size: int) -> None:
    """Fills ``kind``'s outline of about ``size`` pixels into the (H, W) uint8 ``mask``."""
    x, y = centre
    half = size // 2
    if kind == "ball":
        cv2.circle(mask, centre, half, 255, -1)
    elif kind == "ramp":
        cv2.fillPoly(mask, [np.array([(x - half, y + half), (x + half, y + half), (x + half, y - half)])], 255)
    elif kind == "box":
        cv2.rectangle(mask, (x - half, y - half), (x + half, y + half), 255, -1)
    elif kind == "bowl":
        cv2.ellipse(mask, (x, y - half // 2), (half, half), 0, 0, 180, 255, -1)
    elif kind == "plank":
        cv2.rectangle(mask, (x - half - half // 2, y - 3), (x + half + half // 2, y + 3), 255, -1)
    else:
        raise ValueError(f"unknown shape kind {kind!r}")


def make_scene(rng: random.Random) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(HEIGHT, WIDTH, 3) uint8 RGB and each present kind's (HEIGHT, WIDTH) bool mask (2-3 kinds, no overlap)."""
    background = np.array([rng.randint(170, 235)] * 3) + np.array([rng.randint(-12, 12) for _ in range(3)])
    image = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    image[:] = background.clip(0, 255)
    occupied = np.zeros((HEIGHT, WIDTH), bool)
    masks = {}
    for kind in rng.sample(KINDS, rng.randint(2, 3)):
        for _ in range(50):  # a free place; crowded scenes just get fewer shapes
            size = rng.randint(22, 38)
            centre = (rng.randint(CLIP_MARGIN + size // 2, WIDTH - CLIP_MARGIN - size // 2),
                      rng.randint(size // 2 + 2, HEIGHT - size // 2 - 2))
            canvas = np.zeros((HEIGHT, WIDTH), np.uint8)
            draw_shape(canvas, kind.name, centre, size)
            mask = canvas > 0
            if not (cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0)[occupied].any():
                break
        else:
            continue
        jitter = np.array([rng.randint(-15, 15) for _ in range(3)])
        image[mask] = (np.array(kind.rgb) + jitter).clip(0, 255)
        occupied |= mask
        masks[kind.name] = mask
    return image, masks


def write_shapes_task(out_dir: str | Path, train_scenes: int = 240, val_scenes: int = 40, negative_rate: float = 0.2,
                      seed: int = 0) -> Path:
    """Writes the task in the training-set format; each scene gives one positive and, at
    ``negative_rate``, one negative sample. Same seed, same files."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    rng = random.Random(seed)
    counts = {}
    for split, scenes in (("train", train_scenes), ("val", val_scenes)):
        lines = []
        for number in range(scenes):
            scene = f"{split}_{number:04d}"
            image, masks = make_scene(rng)
            cv2.imwrite(str(out / "images" / f"{scene}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            target = rng.choice(sorted(masks))
            mask_path = f"masks/{scene}_{target}.png"
            cv2.imwrite(str(out / mask_path), masks[target].astype(np.uint8) * 255)
            kind = next(k for k in KINDS if k.name == target)
            lines.append({"id": f"{scene}_{target}", "image": f"images/{scene}.png",
                          "instruction": rng.choice(kind.instructions), "masks": [mask_path], "negative": False,
                          "answer": "", "group": scene})
            absent = [k for k in KINDS if k.name not in masks]
            if absent and rng.random() < negative_rate:
                kind = rng.choice(absent)
                lines.append({"id": f"{scene}_no_{kind.name}", "image": f"images/{scene}.png",
                              "instruction": rng.choice(kind.instructions), "masks": [], "negative": True,
                              "answer": "", "group": scene})
        (out / f"{split}.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        counts[split] = len(lines)
    meta = {"format": FORMAT, **counts, "split": {"by": "scene", "train_scenes": train_scenes,
                                                  "val_scenes": val_scenes},
            "sources": [f"lisa_ros.training.shapes (seed {seed}): kinds {[k.name for k in KINDS]}"]}
    (out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out
