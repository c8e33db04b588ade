"""lisa-ros export-labels and import-labels: round trips on the sample bag's frames and ground truth, each
import source, the leak-free split and the refusals of bad labels."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from lisa_ros.core.image import image_message_to_rgb
from lisa_ros.tools import bag_io, label_formats, make_sample_bag, metrics, visual
from lisa_ros.tools import import_labels as import_labels_module
from lisa_ros.tools.cli import main
from lisa_ros.tools.ground_truth import BagTopicTruth, ReasonSegTruth
from lisa_ros.tools.results_folder import ResultsFolder, read_records, stamp_of_frame_file
from lisa_ros.training.dataset import NEGATIVE_ANSWER, load_split

REPO = Path(__file__).resolve().parents[2]
SAMPLE_BAG = REPO / "data" / "sample_bag"
TWO_MASKS_FRAME, FAILED_FRAME = 4, 5


def ring_with_island(shape):
    """A disc with a square hole holding a small island: the case a polygon format has to think about."""
    mask = np.zeros(shape, np.uint8)
    cv2.circle(mask, (100, 380), 60, 1, -1)
    mask[350:410, 70:130] = 0
    mask[372:388, 92:108] = 1
    return mask > 0


def blob(shape, seed=0, sigma=12):
    """A LISA-like mask: smooth random blobs with holes and islands."""
    noise = np.random.default_rng(seed).random(shape).astype(np.float32)
    return cv2.GaussianBlur(noise, (0, 0), sigma) > 0.5


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A replay's results folder (written by the replay's own ResultsFolder) on the sample bag's frames: the node
    "answered" each instruction with the ground truth (NOT_FOUND where it is empty), plus one answer of two masks
    on a frame asked twice and one request that failed."""
    root = tmp_path_factory.mktemp("labels") / "results"
    truth = BagTopicTruth(str(SAMPLE_BAG), make_sample_bag.GROUND_TRUTH_TOPIC)
    with bag_io.InputBag(SAMPLE_BAG) as bag:
        frames = [image_message_to_rgb(m) for _, m in bag.messages(make_sample_bag.IMAGE_TOPIC)]
    folder = ResultsFolder(root)
    asked = [(i, instruction) for i, (_, instruction, _) in enumerate(make_sample_bag.FRAMES) if instruction]
    asked += [(TWO_MASKS_FRAME, "the ring and the blob"), (FAILED_FRAME, "a request that timed out")]
    for request, (index, instruction) in enumerate(asked):
        stamp = make_sample_bag.START_NS + index * make_sample_bag.PERIOD_NS
        image = frames[index]
        record = {"request": request, "instruction": instruction, "frame_index": index, "frame_name": str(stamp),
                  "frame_occurrence": 0, "frame_id": make_sample_bag.FRAME_ID, "image_size": list(image.shape[:2]),
                  "frame": folder.save_frame(index, stamp, image)}
        if instruction == "a request that timed out":
            folder.append({**record, "status": "NO_RESULT"})
            continue
        mask = truth.get(str(stamp), image.shape[:2])[0]
        masks = [ring_with_island(mask.shape), blob(mask.shape)] if "ring" in instruction else [mask] * int(mask.any())
        names, overlay = folder.save_answer(request, image, masks)
        folder.append({**record, "status": "OK" if masks else "NOT_FOUND", "masks": names, "overlay": overlay,
                       "scores": [round(0.5 + k / 10, 4) for k in range(len(masks))]})
    folder.close()
    return root


@pytest.fixture(scope="module")
def exported(results):
    out = results.parent / "export"
    assert main(["export-labels", str(results), "--out", str(out)]) == 0
    return out


def node_masks(results, record):
    return [visual.read_mask(results / name) for name in record.get("masks", [])]


def answered(results):
    return [r for r in read_records(results) if r["status"] != "NO_RESULT"]


