"""``lisa-ros make-sample-bag``: the small sample recording shipped in data/.

A 12-frame, 2 Hz, 640x480 camera stream with instructions and ground-truth masks,
generated deterministically (no downloads):

- frames 0-3: scikit-image's freely licensed ``coffee`` photo (a cup on a saucer),
  shifted a few pixels per frame like a slowly panning camera. Its ground truth
  (the cup, handle included) is a polygon annotated by hand, approximately
  (+-5 px on the rim): good enough to rank models, not a benchmark.
- frames 4-11: a synthetic table top with a mug, a ball and a book, drawn from
  polygons, so their ground truth is exact. One instruction names something that
  is not there ("keep me dry in the rain"): its ground truth is empty.

Topics (mcap by default, the rosbag2 default storage on Jazzy):
  /camera/image_raw/compressed  sensor_msgs/CompressedImage  JPEG frames
  /instruction                  std_msgs/String  50 ms after its frame; frames 3 and 8 get none
  /ground_truth/mask            sensor_msgs/CompressedImage  PNG mono8 0/255, the frame's header
A ReasonSeg-style annotation folder (one JSON of polygons per frame, named by the
frame's stamp in ns) is written next to it for ``lisa-ros eval --gt-reasonseg``, and a
label folder for a semantic replay (``lisa-ros replay --semantic-file
data/sample_labels/categories.txt``, then ``lisa-ros eval --gt-labels data/sample_labels``):
one mono8 PNG per frame, ``<stamp ns>.png``, value = line of categories.txt (1-based),
0 = unlabelled, 255 = ignore. The table frames are labelled exactly (the polygons they
are drawn from; everything else is the table); in the photo frames only the cup shrunk
by the annotation's error is labelled, the rest of the photo is ignored and the grey
border around it is unlabelled.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import cv2
import numpy as np

from lisa_ros.tools import bag_io

WIDTH, HEIGHT = 640, 480
START_NS = 1_700_000_000 * 10**9
PERIOD_NS = 500_000_000
INSTRUCTION_DELAY_NS = 50_000_000
FRAME_ID = "camera_color_optical_frame"
IMAGE_TOPIC = "/camera/image_raw/compressed"
INSTRUCTION_TOPIC = "/instruction"
GROUND_TRUTH_TOPIC = "/ground_truth/mask"

DRINK = "segment what I could drink from"
# (scene, instruction or None, target object)
FRAMES = [
    ("coffee", DRINK, "cup"),
    ("coffee", "where is the cup? please output the segmentation mask", "cup"),
    ("coffee", DRINK, "cup"),
    ("coffee", None, "cup"),
    ("table", DRINK, "mug"),
    ("table", "segment the thing that could roll off the table", "ball"),
    ("table", "segment something I could read", "book"),
    ("table", DRINK, "mug"),
    ("table", None, "mug"),
    ("table", "segment the thing that could roll off the table", "ball"),
    ("table", "segment what would keep me dry in the rain", None),
    ("table", "segment something I could read", "book"),
]

# The semantic ground truth's categories, in label-id order; the table scene's mug is a cup.
CATEGORIES = ["cup", "ball", "book", "table"]
LABEL_OF_OBJECT = {"cup": "cup", "mug": "cup", "ball": "ball", "book": "book"}
IGNORE_LABEL = 255
COFFEE_ANNOTATION_ERROR_PX = 5
COFFEE_PHOTO_SHAPE = (400, 600)  # skimage.data.coffee(), rows x columns

# The cup in skimage.data.coffee() (600x400), annotated by hand, approximately.
COFFEE_CUP = np.array([
    (178, 75), (200, 40), (250, 22), (300, 18), (350, 25), (395, 45), (410, 80), (405, 130), (395, 175),
    (380, 215), (360, 245), (320, 265), (290, 270), (255, 268), (250, 300), (225, 305), (200, 295),
    (195, 260), (200, 235), (215, 225), (195, 180), (182, 130),
])


def coffee_scene(index: int) -> tuple[np.ndarray, dict[str, list[np.ndarray]]]:
    from skimage import data

    photo = data.coffee()
    offset = coffee_offset(index)
    image = np.full((HEIGHT, WIDTH, 3), 30, np.uint8)
    image[offset[1]:offset[1] + photo.shape[0], offset[0]:offset[0] + photo.shape[1]] = photo
    return image, {"cup": [COFFEE_CUP + offset]}


def coffee_offset(index: int) -> np.ndarray:
    """Where the 600x400 photo sits in frame ``index`` (x, y): the slow pan."""
    return np.array([14 + 4 * index, 36 + 2 * index])


def _wood(rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    grain = 0.5 + 0.25 * np.sin(x / 9.0 + 3 * np.sin(y / 60.0)) + 0.1 * rng.standard_normal((HEIGHT, WIDTH))
    base = np.array([150, 105, 65], np.float32)
    return np.clip(base * (0.8 + 0.4 * grain[..., None]), 0, 255).astype(np.uint8)


def table_scene(index: int) -> tuple[np.ndarray, dict[str, list[np.ndarray]]]:
    """Mug (body + C-shaped handle), ball and book, drawn from the polygons that are the ground truth."""
    image = _wood(np.random.default_rng(index))
    shift = 6 * (index - 4)
    mug_body = np.array([(150, 170), (250, 170), (250, 320), (240, 335), (160, 335), (150, 320)]) + (shift, 0)
    outer = cv2.ellipse2Poly((250 + shift, 245), (50, 45), 0, -90, 90, 10)
    inner = cv2.ellipse2Poly((250 + shift, 245), (30, 27), 0, -90, 90, 10)[::-1]
    mug_handle = np.concatenate([outer, inner])
    ball = cv2.ellipse2Poly((420 - shift, 330), (55, 55), 0, 0, 360, 5)
    book = cv2.boxPoints(((470 + shift // 2, 150), (170, 110), 15 + index)).astype(np.int32)
    cv2.fillPoly(image, [mug_body, mug_handle], (225, 230, 240))
    cv2.ellipse(image, (200 + shift, 186), (44, 10), 0, 0, 360, (60, 40, 30), -1)  # coffee, inside the body
    cv2.fillPoly(image, [ball], (200, 30, 35))
    cv2.circle(image, (400 - shift, 310), 15, (245, 150, 150), -1)  # highlight, inside the ball
    cv2.fillPoly(image, [book], (40, 120, 60))
    label = cv2.boxPoints(((470 + shift // 2, 150), (110, 40), 15 + index)).astype(np.int32)
    cv2.fillPoly(image, [label], (230, 220, 180))  # the cover's title label, inside the book
    return image, {"mug": [mug_body, mug_handle], "ball": [ball], "book": [book]}


def render_mask(polygons: list[np.ndarray]) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    cv2.fillPoly(mask, [p.astype(np.int32) for p in polygons], 255)
    return mask


def label_id(name: str) -> int:
    return CATEGORIES.index(LABEL_OF_OBJECT[name]) + 1


def table_labels(objects: dict[str, list[np.ndarray]]) -> np.ndarray:
    """Exact: the table everywhere, then each object's polygons painted in the order table_scene draws them."""
    labels = np.full((HEIGHT, WIDTH), CATEGORIES.index("table") + 1, np.uint8)
    for name in ("mug", "ball", "book"):
        cv2.fillPoly(labels, [p.astype(np.int32) for p in objects[name]], label_id(name))
    return labels


