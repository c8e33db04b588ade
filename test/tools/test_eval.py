"""lisa-ros eval on a hand-made results folder: IoUs computed by hand, three ground-truth sources."""
import csv
import json

import numpy as np
import pytest

from lisa_ros.tools import bag_io, visual
from lisa_ros.tools.cli import main
from lisa_ros.tools.results_folder import ResultsFolder

SIZE = (10, 20)  # height, width


def box(x0, y0, x1, y1):
    mask = np.zeros(SIZE, bool)
    mask[y0:y1, x0:x1] = True
    return mask


NOTHING = np.zeros(SIZE, bool)
# request -> (status, predicted masks, ground truth or None when the frame has none, hand-computed I, U)
CASES = {
    0: ("OK", [box(0, 0, 4, 4)], box(2, 2, 6, 4), 4, 20),  # 16 px vs 8 px sharing 4
    1: ("NOT_FOUND", [], NOTHING, 0, 0),  # nothing predicted, nothing there: IoU 1
    2: ("NO_RESULT", [], box(0, 0, 3, 3), 0, 9),  # a failure scores as an empty prediction
    3: ("OK", [box(0, 0, 2, 2), box(2, 0, 4, 2)], box(0, 0, 4, 2), 8, 8),  # masks are united
    4: ("OK", [box(0, 0, 5, 5)], None, None, None),  # no ground truth: listed, not scored
}
GIOU = (4 / 20 + 1 + 0 + 1) / 4
CIOU = (4 + 0 + 0 + 8) / (20 + 0 + 9 + 8)
STAMPS = {request: 1_000_000_000 + request for request in CASES}


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    folder = ResultsFolder(root)
    image = np.full((*SIZE, 3), 90, np.uint8)
    for request, (status, masks, _, _, _) in CASES.items():
        key = str(STAMPS[request])
        record = {"request": request, "instruction": f"find thing {request}", "frame_index": request, "frame_name": key,
                  "frame_id": "cam", "image_size": list(SIZE),
                  "frame": folder.save_frame(request, STAMPS[request], image), "status": status}
        if status != "NO_RESULT":
            names, overlay = folder.save_answer(request, image, masks)
            record.update(masks=names, overlay=overlay, total_ms=10.0 * (request + 1),
                          round_trip_ms=12.0 * (request + 1), model_id="tiny-random-lisa", explanation="It is [SEG].")
        folder.append(record)
    folder.close()
    return root


def truth_cases():
    return {request: case[2] for request, case in CASES.items() if case[2] is not None}


def check_report(report_dir):
    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["gIoU"] == pytest.approx(GIOU)
    assert summary["cIoU"] == pytest.approx(CIOU)
    assert (summary["samples"], summary["scored"], summary["without_ground_truth"]) == (5, 4, 1)
    assert "meaningless" in summary["model_warning"]
    rows = {int(row["request"]): row for row in csv.DictReader((report_dir / "per_sample.csv").open())}
    for request, (_, _, _, intersection, union) in CASES.items():
        if union is None:
            assert rows[request]["iou"] == ""
        else:
            assert (int(rows[request]["intersection"]), int(rows[request]["union"])) == (intersection, union)
    for plot in ("iou_histogram.png", "latency_histogram.png", "worst_cases.png"):
        assert visual.read_rgb(report_dir / plot).shape[0] > 100
    text = (report_dir / "report.md").read_text()
    assert "meaningless" in text and f"{GIOU:.3f}" in text and "worst_cases.png" in text


def test_png_folder_ground_truth(results, tmp_path, capsys):
    gt = tmp_path / "gt"
    gt.mkdir()
    for request, mask in truth_cases().items():
        visual.write_png(gt / f"{STAMPS[request]}.png", mask)
    assert main(["eval", str(results), "--gt-masks", str(gt)]) == 0
    check_report(results / "report")
    assert f"{CIOU:.3f}" in capsys.readouterr().out


def test_reasonseg_ground_truth(results, tmp_path):
    gt = tmp_path / "reasonseg"
    gt.mkdir()
    for request, mask in truth_cases().items():
        ys, xs = np.nonzero(mask)
        shapes = [] if not mask.any() else [{"label": "target", "shape_type": "polygon", "points": [
            [xs.min(), ys.min()], [xs.max(), ys.min()], [xs.max(), ys.max()], [xs.min(), ys.max()]]}]
        annotation = {"text": ["x"], "is_sentence": True, "shapes": shapes}
        (gt / f"{STAMPS[request]}.json").write_text(json.dumps(annotation, default=int))
    assert main(["eval", str(results), "--gt-reasonseg", str(gt), "--report", str(tmp_path / "report")]) == 0
    check_report(tmp_path / "report")