def test_coco_masks_decode_to_the_node_masks_pixel_for_pixel(results, exported):
    coco = COCO(str(exported / "coco.json"))  # pycocotools' own reader, as evaluation and converters use it
    by_request = {}
    for annotation in coco.loadAnns(coco.getAnnIds()):
        by_request.setdefault(annotation["attributes"]["request"], []).append(annotation)
    records = answered(results)
    assert sorted(by_request) == [r["request"] for r in records]  # the failed request has no pre-label
    for record in records:
        annotations = by_request[record["request"]]
        image = coco.loadImgs(annotations[0]["image_id"])[0]
        assert (exported / "images" / image["file_name"]).read_bytes() == (results / record["frame"]).read_bytes()
        assert all(a["attributes"]["instruction"] == record["instruction"] for a in annotations)
        masks = node_masks(results, record)
        if not masks:  # NOT_FOUND is kept, as an "absent" annotation a labeller confirms or replaces
            assert [coco.cats[a["category_id"]]["name"] for a in annotations] == [label_formats.ABSENT_CATEGORY]
            continue
        assert [a["attributes"]["score"] for a in annotations] == record["scores"]
        for annotation, mask in zip(annotations, masks, strict=True):
            assert annotation["iscrowd"] == 1 and isinstance(annotation["segmentation"]["counts"], str)
            assert np.array_equal(coco.annToMask(annotation) > 0, mask)
            assert annotation["area"] == mask.sum()


def test_reasonseg_polygons_rasterise_back_within_the_stated_iou(results, exported):
    folder = exported / "reasonseg"
    truth = ReasonSegTruth(str(folder))
    records = answered(results)
    assert len(list(folder.glob("*.json"))) == len(records)
    for record in records:
        shared = record["frame_index"] == TWO_MASKS_FRAME
        stem = Path(record["frame"]).stem + (f"_r{record['request']:04d}" if shared else "")
        annotation = json.loads((folder / f"{stem}.json").read_text())
        assert annotation["text"] == [record["instruction"]] and annotation["is_sentence"] is True
        assert (folder / annotation["imagePath"]).read_bytes() == (results / record["frame"]).read_bytes()
        assert (folder / annotation["imagePath"]).stem == stem  # LISA's loader: <stem>.jpg beside <stem>.json
        masks = node_masks(results, record)
        union = np.logical_or.reduce(masks) if masks else np.zeros(record["image_size"], bool)
        back, ignore = truth.get(stem, tuple(record["image_size"]))
        assert metrics.iou(*metrics.intersection_union(back, union)) >= label_formats.REASONSEG_MIN_IOU, stem
        if "ring" in record["instruction"]:  # the hole is an "ignore" polygon: background in training, as it is
            hole = ring_with_island(union.shape) ^ cv2.circle(np.zeros(union.shape, np.uint8), (100, 380), 60, 1,
                                                              -1).astype(bool)
            hole &= ~union
            assert hole.any() and ignore[hole].all() and not back[hole].any()


@pytest.mark.parametrize("mask", [ring_with_island((480, 640)), blob((480, 640), sigma=4),
                                  np.random.default_rng(1).random((120, 160)) > 0.7],
                         ids=["ring with an island", "fine blobs", "salt noise (the worst case)"])
def test_reasonseg_iou_bound_on_hard_masks(tmp_path, mask):
    annotation = label_formats.reasonseg_annotation(["x"], [mask], "m.jpg", mask.shape, {})
    (tmp_path / "m.json").write_text(json.dumps(annotation))
    back, _ = ReasonSegTruth(str(tmp_path)).get("m", mask.shape)
    assert metrics.iou(*metrics.intersection_union(back, mask)) >= label_formats.REASONSEG_MIN_IOU


@pytest.mark.parametrize("shape", [(480, 640), (7, 3)])
@pytest.mark.parametrize("density", [0.0, 0.02, 0.5, 1.0])
def test_compressed_runs_are_pycocotools_runs(shape, density):
    mask = np.random.default_rng(0).random(shape) < density
    runs = label_formats.compressed_runs(label_formats.encode_rle(mask)["counts"])
    changes = np.flatnonzero(np.diff(np.concatenate([[False], mask.flatten(order="F"), [not mask.flat[-1]]])))
    assert runs == np.diff(np.concatenate([[0], changes])).tolist()  # column-major runs, zeros first


def test_export_refuses_a_folder_in_use(results, exported, capsys):
    assert main(["export-labels", str(results), "--out", str(exported)]) == 2
    assert "not empty" in capsys.readouterr().err


def import_labels(out, *args):
    return main(["import-labels", "--out", str(out), *map(str, args)])


def samples(dataset):
    return load_split(dataset, "train") + load_split(dataset, "val")


def by_request(dataset):
    """(frame stamp, instruction) -> (sample, image, masks): the sample bag asks one instruction on several frames."""
    found = {}
    for sample in samples(dataset):
        found[stamp_of_frame_file(sample.image.name), sample.instruction] = (sample, *sample.load())
    return found


