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

Each frame also has an aligned depth image rendered from a scene of known geometry that
agrees with the colour image's objects (pinhole, fx = fy = 525 px, centre (319.5, 239.5),
no distortion; z along the optical axis):

- the background (the border and the photo, or the table top) is a plane tilted about the
  camera's x axis: 0.55 m at the top row to 0.45 m at the bottom (photo), 1.6 m to 1.0 m (table);
- the coffee cup (its annotated polygon) is a face at 0.35 m, facing the camera; the mug a face
  at 0.60 m, the book a face at 1.05 m; the ball a sphere (centre 0.85 m deep on the ray of its
  drawn centre, its radius spanning the drawn 55 px), ray-cast exactly;
- a 4-px "shadow" of no return (0) right of each object, as a structured-light camera has.

The ground-truth 3D position of each frame's target is the point the node publishes for a
perfect mask, by the one definition of ``lisa_ros.core.depth.surface_centroid`` (default
options): the centroid of the 3D points of its ground-truth pixels eroded by 2 px, on their
dominant surface, from the exact (unrounded) depth, in metres in the depth optical frame (the
colour frame: the depth is aligned to it). So a perfect mask scores ~0 3D error (what is left
is the bag's millimetre rounding of the depth).

Topics (mcap by default, the rosbag2 default storage on Jazzy):
  /camera/image_raw/compressed  sensor_msgs/CompressedImage  JPEG frames
  /camera/aligned_depth_to_color/image_raw    sensor_msgs/Image  16UC1 millimetres (REP 118), the frame's header
  /camera/aligned_depth_to_color/camera_info  sensor_msgs/CameraInfo  the depth image's, the frame's header
  /instruction                  std_msgs/String  50 ms after its frame; frames 3 and 8 get none
  /ground_truth/mask            sensor_msgs/CompressedImage  PNG mono8 0/255, the frame's header
  /ground_truth/position        geometry_msgs/PointStamped  the target's position, the frame's stamp and the
                                depth frame's frame_id; none for the frame whose target is absent
A ReasonSeg-style annotation folder (one JSON of polygons per frame, named by the
frame's stamp in ns, with the target's position as ``position_m`` [x, y, z] and
``position_frame_id``) is written next to it for ``lisa-ros eval --gt-reasonseg``, and a
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

from lisa_ros.core.depth import CameraModel, surface_centroid
from lisa_ros.tools import bag_io

WIDTH, HEIGHT = 640, 480
START_NS = 1_700_000_000 * 10**9
PERIOD_NS = 500_000_000
INSTRUCTION_DELAY_NS = 50_000_000
FRAME_ID = "camera_color_optical_frame"
IMAGE_TOPIC = "/camera/image_raw/compressed"
INSTRUCTION_TOPIC = "/instruction"
GROUND_TRUTH_TOPIC = "/ground_truth/mask"
DEPTH_TOPIC = "/camera/aligned_depth_to_color/image_raw"
CAMERA_INFO_TOPIC = "/camera/aligned_depth_to_color/camera_info"
POSITION_TOPIC = "/ground_truth/position"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POINT_STAMPED = "geometry_msgs/msg/PointStamped"
FX = FY = 525.0
CX, CY = (WIDTH - 1) / 2, (HEIGHT - 1) / 2
SHADOW_PX = 4
# (z at the top row, z at the bottom row) of each scene's background plane, metres
BACKGROUND_Z = {"coffee": (0.55, 0.45), "table": (1.6, 1.0)}
# flat faces facing the camera, metres; the ball is a sphere (ball_depth)
FACE_Z = {"cup": 0.35, "mug": 0.60, "book": 1.05}
BALL_CENTRE_Z, BALL_RADIUS_PX = 0.85, 55

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
    shift = table_shift(index)
    mug_body = np.array([(150, 170), (250, 170), (250, 320), (240, 335), (160, 335), (150, 320)]) + (shift, 0)
    outer = cv2.ellipse2Poly((250 + shift, 245), (50, 45), 0, -90, 90, 10)
    inner = cv2.ellipse2Poly((250 + shift, 245), (30, 27), 0, -90, 90, 10)[::-1]
    mug_handle = np.concatenate([outer, inner])
    ball = cv2.ellipse2Poly(ball_centre(index), (BALL_RADIUS_PX, BALL_RADIUS_PX), 0, 0, 360, 5)
    book = cv2.boxPoints(((470 + shift // 2, 150), (170, 110), 15 + index)).astype(np.int32)
    cv2.fillPoly(image, [mug_body, mug_handle], (225, 230, 240))
    cv2.ellipse(image, (200 + shift, 186), (44, 10), 0, 0, 360, (60, 40, 30), -1)  # coffee, inside the body
    cv2.fillPoly(image, [ball], (200, 30, 35))
    cv2.circle(image, (400 - shift, 310), 15, (245, 150, 150), -1)  # highlight, inside the ball
    cv2.fillPoly(image, [book], (40, 120, 60))
    label = cv2.boxPoints(((470 + shift // 2, 150), (110, 40), 15 + index)).astype(np.int32)
    cv2.fillPoly(image, [label], (230, 220, 180))  # the cover's title label, inside the book
    return image, {"mug": [mug_body, mug_handle], "ball": [ball], "book": [book]}


def table_shift(index: int) -> int:
    """How far (px) table frame ``index`` moves the objects: the mug and book right, the ball left."""
    return 6 * (index - 4)


def ball_centre(index: int) -> tuple[int, int]:
    """Pixel where table frame ``index`` draws the ball's centre."""
    return 420 - table_shift(index), 330


def _rays() -> tuple[np.ndarray, np.ndarray]:
    """(x/z, y/z) of every pixel's ray (pinhole)."""
    vs, us = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    return (us - CX) / FX, (vs - CY) / FY


def background_depth(z_top: float, z_bottom: float) -> np.ndarray:
    """A plane through the camera's x direction: 1/z is affine in the row, z_top at row 0, z_bottom at the last."""
    rows = np.arange(HEIGHT, dtype=np.float64)[:, None] / (HEIGHT - 1)
    inverse = 1 / z_top + (1 / z_bottom - 1 / z_top) * rows
    return np.repeat(1 / inverse, WIDTH, axis=1)


def ball_depth(index: int) -> np.ndarray:
    """z of the ball's sphere along every pixel's ray; pixels whose ray misses it get its tangent depth
    (they lie outside the drawn disc but for its polygon's edge)."""
    x, y = _rays()
    u, v = ball_centre(index)
    centre = np.array([(u - CX) / FX, (v - CY) / FY, 1.0]) * BALL_CENTRE_Z
    radius = BALL_CENTRE_Z * BALL_RADIUS_PX / FX
    along = x * centre[0] + y * centre[1] + centre[2]  # ray (x, y, 1) . centre
    squared = x * x + y * y + 1
    discriminant = np.maximum(along * along - squared * (centre @ centre - radius * radius), 0.0)
    return (along - np.sqrt(discriminant)) / squared  # z of the nearer hit = t, as the ray's z is 1


def scene_depth(scene: str, index: int, objects: dict[str, list[np.ndarray]]) -> tuple[np.ndarray, dict]:
    """(depth in metres, exact, with the shadows as 0; {object: its visible pixels}), objects in drawing order."""
    depth = background_depth(*BACKGROUND_Z[scene])
    visible = {}
    for name, polygons in objects.items():
        pixels = render_mask(polygons) > 0
        depth[pixels] = ball_depth(index)[pixels] if name == "ball" else FACE_Z[name]
        for seen in visible.values():
            seen &= ~pixels
        visible[name] = pixels
    shadow = np.zeros((HEIGHT, WIDTH), bool)
    for pixels in visible.values():
        for step in range(1, SHADOW_PX + 1):
            shadow[:, step:] |= pixels[:, :-step]
    shadow &= ~np.logical_or.reduce(list(visible.values()))
    depth[shadow] = 0.0
    return depth, visible


def target_position(depth: np.ndarray, pixels: np.ndarray) -> list[float]:
    """The published point of a perfect mask (``core.depth.surface_centroid``, metres, 0.1 mm) at the exact depth."""
    camera = CameraModel.from_camera_info(k=[FX, 0, CX, 0, FY, CY, 0, 0, 1], width=WIDTH, height=HEIGHT)
    centroid = surface_centroid(pixels, depth.astype(np.float32), camera)
    return [round(float(value), 4) for value in centroid]


def depth_msg(depth: np.ndarray, header):
    """16UC1 millimetres (REP 118), 0 = no return."""
    millimetres = np.round(depth * 1000).astype("<u2")
    return bag_io.typestore().types[bag_io.IMAGE](
        header=header, height=HEIGHT, width=WIDTH, encoding="16UC1", is_bigendian=0, step=2 * WIDTH,
        data=millimetres.view(np.uint8).reshape(-1))


def camera_info_msg(header):
    types = bag_io.typestore().types
    roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return types[CAMERA_INFO](
        header=header, height=HEIGHT, width=WIDTH, distortion_model="plumb_bob", d=np.zeros(5),
        k=np.array([FX, 0, CX, 0, FY, CY, 0, 0, 1], np.float64), r=np.eye(3).reshape(-1),
        p=np.array([FX, 0, CX, 0, 0, FY, CY, 0, 0, 0, 1, 0], np.float64), binning_x=0, binning_y=0, roi=roi)


def position_msg(position: list[float], header):
    types = bag_io.typestore().types
    x, y, z = position
    return types[POINT_STAMPED](header=header, point=types["geometry_msgs/msg/Point"](x=x, y=y, z=z))


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


def reasonseg_annotation(instruction: str, polygons: list[np.ndarray], position: list[float] | None) -> dict:
    """ReasonSeg's per-image JSON: query text and "target" polygons (labelme shapes); and the target's 3D position."""
    annotation = {
        "text": [instruction],
        "is_sentence": True,
        "imageHeight": HEIGHT,
        "imageWidth": WIDTH,
        "shapes": [{"label": "target", "points": p.astype(float).tolist(), "shape_type": "polygon"} for p in polygons],
    }
    if position is not None:
        annotation |= {"position_m": position, "position_frame_id": FRAME_ID}
    return annotation


def write_sample(bag_dir: Path, reasonseg_dir: Path | None, storage: str, labels_dir: Path | None = None) -> None:
    scenes = {"coffee": coffee_scene, "table": table_scene}
    annotations, label_images = {}, {}
    with bag_io.OutputBag(bag_dir, storage) as bag:
        for index, (scene, instruction, target) in enumerate(FRAMES):
            image, objects = scenes[scene](index)
            stamp = START_NS + index * PERIOD_NS
            header = bag_io.header(stamp, FRAME_ID)
            polygons = objects.get(target, [])
            depth, visible = scene_depth(scene, index, objects)
            position = target_position(depth, visible[target]) if target else None
            label_images[str(stamp)] = coffee_labels(index, objects) if scene == "coffee" else table_labels(objects)
            bag.write(IMAGE_TOPIC, stamp, bag_io.compressed_image_msg(image, header, "jpeg"), bag_io.COMPRESSED_IMAGE)
            bag.write(DEPTH_TOPIC, stamp, depth_msg(depth, header), bag_io.IMAGE)
            bag.write(CAMERA_INFO_TOPIC, stamp, camera_info_msg(header), CAMERA_INFO)
            truth = bag_io.compressed_image_msg(render_mask(polygons), header, "png")
            bag.write(GROUND_TRUTH_TOPIC, stamp, truth, bag_io.COMPRESSED_IMAGE)
            if position is not None:
                bag.write(POSITION_TOPIC, stamp, position_msg(position, header), POINT_STAMPED)
            if instruction:
                msg = bag_io.typestore().types[bag_io.STRING](data=instruction)
                bag.write(INSTRUCTION_TOPIC, stamp + INSTRUCTION_DELAY_NS, msg, bag_io.STRING)
                annotations[str(stamp)] = reasonseg_annotation(instruction, polygons, position)
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
