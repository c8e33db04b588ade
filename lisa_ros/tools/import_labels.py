"""``lisa-ros import-labels``: corrected labels -> one training set (the format of lisa_ros/training/dataset.py).

Sources, any number of each, combined into one set:

- ``--coco FILE``: COCO instances, as ``lisa-ros export-labels`` writes them or CVAT exports them after
  correction (RLE or polygons). Every annotation needs the ``instruction`` attribute; the annotations of
  one image with one instruction are that sample's masks; an annotation of the category ``absent`` makes
  the instruction a negative. Images: FILE's folder/images/, ../images/, ../images/<subset>/ or FILE's folder.
- ``--reasonseg DIR``: ReasonSeg JSONs in LISA's layout (``<stem>.json`` beside ``<stem>.jpg``); each
  ``text`` entry is one sample of the image's target (the ``target`` shapes; ``ignore`` pixels become
  background, as LISA trains); no target shape = a negative.
- ``--results RESULTS`` with ground truth as ``lisa-ros eval`` reads it (``--gt-bag``, ``--gt-masks`` or
  ``--gt-reasonseg``, the n-th going with the n-th ``--results``): each request's instruction on its frame,
  the frame's ground truth as the target; an empty ground truth = a negative.

Every sample is checked here as ``lisa-ros finetune`` will read it (readable image, masks of its size,
none empty, a target or the negative flag), so a bad label fails now, named, not hours into training.

Split: whole groups go to validation. A group is a source, or with ``--split-window-s S`` a window of S
seconds of frame stamps within it; groups that share a frame stamp (one bag imported twice) are merged,
so no frame is on both sides. Groups are drawn in a seeded order until they hold ``--val-fraction``.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import random
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lisa_ros.tools import ground_truth, label_formats, results_folder, visual
from lisa_ros.tools.results_folder import stamp_of_frame_file
from lisa_ros.training.dataset import FORMAT, MAX_IMAGE_PIXELS, DatasetError, load_split, sample_from_record

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclasses.dataclass
class Labelled:
    """One instruction on one image, as a source gives it."""

    image: Path                # the source's image file
    image_name: str            # its name within the source (unique there)
    instruction: str
    masks: list[np.ndarray]    # (H, W) bool each; empty for a negative
    negative: bool
    stamp_ns: int | None       # the frame's header stamp, when the source knows it (time windows, leak check)
    where: str                 # the file and entry it came from, for messages


@dataclasses.dataclass
class Source:
    kind: str
    path: str
    labels: Iterator[Labelled]
    skipped: list[str] = dataclasses.field(default_factory=list)  # requests left out (--skip-unlabelled)

    def tag(self, index: int) -> str:
        """A folder name for its files in the dataset, unique among the sources."""
        return f"{index}_{re.sub(r'[^A-Za-z0-9._-]+', '_', Path(self.path).stem or 'source')}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="DATASET folder to create (dataset.json, train.jsonl, val.jsonl, "
                        "images/, masks/), read by `lisa-ros finetune`")
    sources = parser.add_argument_group("sources (any number of each)")
    sources.add_argument("--coco", action="append", default=[], metavar="FILE",
                         help="COCO instances JSON (RLE or polygons) with an 'instruction' attribute on every "
                         f"annotation; category '{label_formats.ABSENT_CATEGORY}' = target not in the image")
    sources.add_argument("--reasonseg", action="append", default=[], metavar="DIR",
                         help="ReasonSeg folder: <stem>.json beside <stem>.jpg (LISA's layout)")
    sources.add_argument("--results", action="append", default=[], metavar="RESULTS",
                         help="results folder of `lisa-ros replay`, labelled by the n-th --gt-* below")
    truth = parser.add_argument_group("ground truth of each --results (one kind, as many as --results, in order)")
    truth.add_argument("--gt-bag", action="append", default=[], metavar="BAG", help="rosbag2 with a mask topic")
    truth.add_argument("--gt-masks", action="append", default=[], metavar="DIR",
                       help="folder of PNG masks named <frame stamp ns>.png")
    truth.add_argument("--gt-reasonseg", action="append", default=[], metavar="DIR",
                       help="folder of ReasonSeg JSONs named <frame stamp ns>.json")
    truth.add_argument("--gt-topic", default="/ground_truth/mask", help="the --gt-bag mask topic "
                       "(default /ground_truth/mask)")
    truth.add_argument("--skip-unlabelled", action="store_true",
                       help="leave out requests whose frame has no ground truth (default: refuse them)")
    split = parser.add_argument_group("train / validation split")
    split.add_argument("--val-fraction", type=float, default=0.2,
                       help="share of the samples held out for validation, in whole groups (default 0.2; 0: none)")
    split.add_argument("--split-window-s", type=float, metavar="S",
                       help="group by S-second windows of frame stamps within each source (default: by source)")
    split.add_argument("--seed", type=int, default=0, help="seed of the group order (default 0)")


def coco_image_dir(path: Path, images: list[dict]) -> Path:
    """Where a COCO file's images are: beside it as export-labels writes them, or as CVAT's export lays them out."""
    subset = path.stem.removeprefix("instances_")
    candidates = [path.parent / "images", path.parent.parent / "images", path.parent.parent / "images" / subset,
                  path.parent]
    for folder in candidates:
        if not images or (folder / images[0]["file_name"]).is_file():
            return folder
    raise DatasetError(f"{path}: image {images[0]['file_name']!r} is in none of " +
                       ", ".join(str(c) for c in candidates) + ". Fix: put the images in images/ beside the JSON")


def coco_labels(path: Path) -> Iterator[Labelled]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: not a readable COCO JSON ({error})") from None
    if not all(isinstance(data.get(key), list) for key in ("images", "annotations")):
        raise DatasetError(f"{path}: no 'images' and 'annotations' lists: pass a COCO instances JSON")
    images = {image["id"]: image for image in data["images"]}
    absent_ids = {c["id"] for c in data.get("categories", []) if c.get("name") == label_formats.ABSENT_CATEGORY}
    image_dir = coco_image_dir(path, data["images"])
    grouped: dict[tuple, list[dict]] = {}  # (image id, instruction) -> its annotations
    for annotation in data["annotations"]:
        image = images.get(annotation.get("image_id"))
        if image is None:
            raise DatasetError(f"{path}: annotation {annotation.get('id')} is on image_id "
                               f"{annotation.get('image_id')}, which 'images' does not list")
        instruction = (annotation.get("attributes") or {}).get(label_formats.INSTRUCTION_ATTRIBUTE)
        if not isinstance(instruction, str) or not instruction.strip():
            raise DatasetError(f"{path}: annotation {annotation.get('id')} on {image['file_name']!r} has no "
                               f"'{label_formats.INSTRUCTION_ATTRIBUTE}' attribute. Fix: give every shape the "
                               "instruction it answers (CVAT: a text attribute 'instruction' on the labels)")
        grouped.setdefault((image["id"], instruction), []).append(annotation)
    for (image_id, instruction), drawn in grouped.items():
        image = images[image_id]
        where = f"{path}: image {image['file_name']!r}, instruction {instruction!r}"
        absent = [a for a in drawn if a.get("category_id") in absent_ids]
        if absent and len(absent) < len(drawn):
            raise DatasetError(f"{where} is marked '{label_formats.ABSENT_CATEGORY}' and has its target drawn too. "
                               "Fix: delete one of them")
        try:
            size = int(image["height"]), int(image["width"])
            masks = [] if absent else [label_formats.decode_segmentation(a.get("segmentation", []), *size)
                                       for a in drawn]
        except (ValueError, KeyError, TypeError) as error:
            raise DatasetError(f"{where}: {error}") from None
        yield Labelled(image_dir / image["file_name"], image["file_name"], instruction, masks, bool(absent),
                       stamp_of_frame_file(image["file_name"]), where)


def reasonseg_labels(folder: Path) -> Iterator[Labelled]:
    try:
        truth = ground_truth.ReasonSegTruth(str(folder))
    except FileNotFoundError as error:
        raise DatasetError(str(error)) from None
    for path in sorted(folder.glob("*.json")):
        image = next((path.with_suffix(s) for s in IMAGE_SUFFIXES if path.with_suffix(s).is_file()), None)
        if image is None:
            raise DatasetError(f"{path}: no image beside it. Fix: put <stem>.jpg next to <stem>.json (LISA's layout)")
        try:
            annotation = json.loads(path.read_text(encoding="utf-8"))
            texts = annotation["text"]
            texts = [texts] if isinstance(texts, str) else texts
            if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
                raise ValueError("'text' must list the instructions")
            size = annotation.get("imageHeight"), annotation.get("imageWidth")
            if not all(isinstance(v, int) and v > 0 for v in size):
                size = visual.read_rgb(image).shape[:2]
            if size[0] * size[1] > MAX_IMAGE_PIXELS:
                raise ValueError(f"image size {size[1]}x{size[0]} is out of range")
            mask, _ = truth.get(path.stem, tuple(size))  # "ignore" pixels: background, as LISA trains (mask == 1)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DatasetError(f"{path}: {error!r}" if isinstance(error, KeyError) else f"{path}: {error}") from None
        for text in texts:
            yield Labelled(image, image.name, text, [mask] if mask.any() else [], not mask.any(),
                           stamp_of_frame_file(path.stem), f"{path}: instruction {text!r}")


def results_labels(results: Path, truth, skip_unlabelled: bool, skipped: list[str]) -> Iterator[Labelled]:
    for record in results_folder.read_records(results):
        where = f"{results}: request {record['request']} ({record['instruction']!r} on frame {record['frame_name']})"
        found = truth.get(record["frame_name"], tuple(record["image_size"]), record.get("frame_occurrence", 0))
        if found is None:
            if skip_unlabelled:
                skipped.append(where)
                continue
            raise DatasetError(f"{where}: {truth.description} has no ground truth for this frame. Fix: label it, or "
                               "pass --skip-unlabelled to leave such requests out")
        mask = found[0]  # its "ignore" pixels: background, as LISA trains
        yield Labelled(results / record["frame"], Path(record["frame"]).name, record["instruction"],
                       [mask] if mask.any() else [], not mask.any(), int(record["frame_name"]), where)


def open_sources(args: argparse.Namespace) -> list[Source]:
    sources = [Source("coco", path, coco_labels(Path(path))) for path in args.coco]
    sources += [Source("reasonseg", path, reasonseg_labels(Path(path))) for path in args.reasonseg]
    kinds = {name: paths for name, paths in (("--gt-bag", args.gt_bag), ("--gt-masks", args.gt_masks),
                                             ("--gt-reasonseg", args.gt_reasonseg)) if paths}
    if len(kinds) > 1 or (args.results and len(next(iter(kinds.values()), [])) != len(args.results)):
        raise ValueError(f"pass one kind of ground truth for each --results, in order ({len(args.results)} "
                         f"--results, got {', '.join(f'{len(v)} {k}' for k, v in kinds.items()) or 'none'})")
    if kinds and not args.results:
        raise ValueError(f"{next(iter(kinds))} labels a --results folder: pass --results too")
    for results, truth_path in zip(args.results, next(iter(kinds.values()), [])):
        if args.gt_bag:
            truth = ground_truth.BagTopicTruth(truth_path, args.gt_topic)
        elif args.gt_masks:
            truth = ground_truth.PngFolderTruth(truth_path)
        else:
            truth = ground_truth.ReasonSegTruth(truth_path)
        skipped: list[str] = []
        sources.append(Source("results", results, results_labels(Path(results), truth, args.skip_unlabelled, skipped),
                              skipped))
    if not sources:
        raise ValueError("no source: pass --coco, --reasonseg or --results with its ground truth")
    return sources


class DatasetWriter:
    """Copies images, writes masks and records, and checks every sample as the trainer will load it."""

    def __init__(self, root: Path):
        self.root = root
        self.records: list[dict] = []
        self.origins: list[tuple[str, int | None]] = []  # (source path, frame stamp) of each record
        self._copied: dict[str, Path] = {}  # dataset image path -> its source file

    def add(self, label: Labelled, source: Source, tag: str) -> None:
        image = f"images/{tag}/{label.image_name}"
        if image not in self._copied:
            (self.root / image).parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(label.image, self.root / image)
            except OSError as error:
                raise DatasetError(f"{label.where}: image {label.image} cannot be read ({error.strerror})") from None
            self._copied[image] = label.image
        number = len(self.records)
        masks = [f"masks/{tag}/{number:06d}_{k}.png" for k in range(len(label.masks))]
        for name, mask in zip(masks, label.masks):
            (self.root / name).parent.mkdir(parents=True, exist_ok=True)
            visual.write_png(self.root / name, mask)
        record = {"id": f"{tag}/{Path(label.image_name).stem}/{number}", "image": image,
                  "instruction": label.instruction, "masks": masks, "negative": label.negative, "answer": "",
                  "group": ""}
        try:
            sample_from_record(self.root, record, label.where).load()
        except DatasetError as error:
            raise DatasetError(f"{label.where}: {error}") from None
        self.records.append(record)
        self.origins.append((source.path, label.stamp_ns))


def group_names(origins: list[tuple[str, int | None]], window_s: float | None) -> list[str]:
    """Each record's group: its source (or source + stamp window), merged with any group sharing a frame stamp."""
    keys = []
    for source, stamp in origins:
        if window_s is None:
            keys.append(source)
        elif stamp is None:
            raise DatasetError(f"--split-window-s needs frame stamps, and a sample of {source} has none (its image "
                               "is not named NNNNN_STAMP... as a replay names frames). Fix: split by source instead")
        else:
            keys.append(f"{source}#{stamp // round(window_s * 1e9)}")
    parent = {key: key for key in keys}

    def root(key):
        while parent[key] != key:
            key = parent[key]
        return key

    first_with_stamp: dict[int, str] = {}
    for key, (_, stamp) in zip(keys, origins):
        if stamp is not None:
            parent[root(key)] = root(first_with_stamp.setdefault(stamp, key))
    members: dict[str, set[str]] = {}
    for key in keys:
        members.setdefault(root(key), set()).add(key)
    return [" + ".join(sorted(members[root(key)])) for key in keys]