def key(record):
    return int(record["frame_name"]), record["instruction"]


def test_import_of_the_exported_coco_and_reasonseg_gives_the_node_masks(results, exported, tmp_path):
    assert import_labels(tmp_path / "coco", "--coco", exported / "coco.json", "--val-fraction", 0) == 0
    assert import_labels(tmp_path / "rs", "--reasonseg", exported / "reasonseg", "--val-fraction", 0) == 0
    coco, reasonseg = by_request(tmp_path / "coco"), by_request(tmp_path / "rs")
    records = answered(results)
    assert len(samples(tmp_path / "coco")) == len(samples(tmp_path / "rs")) == len(records)
    for record in records:
        masks = node_masks(results, record)
        sample, image, coco_masks = coco[key(record)]
        assert np.array_equal(image, visual.read_rgb(results / record["frame"]))
        assert np.array_equal(coco_masks, np.array(masks, bool).reshape(coco_masks.shape))  # one per instance
        assert sample.negative == (not masks)
        assert sample.target_answer() == (NEGATIVE_ANSWER if not masks else
                                          "Sure, " + " and ".join(["[SEG]"] * len(masks)) + ".")
        sample, _, reasonseg_masks = reasonseg[key(record)]
        assert sample.negative == (not masks) and len(reasonseg_masks) == min(len(masks), 1)  # one target per image
        if masks:
            union = np.logical_or.reduce(masks)
            iou = metrics.iou(*metrics.intersection_union(reasonseg_masks[0], union))
            assert iou >= label_formats.REASONSEG_MIN_IOU


def test_import_of_a_replay_with_its_ground_truth_bag(results, tmp_path):
    assert import_labels(tmp_path / "ds", "--results", results, "--gt-bag", SAMPLE_BAG, "--val-fraction", 0) == 0
    truth = BagTopicTruth(str(SAMPLE_BAG), make_sample_bag.GROUND_TRUTH_TOPIC)
    found = by_request(tmp_path / "ds")
    records = read_records(results)
    assert len(found) == len(records)  # a failed request's frame is labelled all the same
    for record in records:
        sample, _, masks = found[key(record)]
        expected = truth.get(record["frame_name"], tuple(record["image_size"]))[0]
        assert sample.negative == (not expected.any())  # the sample bag's "keep me dry": empty ground truth
        assert np.array_equal(masks, expected[None] if expected.any() else np.zeros((0, *expected.shape), bool))
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert meta["sources"] == [{"kind": "results", "path": str(results), "samples": len(records), "negatives": 1,
                                "skipped": 0}]


def cvat_style_export(root, image_file, height, width):
    """COCO as CVAT exports it after correction: annotations/instances_default.json, images/ beside annotations/,
    a polygon, an uncompressed RLE, and an "absent" box; attributes as text."""
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    (root / "images" / image_file.name).write_bytes(image_file.read_bytes())
    square = np.zeros((height, width), bool)
    square[100:140, 200:260] = True
    counts, run_value, run = [], False, 0
    for pixel in square.flatten(order="F"):  # COCO's uncompressed RLE: column-major runs, starting with zeros
        if pixel != run_value:
            counts.append(run)
            run_value, run = pixel, 0
        run += 1
    counts.append(run)
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [10, 10, 20, 20], "area": 400,
         "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]], "attributes": {"instruction": "the polygon",
                                                                              "occluded": False}},
        {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [200, 100, 60, 40], "area": 2400,
         "segmentation": {"size": [height, width], "counts": counts}, "attributes": {"instruction": "the square"}},
        {"id": 3, "image_id": 1, "category_id": 2, "iscrowd": 0, "bbox": [0, 0, width, height], "area": 0,
         "segmentation": [], "attributes": {"instruction": "a unicorn"}},
    ]
    coco = {"images": [{"id": 1, "file_name": image_file.name, "width": width, "height": height}],
            "categories": [{"id": 1, "name": "target"}, {"id": 2, "name": label_formats.ABSENT_CATEGORY}],
            "annotations": annotations}
    path = root / "annotations" / "instances_default.json"
    path.write_text(json.dumps(coco))
    return path, square


