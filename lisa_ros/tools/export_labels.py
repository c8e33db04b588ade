"""``lisa-ros export-labels``: a replay's answers as pre-labels, for correction in an annotation tool.

    DIR/coco.json            COCO instances: one RLE annotation per mask (attributes: instruction, score,
                             request); one ``absent`` annotation per instruction answered NOT_FOUND
    DIR/images/              the frames the instructions were asked on (the replay's JPEGs, unchanged)
    DIR/reasonseg/           LISA's ReasonSeg layout: ``<stem>.json`` beside ``<stem>.jpg``, one per request
                             (stem = the frame's file name; ``<frame>_rRRRR`` when several requests share a frame,
                             since a ReasonSeg image has one target)

Formats and their conventions: label_formats.py. Requests that failed (no answer, BUSY, ...) carry no
pre-label and are left out (counted in the output); replay them again to label them.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import shutil
import sys
from pathlib import Path

from lisa_ros.core.types import Status
from lisa_ros.tools import label_formats, results_folder, visual

COCO_FILE = "coco.json"
IMAGES_DIR = "images"
REASONSEG_DIR = "reasonseg"
TARGET_ID, ABSENT_ID = 1, 2  # COCO category ids


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", help="results folder written by `lisa-ros replay`")
    parser.add_argument("--out", required=True, help="folder to create (coco.json, images/, reasonseg/)")


def reasonseg_stem(record: dict, shared_frame: bool) -> str:
    stem = Path(record["frame"]).stem
    return f"{stem}_r{record['request']:04d}" if shared_frame else stem


def coco_annotations(record: dict, masks: list, scores: list, image_id: int, first_id: int) -> list[dict]:
    """A request's masks as RLE annotations; with none (NOT_FOUND), one ``absent`` annotation that a labeller
    keeps (a negative) or replaces by the target drawn."""
    annotations = []
    for index, mask in enumerate(masks):
        rle = label_formats.encode_rle(mask)
        area, bbox = label_formats.rle_area_bbox(rle)
        attributes = {label_formats.INSTRUCTION_ATTRIBUTE: record["instruction"], "request": record["request"]}
        if index < len(scores):
            attributes["score"] = scores[index]
        annotations.append({"id": first_id + index, "image_id": image_id, "category_id": TARGET_ID, "iscrowd": 1,
                            "segmentation": rle, "area": area, "bbox": bbox, "attributes": attributes})
    if not masks:
        height, width = record["image_size"]
        annotations.append({"id": first_id, "image_id": image_id, "category_id": ABSENT_ID, "iscrowd": 0,
                            "segmentation": [], "area": 0.0, "bbox": [0.0, 0.0, float(width), float(height)],
                            "attributes": {label_formats.INSTRUCTION_ATTRIBUTE: record["instruction"],
                                           "request": record["request"]}})
    return annotations


def export(results: Path, out: Path) -> dict:
    """Writes the export; returns its counts."""
    records = results_folder.read_records(results)
    answered = [r for r in records if Status.is_answered(r["status"])]
    requests_per_frame = collections.Counter(r["frame"] for r in answered)
    (out / IMAGES_DIR).mkdir(parents=True)
    (out / REASONSEG_DIR).mkdir()
    categories = [{"id": TARGET_ID, "name": label_formats.TARGET_CATEGORY, "supercategory": ""},
                  {"id": ABSENT_ID, "name": label_formats.ABSENT_CATEGORY, "supercategory": ""}]
    images, annotations, image_ids = [], [], {}
    for record in answered:
        frame = results / record["frame"]
        height, width = record["image_size"]
        if record["frame"] not in image_ids:
            image_ids[record["frame"]] = len(images) + 1
            images.append({"id": len(images) + 1, "file_name": frame.name, "width": width, "height": height})
            shutil.copyfile(frame, out / IMAGES_DIR / frame.name)
        masks = [visual.read_mask(results / name) for name in record.get("masks", [])]
        scores = record.get("scores", [])
        annotations += coco_annotations(record, masks, scores, image_ids[record["frame"]], len(annotations) + 1)
        stem = reasonseg_stem(record, requests_per_frame[record["frame"]] > 1)
        image_name = stem + frame.suffix
        shutil.copyfile(frame, out / REASONSEG_DIR / image_name)
        extra = {"lisa_ros": {"request": record["request"], "frame_name": record["frame_name"],
                              "frame_occurrence": record.get("frame_occurrence", 0), "scores": scores[:len(masks)]}}
        annotation = label_formats.reasonseg_annotation([record["instruction"]], masks, image_name, (height, width),
                                                        extra)
        (out / REASONSEG_DIR / f"{stem}.json").write_text(json.dumps(annotation, indent=1) + "\n", encoding="utf-8")
    coco = {"info": {"description": f"lisa-ros export-labels {results}", "version": "1.0",
                     "date_created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")},
            "licenses": [], "categories": categories, "images": images, "annotations": annotations}
    (out / COCO_FILE).write_text(json.dumps(coco, ensure_ascii=False) + "\n", encoding="utf-8")
    return {"requests": len(records), "exported": len(answered), "failed": len(records) - len(answered),
            "images": len(images), "masks": sum(a["category_id"] == TARGET_ID for a in annotations),
            "absent": sum(a["category_id"] == ABSENT_ID for a in annotations)}


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        print(f"error: {out} exists and is not empty; pass a new folder", file=sys.stderr)
        return 2
    try:
        counts = export(Path(args.results), out)
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err!r}" if isinstance(err, KeyError) else f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported {counts['exported']} of {counts['requests']} requests on {counts['images']} images: "
          f"{counts['masks']} masks, {counts['absent']} answered NOT_FOUND (category '{label_formats.ABSENT_CATEGORY}')"
          + (f"; {counts['failed']} failed requests left out (no answer to correct)" if counts["failed"] else ""))
    print(f"  COCO:      {out / COCO_FILE} with {out / IMAGES_DIR}/")
    print(f"  ReasonSeg: {out / REASONSEG_DIR}/ (<stem>.json beside <stem>.jpg)")
    return 0
