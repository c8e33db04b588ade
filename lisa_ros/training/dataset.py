"""The training set ``lisa-ros import-labels`` writes and ``lisa-ros finetune`` reads.

    DATASET/dataset.json     {"format": FORMAT, "train": n, "val": m, "split": {...how...}, "sources": [...]}
    DATASET/train.jsonl      one sample per line (below); the validation split in val.jsonl
    DATASET/images/...       the frames (PNG or JPEG), RGB
    DATASET/masks/...        target masks: PNG, 0 = background, non-zero = target, the image's size

A sample: ``{"id", "image", "instruction", "masks": [...], "negative": bool, "answer": "", "group"}``;
paths are relative to DATASET. ``negative`` marks an instruction whose target is not in the image
(no masks). ``answer`` is the text to teach ("" = LISA's "Sure, [SEG]." style, one ``[SEG]`` per
mask; for negatives ``NEGATIVE_ANSWER``). ``group`` is the scene the frame belongs to (a bag, or
a time window of one): the split never puts one group on both sides.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

FORMAT = "lisa_ros.dataset/1"
SPLITS = ("train", "val")
NEGATIVE_ANSWER = "Sorry, it is not in this image."
MAX_IMAGE_PIXELS = 8192 * 8192  # a larger header is a corrupt or hostile file: refused before decoding


class DatasetError(ValueError):
    """A sample the trainer must not learn from; the message names it and says what to fix."""


@dataclasses.dataclass(frozen=True)
class Sample:
    id: str
    image: Path                  # absolute
    instruction: str
    masks: tuple[Path, ...]      # absolute; empty for a negative
    negative: bool
    answer: str
    group: str

    def target_answer(self) -> str:
        """The answer text to teach: the sample's own, or LISA's style with one [SEG] per mask."""
        if self.answer:
            return self.answer
        if self.negative:
            return NEGATIVE_ANSWER
        return "Sure, " + " and ".join(["[SEG]"] * len(self.masks)) + "."

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """(height, width, 3) uint8 RGB image and (n, height, width) bool masks (n = 0 for a negative).

        Raises DatasetError naming the sample for an unreadable file, an empty mask or a size mismatch.
        """
        image = _read(self, self.image, cv2.IMREAD_COLOR)
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        masks = []
        for path in self.masks:
            mask = _read(self, path, cv2.IMREAD_GRAYSCALE) > 0
            if mask.shape != image.shape[:2]:
                raise DatasetError(f"sample {self.id!r}: mask {path} is {mask.shape[1]}x{mask.shape[0]} but its "
                                   f"image {self.image} is {image.shape[1]}x{image.shape[0]}. Fix: export the mask "
                                   f"at the image's size")
            if not mask.any():
                raise DatasetError(f"sample {self.id!r}: mask {path} is empty. Fix: draw the target, or drop the "
                                   f"mask and mark the sample negative (target not in the image)")
            masks.append(mask)
        return image, np.array(masks, bool).reshape(len(masks), *image.shape[:2])


def _read(sample: Sample, path: Path, flags: int) -> np.ndarray:
    """Decodes ``path`` after reading its size from the header alone (Pillow opens lazily)."""
    if not path.is_file():
        raise DatasetError(f"sample {sample.id!r}: {path} does not exist")
    try:
        with Image.open(path) as header:
            width, height = header.size
    except (OSError, Image.DecompressionBombError) as error:
        raise DatasetError(f"sample {sample.id!r}: {path} is not a readable image ({error})") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise DatasetError(f"sample {sample.id!r}: {path} is {width}x{height}, larger than {MAX_IMAGE_PIXELS} pixels")
    decoded = cv2.imdecode(np.fromfile(path, np.uint8), flags)
    if decoded is None:
        raise DatasetError(f"sample {sample.id!r}: {path} is not a readable image")
    return decoded


def sample_from_record(root: Path, record: dict, where: str) -> Sample:
    """One line of a split file -> Sample; refuses an instruction with no target and no negative flag."""
    try:
        sample = Sample(
            id=str(record["id"]), image=root / record["image"], instruction=str(record["instruction"]),
            masks=tuple(root / m for m in record.get("masks", [])), negative=bool(record.get("negative", False)),
            answer=str(record.get("answer", "")), group=str(record.get("group", "")))
    except (KeyError, TypeError) as error:
        raise DatasetError(f"{where}: a sample needs id, image and instruction ({error!r})") from None
    if not sample.instruction.strip():
        raise DatasetError(f"{where}: sample {sample.id!r} has an empty instruction")
    if sample.negative and sample.masks:
        raise DatasetError(f"{where}: sample {sample.id!r} is negative (target absent) but has masks. Fix: drop "
                           f"the masks or the negative flag")
    if not sample.negative and not sample.masks:
        raise DatasetError(f"{where}: sample {sample.id!r} has no target mask and no negative flag. Fix: add its "
                           f"mask, or mark it negative if the target is not in the image")
    return sample


def load_split(dataset_dir: str | Path, split: str) -> list[Sample]:
    """The samples of ``split`` ("train" or "val"), checked line by line (files are read by ``Sample.load``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(dataset_dir)
    meta = root / "dataset.json"
    if not meta.is_file():
        raise DatasetError(f"{meta} not found: pass a folder written by `lisa-ros import-labels`")
    if (found := json.loads(meta.read_text(encoding="utf-8")).get("format")) != FORMAT:
        raise DatasetError(f"{meta}: format {found!r} is not {FORMAT!r}")
    path = root / f"{split}.jsonl"
    samples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            samples.append(sample_from_record(root, json.loads(line), f"{path}:{number}"))
    return samples