def test_import_of_cvat_style_polygons_rle_and_absent(results, tmp_path):
    record = answered(results)[0]
    height, width = record["image_size"]
    path, square = cvat_style_export(tmp_path / "cvat", results / record["frame"], height, width)
    assert import_labels(tmp_path / "ds", "--coco", path, "--val-fraction", 0) == 0
    found = {instruction: value for (_, instruction), value in by_request(tmp_path / "ds").items()}
    polygon = found["the polygon"][2][0]
    assert polygon[10:30, 10:30].all() and polygon.sum() == 20 * 20  # pycocotools: the polygon's area, in pixels
    assert np.array_equal(found["the square"][2][0], square)
    assert found["a unicorn"][0].negative and found["a unicorn"][2].shape[0] == 0


def stamps(split_samples):
    return {stamp_of_frame_file(s.image.name) for s in split_samples}


def test_split_never_puts_a_group_or_a_frame_on_both_sides(results, exported, tmp_path):
    """The same frames from three sources (COCO, ReasonSeg, the replay) in 1-s windows: their groups share stamps and
    are merged, so no frame is on both sides; the split is the seed's, every time."""
    sources = ["--coco", exported / "coco.json", "--reasonseg", exported / "reasonseg", "--results", results,
               "--gt-bag", SAMPLE_BAG, "--split-window-s", 1, "--val-fraction", 0.3, "--seed", 1]
    assert import_labels(tmp_path / "a", *sources) == 0
    train, val = load_split(tmp_path / "a", "train"), load_split(tmp_path / "a", "val")
    assert train and val
    assert not {s.group for s in train} & {s.group for s in val}
    assert not stamps(train) & stamps(val)
    assert all(s.group.count(" + ") == 2 for s in train + val)  # each window's three sources merged into one group
    assert import_labels(tmp_path / "b", *sources) == 0
    for split in ("train", "val"):
        assert (tmp_path / "a" / f"{split}.jsonl").read_text() == (tmp_path / "b" / f"{split}.jsonl").read_text()


@pytest.mark.parametrize("seed", range(20))
def test_validation_groups_are_whole_seeded_and_near_the_fraction(seed):
    rng = np.random.default_rng(seed)
    sizes = {f"bag{g}": int(rng.integers(1, 30)) for g in range(int(rng.integers(2, 12)))}
    fraction = float(rng.uniform(0.05, 0.6))
    val = import_labels_module.validation_groups(sizes, fraction, seed)
    assert val == import_labels_module.validation_groups(dict(reversed(sizes.items())), fraction, seed)
    assert val and val < set(sizes)  # at least one group on each side
    held_out = sum(sizes[g] for g in val) / sum(sizes.values())
    assert abs(held_out - fraction) <= max(sizes.values()) / sum(sizes.values())  # within one group of the target


def test_groups_sharing_a_frame_are_merged():
    origins = [("a", 1), ("a", 2), ("b", 2), ("b", 3), ("c", 9), ("d", None)]
    assert import_labels_module.group_names(origins, None) == ["a + b"] * 4 + ["c", "d"]
    windows = import_labels_module.group_names([(src, stamp * 10**9) for src, stamp in origins[:5]], 2.0)
    assert windows == ["a#0"] + ["a#1 + b#1"] * 3 + ["c#4"]


def test_one_group_cannot_be_split(exported, tmp_path, capsys):
    assert import_labels(tmp_path / "ds", "--coco", exported / "coco.json") == 2
    error = capsys.readouterr().err
    assert "only one group" in error and "--split-window-s" in error and "--val-fraction 0" in error
    assert not (tmp_path / "ds").exists()
    assert import_labels(tmp_path / "ds", "--coco", exported / "coco.json", "--val-fraction", 0) == 0
    assert not load_split(tmp_path / "ds", "val")


def break_first_target(coco, change):
    annotation = next(a for a in coco["annotations"] if a["category_id"] == 1)
    change(annotation, coco)
    return annotation


BAD_COCO = {
    "empty mask": (lambda a, c: a.update(segmentation=label_formats.encode_rle(
        np.zeros(a["segmentation"]["size"], bool))), "is empty"),
    "mask of another size": (lambda a, c: a.update(segmentation=label_formats.encode_rle(np.ones((4, 4), bool))),
                             "but its image is 640x480"),
    "labelled at another size": (lambda a, c: (c["images"][0].update(width=320, height=240), a.update(
        image_id=c["images"][0]["id"], segmentation=label_formats.encode_rle(np.ones((240, 320), bool)))),
        "is 320x240 but its image"),
    "no instruction": (lambda a, c: a.update(attributes={"score": 0.5}), "has no 'instruction' attribute"),
    "absent and drawn": (lambda a, c: c["annotations"].append({**a, "id": 999, "category_id": 2, "segmentation": []}),
                         "is marked 'absent' and has its target drawn"),
    "bbox without a mask": (lambda a, c: a.update(segmentation=[]), "is empty"),
    "runs past the image": (lambda a, c: a["segmentation"].update(  # pycocotools would write past its buffer
        counts=label_formats.encode_rle(np.ones((960, 640), bool))["counts"]), "do not cover its 640x480 pixels"),
}