@pytest.mark.parametrize("storage, bare_suffix", [("sqlite3", None), ("sqlite3", ".db3"), ("mcap", ".mcap")])
def test_bag_topic_ground_truth(results, tmp_path, storage, bare_suffix):
    """From the bag's folder, or from its storage file alone (bare_suffix)."""
    bag = tmp_path / "gt_bag"
    with bag_io.OutputBag(bag, storage) as out:
        for request, mask in truth_cases().items():
            header = bag_io.header(STAMPS[request], "cam")
            msg = bag_io.raw_image_msg(mask.astype(np.uint8) * 255, header)
            out.write("/ground_truth/mask", STAMPS[request], msg, bag_io.IMAGE)
    if bare_suffix:
        bag = next(bag.glob(f"*{bare_suffix}")).rename(tmp_path / f"truth{bare_suffix}")
    assert main(["eval", str(results), "--gt-bag", str(bag), "--report", str(tmp_path / "report")]) == 0
    check_report(tmp_path / "report")


def test_reasonseg_ignore_region_is_not_scored(results, tmp_path):
    gt = tmp_path / "reasonseg"
    gt.mkdir()
    # request 0 predicts box(0,0,4,4); the truth is box(0,0,2,2) and columns 2-3 are "ignore": I 4, U 8
    shapes = [{"label": "target", "points": [[0, 0], [1, 0], [1, 1], [0, 1]]},
              {"label": "ignore", "points": [[2, 0], [3, 0], [3, 9], [2, 9]]}]
    (gt / f"{STAMPS[0]}.json").write_text(json.dumps({"shapes": shapes}))
    assert main(["eval", str(results), "--gt-reasonseg", str(gt), "--report", str(tmp_path / "report")]) == 0
    row = next(csv.DictReader((tmp_path / "report" / "per_sample.csv").open()))
    assert (row["request"], row["intersection"], row["union"]) == ("0", "4", "8")


def test_min_giou_fails_the_run(results, tmp_path):
    gt = tmp_path / "gt"
    gt.mkdir()
    for request, mask in truth_cases().items():
        visual.write_png(gt / f"{STAMPS[request]}.png", mask)
    assert main(["eval", str(results), "--gt-masks", str(gt), "--min-giou", "0.9"]) == 1