def validation_groups(sizes: dict[str, int], val_fraction: float, seed: int) -> set[str]:
    """Whole groups, in a seeded order, each taken when it brings validation nearer ``val_fraction`` of the samples;
    at least one group stays in training."""
    if val_fraction <= 0:
        return set()
    if len(sizes) < 2:
        raise DatasetError(f"only one group ({next(iter(sizes), 'no samples')}): a validation split would put one "
                           "scene on both sides. Fix: import another recording, pass --split-window-s SECONDS to cut "
                           "it into time windows, or --val-fraction 0 for no validation")
    order = sorted(sizes)
    random.Random(seed).shuffle(order)
    target = val_fraction * sum(sizes.values())
    chosen, count = set(), 0
    for group in order:
        if len(chosen) == len(sizes) - 1:
            break
        if not chosen or abs(count + sizes[group] - target) < abs(count - target):
            chosen.add(group)
            count += sizes[group]
    return chosen


def import_labels(sources: list[Source], out: Path, val_fraction: float, window_s: float | None, seed: int) -> dict:
    """Writes the dataset; returns dataset.json's content. Raises DatasetError listing every bad sample."""
    writer = DatasetWriter(out)
    problems, counts = [], []
    for index, source in enumerate(sources):
        before = len(writer.records)
        for label in source.labels:
            try:
                writer.add(label, source, source.tag(index))
            except DatasetError as error:
                problems.append(str(error))
        new = writer.records[before:]
        counts.append({"kind": source.kind, "path": source.path, "samples": len(new),
                       "negatives": sum(r["negative"] for r in new), "skipped": len(source.skipped)})
    if problems:
        raise DatasetError(f"{len(problems)} bad sample(s), nothing written:\n  " + "\n  ".join(problems))
    if not writer.records:
        raise DatasetError("the sources hold no labelled instruction")
    groups = group_names(writer.origins, window_s)
    sizes: dict[str, int] = {}
    for group in groups:
        sizes[group] = sizes.get(group, 0) + 1
    val = validation_groups(sizes, val_fraction, seed)
    splits = {"train": [], "val": []}
    for record, group in zip(writer.records, groups):
        splits["val" if group in val else "train"].append({**record, "group": group})
    for split, records in splits.items():
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                                            encoding="utf-8")
    meta = {"format": FORMAT, "train": len(splits["train"]), "val": len(splits["val"]),
            "split": {"by": "source" if window_s is None else "time window", "window_s": window_s,
                      "val_fraction": val_fraction, "seed": seed, "val_groups": sorted(val),
                      "train_groups": sorted(set(sizes) - val)},
            "sources": counts,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    (out / "dataset.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    for split in splits:  # what finetune will read: the contract, checked once more
        load_split(out, split)
    return meta


def remove_written(out: Path, created: bool) -> None:
    """A failed import leaves no half dataset behind (``out`` was empty or absent before it)."""
    if created:
        shutil.rmtree(out, ignore_errors=True)
    elif out.is_dir():
        for path in out.iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        print(f"error: {out} exists and is not empty; pass a new folder", file=sys.stderr)
        return 2
    if not 0 <= args.val_fraction < 1 or (args.split_window_s is not None and args.split_window_s <= 0):
        print("error: --val-fraction must be in [0, 1) and --split-window-s > 0", file=sys.stderr)
        return 2
    created = not out.exists()
    try:
        sources = open_sources(args)
        out.mkdir(parents=True, exist_ok=True)
        meta = import_labels(sources, out, args.val_fraction, args.split_window_s, args.seed)
    except (DatasetError, ValueError, OSError, ground_truth.bag_io.BagError) as error:
        remove_written(out, created)
        print(f"error: {error}", file=sys.stderr)
        return 2
    for source in meta["sources"]:
        print(f"{source['kind']} {source['path']}: {source['samples']} samples ({source['negatives']} negative)"
              + (f", {source['skipped']} requests without ground truth left out" if source["skipped"] else ""))
    split = meta["split"]
    print(f"wrote {out}: {meta['train']} train, {meta['val']} val samples; split by {split['by']}: "
          f"{len(split['train_groups'])} train group(s), {len(split['val_groups'])} val group(s)")
    return 0
