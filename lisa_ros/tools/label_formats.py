"""The label files ``lisa-ros export-labels`` writes and ``lisa-ros import-labels`` reads.

COCO instances (what CVAT and most annotation tools import and export): one annotation per
mask, ``segmentation`` as pycocotools' compressed RLE (``counts`` a string, ``iscrowd`` 1, as
COCO stores RLE), the instruction and the node's score in the annotation's ``attributes``. An
instruction whose target is not in the image (the node's NOT_FOUND, or a labeller's "it is not
there") is an annotation of the category ``ABSENT_CATEGORY`` with no segmentation: tools show
it as a box over the image, and it survives their round trip (a bare image-level field would not).

ReasonSeg (LISA's own training format, a labelme JSON per image, ``<stem>.json`` beside
``<stem>.jpg``): ``text`` (the instructions), ``is_sentence``, and polygon ``shapes``; LISA's
loader fills every shape labelled ``target`` with 1 and every shape whose label contains
``ignore`` with 255, larger polygons first. The format has no hole: a mask's holes are written as
``ignore`` polygons traced on the hole's own pixels (drawn after the larger target polygon, so they
win). LISA trains on ``mask == 1``, so a hole is background in training, as it should be; in
evaluation it counts neither way.
"""
from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from lisa_ros.training.dataset import MAX_IMAGE_PIXELS

TARGET_CATEGORY = "target"
ABSENT_CATEGORY = "absent"
INSTRUCTION_ATTRIBUTE = "instruction"
TARGET_LABEL = "target"
IGNORE_LABEL = "ignore"
# Polygons traced from a mask rasterise back (ReasonSegTruth, as LISA's reader) to at least this IoU. Measured
# (test_export_labels): 1.0 on the sample bag's ground truth, smooth blobs with holes and islands, a 1-px crack;
# 0.9993 on salt noise (30 % random pixels), the worst case, where diagonal specks merge.
REASONSEG_MIN_IOU = 0.999


def encode_rle(mask: np.ndarray) -> dict:
    """(H, W) bool mask -> COCO compressed RLE, ``counts`` as str (JSON cannot hold bytes)."""
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_area_bbox(rle: dict) -> tuple[float, list[float]]:
    """COCO's ``area`` and ``bbox`` [x, y, width, height] of an RLE from ``encode_rle``."""
    coded = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return float(mask_utils.area(coded)), [float(v) for v in mask_utils.toBbox(coded)]


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` in any of its three forms -> (height, width) bool mask.

    Polygons ``[[x0, y0, x1, y1, ...], ...]``, uncompressed RLE (``counts`` a list) or compressed
    RLE (``counts`` a string). Raises ValueError for a malformed one or one of another size.
    """
    if height * width > MAX_IMAGE_PIXELS or height <= 0 or width <= 0:
        raise ValueError(f"image size {width}x{height} is out of range")
    if isinstance(segmentation, list):
        if not segmentation:
            return np.zeros((height, width), bool)
        for polygon in segmentation:
            if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
                raise ValueError("a polygon must be a list of at least 3 x, y pairs")
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if list(segmentation["size"]) != [height, width]:
            raise ValueError(f"the mask is {segmentation['size'][1]}x{segmentation['size'][0]} (size [h, w]) "
                             f"but its image is {width}x{height}")
        counts = segmentation["counts"]
        runs = counts if isinstance(counts, list) else compressed_runs(counts)
        if any(not isinstance(run, int) or run < 0 for run in runs) or sum(runs) != height * width:
            raise ValueError(f"the RLE's runs do not cover its {width}x{height} pixels exactly: a corrupt mask")
        if isinstance(counts, list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            rle = {"size": [height, width], "counts": counts.encode("ascii")}
    else:
        raise ValueError(f"segmentation must be polygons or an RLE {{size, counts}}, got {type(segmentation).__name__}")
    return mask_utils.decode(rle).astype(bool)


def compressed_runs(counts: str) -> list[int]:
    """The run lengths of COCO's compressed RLE string (pycocotools' rleFrString), read to check them first:
    pycocotools' decoder writes runs past its buffer when a corrupt string's runs exceed the mask's size."""
    if not isinstance(counts, str) or not counts.isascii():
        raise ValueError("compressed RLE counts must be an ASCII string")
    runs, position = [], 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position == len(counts):
                raise ValueError("compressed RLE counts end inside a run")
            chunk = ord(counts[position]) - 48
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & 0x20)
            position, shift = position + 1, shift + 5
            if not more and chunk & 0x10:
                value |= -1 << shift
        runs.append(value + (runs[-2] if len(runs) > 2 else 0))
    return runs


def _polygons(mask: np.ndarray, mode: int) -> list[list[list[float]]]:
    """Contours of ``mask`` as labelme point lists; RETR_CCOMP keeps the outer ones (islands in holes too)."""
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), mode, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return []
    outer = [c for c, h in zip(contours, hierarchy[0]) if mode != cv2.RETR_CCOMP or h[3] < 0]
    return [c.reshape(-1, 2).astype(float).tolist() for c in outer]


def holes(mask: np.ndarray) -> np.ndarray:
    """Background pixels enclosed by ``mask`` (4-connected background, as findContours pairs with 8-connected
    foreground), not reaching the image's edge."""
    count, labels = cv2.connectedComponents((~mask).astype(np.uint8), connectivity=4)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return np.isin(labels, np.setdiff1d(np.arange(1, count), edge))


def mask_shapes(masks: list[np.ndarray]) -> list[dict]:
    """labelme polygon shapes for ``masks`` (one target per ReasonSeg image: LISA reads their union).

    Each mask's outer contours are ``target`` shapes (``group_id`` = the mask's index, labelme's instance),
    the union's holes ``ignore`` shapes.
    """
    shapes = [{"label": TARGET_LABEL, "points": points, "group_id": index, "shape_type": "polygon", "flags": {}}
              for index, mask in enumerate(masks) for points in _polygons(mask, cv2.RETR_CCOMP)]
    if masks:
        enclosed = holes(np.logical_or.reduce(masks))
        shapes += [{"label": IGNORE_LABEL, "points": points, "group_id": None, "shape_type": "polygon", "flags": {}}
                   for points in _polygons(enclosed, cv2.RETR_EXTERNAL)]
    return shapes


def reasonseg_annotation(instructions: list[str], masks: list[np.ndarray], image_name: str,
                         size: tuple[int, int], extra: dict) -> dict:
    """ReasonSeg's JSON for one image (labelme's fields too, so labelme opens it for correction)."""
    height, width = size
    return {"version": "5.0.1", "flags": {}, "text": list(instructions), "is_sentence": True,
            "shapes": mask_shapes(masks), "imagePath": image_name, "imageData": None,
            "imageHeight": int(height), "imageWidth": int(width), **extra}