def test_missing_results_folder_is_named(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nowhere"), "--gt-masks", str(tmp_path)]) == 2
    assert "results.jsonl not found" in capsys.readouterr().err


def test_ground_truth_of_another_size_is_named(results, tmp_path, capsys):
    with bag_io.OutputBag(tmp_path / "wrong_size") as out:
        header = bag_io.header(STAMPS[0], "cam")
        msg = bag_io.raw_image_msg(np.zeros((5, 5), np.uint8), header)
        out.write("/ground_truth/mask", STAMPS[0], msg, bag_io.IMAGE)
    assert main(["eval", str(results), "--gt-bag", str(tmp_path / "wrong_size")]) == 2
    err = capsys.readouterr().err
    assert "request 0" in err and "20x10 but the ground truth is 5x5" in err


def test_bag_truth_tells_frames_of_one_stamp_apart_by_occurrence(tmp_path):
    from lisa_ros.tools.ground_truth import BagTopicTruth

    with bag_io.OutputBag(tmp_path / "gt") as out:
        for index, (stamp, mask) in enumerate([(5, box(0, 0, 1, 1)), (5, box(0, 0, 2, 2)), (6, box(0, 0, 3, 3))]):
            header = bag_io.header(stamp, "cam")
            mask_msg = bag_io.raw_image_msg(mask.astype(np.uint8) * 255, header)
            out.write("/ground_truth/mask", index, mask_msg, bag_io.IMAGE)
    truth = BagTopicTruth(str(tmp_path / "gt"), "/ground_truth/mask")
    assert [int(truth.get("5", SIZE, k)[0].sum()) for k in (0, 1)] == [1, 4]
    assert truth.get("5", SIZE, 2) is None  # a third frame of that stamp: its mask is not known
    assert [int(truth.get("6", SIZE, k)[0].sum()) for k in (0, 1)] == [9, 9]  # one mask: every frame of that stamp
    assert "3 masks" in truth.description


def test_without_ground_truth_reports_statuses_latency_and_mask_statistics(results, capsys):
    assert main(["eval", str(results)]) == 0
    summary = json.loads((results / "report" / "summary.json").read_text())
    assert summary["statuses"] == {"OK": 3, "NOT_FOUND": 1, "NO_RESULT": 1}
    assert (summary["samples"], summary["scored"], summary["gIoU"], summary["cIoU"]) == (5, 0, None, None)
    assert summary["latency_ms"]["median"] == 30.0  # 10, 20, 40, 50 ms (the failure has none)
    # answers (OK / NOT_FOUND): requests 0, 1, 3, 4 with 1, 0, 2, 1 masks covering 16, -, 8, 25 of 200 pixels
    assert summary["masks"] == {"answers": 4, "answers_with_masks": 3, "per_answer_mean": 1.0, "per_answer_max": 2,
                                "area_fraction_median": 0.08, "area_fraction_p95": pytest.approx(0.1205)}
    rows = {int(row["request"]): row for row in csv.DictReader((results / "report" / "per_sample.csv").open())}
    assert [(rows[r]["mask_count"], rows[r]["area_fraction"], rows[r]["iou"]) for r in (0, 3)] == [
        ("1", "0.0800", ""), ("2", "0.0400", "")]
    text = (results / "report" / "report.md").read_text()
    assert "No sample has ground truth" in text and "iou_histogram.png" not in text
    assert (results / "report" / "latency_histogram.png").is_file()
    assert not (results / "report" / "worst_cases.png").exists()
    out = capsys.readouterr().out
    assert "masks per answer" in out and "1.000 / 2 (3 of 4 OK/NOT_FOUND)" in out


def test_min_giou_needs_ground_truth(results, capsys):
    assert main(["eval", str(results), "--min-giou", "0.5"]) == 2
    assert "--min-giou needs ground truth" in capsys.readouterr().err


# 3D error: the replay recorded ~/targets_3d for the answers with masks (requests 0, 3, 4), in "cam".
TARGETS_3D = {
    0: {"best_index": 0, "status_message": "", "centroid": [[0.1, 0.0, 1.0]]},
    3: {"best_index": 1, "status_message": "", "centroid": [[0.0, 0.0, 0.5], [0.0, 0.0, 2.0]]},
    4: {"best_index": -1, "status_message": "NO_DEPTH: no depth frame within 50.0 ms of the colour frame",
        "centroid": [None]},
}
POSITIONS = {0: (0.1, 0.0, 1.02), 1: (0.0, 0.0, 1.0), 2: (0.0, 0.0, 1.0), 3: (0.0, 0.3, 2.4), 4: (0.0, 0.0, 1.0)}
ERRORS = {0: 0.02, 3: 0.5}  # |centroid - position| by hand; requests 1, 2, 4 have no point


@pytest.fixture
def depth_results(results):
    """The results folder as a replay with depth on writes it: targets_3d on every answer with masks."""
    path = results / "results.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        targets = TARGETS_3D.get(record["request"])
        if targets is not None:
            record["targets_3d"] = {
                "frame_id": "cam", "depth_stamp_ns": STAMPS[record["request"]], "best_index": targets["best_index"],
                "status_message": targets["status_message"],
                "targets": [{"status": "NO_DEPTH"} if c is None else {"status": "OK", "centroid": c}
                            for c in targets["centroid"]]}
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return results


def position_bag(path, frame_ids=None):
    """A real ground-truth bag: the masks of truth_cases() and a PointStamped per request on /ground_truth/position."""
    with bag_io.OutputBag(path, "mcap") as out:
        for request, mask in truth_cases().items():
            msg = bag_io.raw_image_msg(mask.astype(np.uint8) * 255, bag_io.header(STAMPS[request], "cam"))
            out.write("/ground_truth/mask", STAMPS[request], msg, bag_io.IMAGE)
        types = bag_io.typestore().types
        for request, (x, y, z) in POSITIONS.items():
            header = bag_io.header(STAMPS[request], (frame_ids or {}).get(request, "cam"))
            msg = types["geometry_msgs/msg/PointStamped"](header=header, point=types["geometry_msgs/msg/Point"](
                x=x, y=y, z=z))
            out.write("/ground_truth/position", STAMPS[request], msg, "geometry_msgs/msg/PointStamped")
    return path


def test_3d_error_against_bag_positions(depth_results, tmp_path, capsys):
    bag = position_bag(tmp_path / "gt")
    assert main(["eval", str(depth_results), "--gt-bag", str(bag)]) == 0
    summary = json.loads((depth_results / "report" / "summary.json").read_text())
    position = summary["position"]
    assert position["ground_truth"] == f"{bag} topic /ground_truth/position (5 positions)"
    assert (position["samples"], position["measured"], position["within"]) == (5, 2, 1)  # 0.02 m within 5 cm
    assert position["median_m"] == pytest.approx(0.26) and position["mean_m"] == pytest.approx(0.26)
    assert position["max_m"] == pytest.approx(0.5) and position["fraction_within"] == pytest.approx(0.2)
    assert position["without_point"] == {"no mask (NOT_FOUND)": 1, "no answer (NO_RESULT)": 1, "NO_DEPTH": 1}
    assert summary["gIoU"] == pytest.approx(GIOU)  # the masks are scored as before
    rows = {int(row["request"]): row for row in csv.DictReader((depth_results / "report" / "per_sample.csv").open())}
    for request, error in ERRORS.items():
        assert float(rows[request]["position_error_m"]) == pytest.approx(error, abs=1e-4)
        assert rows[request]["truth_position_m"] == " ".join(f"{v:.4f}" for v in POSITIONS[request])
    assert rows[4]["position_error_m"] == "" and rows[4]["position_status"].startswith("NO_DEPTH: no depth frame")
    assert rows[1]["position_status"] == "no mask (NOT_FOUND)"
    text = (depth_results / "report" / "report.md").read_text()
    assert "| 0.260 m / 0.260 m / 0.500 m (2 of 5 measured) |" in text and "| 1 of 5 (0.200) |" in text
    assert "| 0.020 m |" in text and "no error: NO_DEPTH" in text
    out = capsys.readouterr().out
    assert "3D: within 5 cm of the ground truth" in out and "NO_DEPTH 1" in out
    assert main(["eval", str(depth_results), "--gt-bag", str(bag), "--position-tolerance", "0.6"]) == 0
    assert json.loads((depth_results / "report" / "summary.json").read_text())["position"]["within"] == 2


def test_3d_error_from_reasonseg_positions_refuses_points_in_another_frame(depth_results, tmp_path):
    gt = tmp_path / "reasonseg"
    gt.mkdir()
    for request, xyz in POSITIONS.items():
        frame_id = "base_link" if request == 3 else "cam"
        annotation = {"shapes": [], "position_m": list(xyz), "position_frame_id": frame_id}
        (gt / f"{STAMPS[request]}.json").write_text(json.dumps(annotation))
    assert main(["eval", str(depth_results), "--gt-reasonseg", str(gt)]) == 0
    position = json.loads((depth_results / "report" / "summary.json").read_text())["position"]
    assert (position["measured"], position["median_m"]) == (1, pytest.approx(0.02))
    assert position["without_point"] == {"points in 'cam', ground truth in 'base_link' (eval does not transform "
                                         "between frames)": 1, "no mask (NOT_FOUND)": 1, "no answer (NO_RESULT)": 1,
                                         "NO_DEPTH": 1}


def test_no_3d_error_for_a_replay_without_depth(results, tmp_path):
    """No record has targets_3d (the node had depth off): no 3D section, even with positions in the truth."""
    assert main(["eval", str(results), "--gt-bag", str(position_bag(tmp_path / "gt"))]) == 0
    assert json.loads((results / "report" / "summary.json").read_text())["position"] is None
    rows = list(csv.DictReader((results / "report" / "per_sample.csv").open()))
    assert {row["position_error_m"] for row in rows} == {""}


def test_no_3d_error_without_positions_and_a_named_position_topic_must_exist(depth_results, tmp_path, capsys):
    with bag_io.OutputBag(tmp_path / "masks_only", "mcap") as out:
        msg = bag_io.raw_image_msg(np.zeros(SIZE, np.uint8), bag_io.header(STAMPS[0], "cam"))
        out.write("/ground_truth/mask", STAMPS[0], msg, bag_io.IMAGE)
    assert main(["eval", str(depth_results), "--gt-bag", str(tmp_path / "masks_only")]) == 0
    assert json.loads((depth_results / "report" / "summary.json").read_text())["position"] is None
    rows = {int(row["request"]): row for row in csv.DictReader((depth_results / "report" / "per_sample.csv").open())}
    assert rows[0]["position_m"] == "0.1000 0.0000 1.0000" and rows[0]["position_error_m"] == ""  # the point, no truth
    assert "3D" not in (depth_results / "report" / "report.md").read_text().split("## Samples")[0]
    assert main(["eval", str(depth_results), "--gt-bag", str(tmp_path / "masks_only"), "--gt-position-topic",
                 "/ground_truth/position"]) == 2
    assert "no topic '/ground_truth/position'" in capsys.readouterr().err
    assert main(["eval", str(depth_results), "--gt-masks", str(tmp_path), "--gt-position-topic", "/p"]) == 2
    assert "--gt-position-topic reads the --gt-bag" in capsys.readouterr().err