def coffee_labels(index: int, objects: dict[str, list[np.ndarray]]) -> np.ndarray:
    """Only what is certain: the border is nothing, the photo is ignored except the cup's sure inside."""
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    x, y = coffee_offset(index)
    labels[y:y + COFFEE_PHOTO_SHAPE[0], x:x + COFFEE_PHOTO_SHAPE[1]] = IGNORE_LABEL
    size = 2 * COFFEE_ANNOTATION_ERROR_PX + 1
    sure_cup = cv2.erode(render_mask(objects["cup"]), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    labels[sure_cup > 0] = label_id("cup")
    return labels


def reasonseg_annotation(instruction: str, polygons: list[np.ndarray]) -> dict:
    """ReasonSeg's per-image JSON: query text and "target" polygons (labelme shapes)."""
    return {
        "text": [instruction],
        "is_sentence": True,
        "imageHeight": HEIGHT,
        "imageWidth": WIDTH,
        "shapes": [{"label": "target", "points": p.astype(float).tolist(), "shape_type": "polygon"} for p in polygons],
    }


def write_sample(bag_dir: Path, reasonseg_dir: Path | None, storage: str, labels_dir: Path | None = None) -> None:
    scenes = {"coffee": coffee_scene, "table": table_scene}
    annotations, label_images = {}, {}
    with bag_io.OutputBag(bag_dir, storage) as bag:
        for index, (scene, instruction, target) in enumerate(FRAMES):
            image, objects = scenes[scene](index)
            stamp = START_NS + index * PERIOD_NS
            header = bag_io.header(stamp, FRAME_ID)
            polygons = objects.get(target, [])
            label_images[str(stamp)] = coffee_labels(index, objects) if scene == "coffee" else table_labels(objects)
            bag.write(IMAGE_TOPIC, stamp, bag_io.compressed_image_msg(image, header, "jpeg"), bag_io.COMPRESSED_IMAGE)
            truth = bag_io.compressed_image_msg(render_mask(polygons), header, "png")
            bag.write(GROUND_TRUTH_TOPIC, stamp, truth, bag_io.COMPRESSED_IMAGE)
            if instruction:
                msg = bag_io.typestore().types[bag_io.STRING](data=instruction)
                bag.write(INSTRUCTION_TOPIC, stamp + INSTRUCTION_DELAY_NS, msg, bag_io.STRING)
                annotations[str(stamp)] = reasonseg_annotation(instruction, polygons)
    if reasonseg_dir is not None:
        reasonseg_dir.mkdir(parents=True, exist_ok=True)
        for key, annotation in annotations.items():
            (reasonseg_dir / f"{key}.json").write_text(json.dumps(annotation, indent=1) + "\n")
    if labels_dir is not None:
        labels_dir.mkdir(parents=True, exist_ok=True)
        (labels_dir / "categories.txt").write_text(
            "# the label images' ids: the n-th category below is id n; 0 unlabelled, 255 ignore\n"
            + "".join(f"{name}\n" for name in CATEGORIES))
        for key, labels in label_images.items():
            if not cv2.imwrite(str(labels_dir / f"{key}.png"), labels):
                raise OSError(f"could not write {labels_dir / key}.png")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default="data/sample_bag", help="bag directory to create (default data/sample_bag)")
    parser.add_argument("--reasonseg", default="data/sample_reasonseg",
                        help="ReasonSeg-style JSON folder to write ('' for none)")
    parser.add_argument("--labels", default="data/sample_labels",
                        help="ground-truth label image folder for --gt-labels to write ('' for none)")
    parser.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    parser.add_argument("--force", action="store_true", help="replace existing output")


def run(args: argparse.Namespace) -> int:
    bag_dir = Path(args.output)
    reasonseg_dir = Path(args.reasonseg) if args.reasonseg else None
    labels_dir = Path(args.labels) if args.labels else None
    for path in (bag_dir, reasonseg_dir, labels_dir):
        if path is not None and path.exists():
            if not args.force:
                print(f"error: {path} exists; pass --force to replace it")
                return 2
            shutil.rmtree(path)
    write_sample(bag_dir, reasonseg_dir, args.storage, labels_dir)
    size = sum(f.stat().st_size for f in bag_dir.rglob("*") if f.is_file())
    also = "".join(f" and {path}" for path in (reasonseg_dir, labels_dir) if path)
    print(f"wrote {bag_dir} ({size / 1e6:.2f} MB, {len(FRAMES)} frames){also}")
    return 0