@pytest.mark.parametrize("case", BAD_COCO)
def test_bad_coco_labels_are_refused_by_name(exported, tmp_path, capsys, case):
    change, message = BAD_COCO[case]
    coco = json.loads((exported / "coco.json").read_text())
    annotation = break_first_target(coco, change)
    image = next(i for i in coco["images"] if i["id"] == annotation["image_id"])
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    (tmp_path / "images").symlink_to(exported / "images")
    assert import_labels(tmp_path / "ds", "--coco", tmp_path / "coco.json", "--val-fraction", 0) == 2
    error = capsys.readouterr().err
    assert message in error and image["file_name"] in error, error
    assert not (tmp_path / "ds").exists()  # nothing half-written


def test_a_request_without_ground_truth_is_refused_or_skipped(results, tmp_path, capsys):
    truth = tmp_path / "gt"
    truth.mkdir()
    labelled = answered(results)[0]
    visual.write_png(truth / f"{labelled['frame_name']}.png", node_masks(results, labelled)[0])
    assert import_labels(tmp_path / "ds", "--results", results, "--gt-masks", truth, "--val-fraction", 0) == 2
    error = capsys.readouterr().err
    assert "has no ground truth for this frame" in error and "request 1 " in error and "--skip-unlabelled" in error
    assert import_labels(tmp_path / "ds", "--results", results, "--gt-masks", truth, "--val-fraction", 0,
                         "--skip-unlabelled") == 0
    assert [s.instruction for s in samples(tmp_path / "ds")] == [labelled["instruction"]]
    assert "left out" in capsys.readouterr().out


def test_reasonseg_without_its_image_is_refused(exported, tmp_path, capsys):
    folder = tmp_path / "rs"
    folder.mkdir()
    first = sorted((exported / "reasonseg").glob("*.json"))[0]
    (folder / first.name).write_bytes(first.read_bytes())
    assert import_labels(tmp_path / "ds", "--reasonseg", folder, "--val-fraction", 0) == 2
    assert f"{folder / first.name}: no image beside it" in capsys.readouterr().err


def test_ground_truth_must_pair_with_results(results, tmp_path, capsys):
    assert import_labels(tmp_path / "ds", "--results", results, "--results", results, "--gt-bag", SAMPLE_BAG) == 2
    assert "one kind of ground truth for each --results" in capsys.readouterr().err


@pytest.mark.ros
def test_replay_of_the_sample_bag_exported_and_imported(tmp_path):
    """The documented path on the plumbing node: replay -> export-labels -> import-labels with the bag's truth."""
    out = tmp_path / "replay"
    command = [sys.executable, "-P", "-m", "lisa_ros.tools.cli", "replay", str(SAMPLE_BAG), "--output", str(out),
               "--no-progress", "--start-node", "--node-params", str(REPO / "config" / "plumbing_test.yaml"),
               "--node-name", "labels_node", "--publish-image", "/labels_node_in/image",
               "--publish-instruction", "/labels_node_in/instruction", "--result-timeout", "30", "--fail-on-error"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert main(["export-labels", str(out), "--out", str(tmp_path / "export")]) == 0
    coco = COCO(str(tmp_path / "export" / "coco.json"))
    for annotation in coco.loadAnns(coco.getAnnIds(catIds=[1])):
        record = next(r for r in read_records(out) if r["request"] == annotation["attributes"]["request"])
        assert np.array_equal(coco.annToMask(annotation) > 0, node_masks(out, record)[0])  # the plumbing band
    assert import_labels(tmp_path / "ds", "--coco", tmp_path / "export" / "coco.json", "--results", out,
                         "--gt-bag", SAMPLE_BAG, "--split-window-s", 2) == 0
    train, val = load_split(tmp_path / "ds", "train"), load_split(tmp_path / "ds", "val")
    assert train and val and not stamps(train) & stamps(val)
