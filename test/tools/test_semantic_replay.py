"""lisa-ros replay --semantic through a real lisa_node (plumbing engine's bands) over DDS, then eval on it."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from bagfactory import write_bag
from lisa_ros.tools import bag_io
from lisa_ros.tools.semantic_replay import label_array, record_of

REPO = Path(__file__).resolve().parents[2]
PLUMBING = REPO / "config" / "plumbing_test.yaml"
CATEGORIES = ["floor", "person", "nothing here", "cup"]  # plumbing: "nothing" is filtered out


def band_labels(height=120, width=160):
    """The plumbing stand-in: kept category k (of 3) on the k-th horizontal third; ids are list positions + 1."""
    label = np.zeros((height, width), np.uint8)
    for band, label_id in enumerate([1, 2, 4]):
        label[band * height // 3:(band + 1) * height // 3] = label_id
    return label


@pytest.mark.ros
def test_semantic_replay_records_band_labels_and_eval_scores_them(tmp_path):
    stamps = write_bag(tmp_path / "bag", frames=3, compressed=True, image_topic="/camera/image/compressed")
    (tmp_path / "cats.txt").write_text("# test categories\n" + "\n".join(CATEGORIES) + "\n")
    out, name = tmp_path / "out", "sem_replay"
    command = [sys.executable, "-P", "-m", "lisa_ros.tools.cli", "replay", str(tmp_path / "bag"), "-o", str(out),
               "--semantic-file", str(tmp_path / "cats.txt"), "--start-node", "--node-params", str(PLUMBING),
               "--node-name", name, "--publish-image", f"/{name}_in/image", "--result-timeout", "30",
               "--fail-on-error"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["frame_name"] for r in records] == [str(s) for s in stamps]
    for record in records:
        assert record["mode"] == "semantic" and record["status"] == "OK"
        assert record["label_names"] == CATEGORIES and record["label_ids"] == [1, 2, 3, 4]
        assert record["filtered_out"] == ["nothing here"] and record["presence"] == [None] * 4
        assert record["pixel_fractions"] == pytest.approx([1 / 3, 1 / 3, 0.0, 1 / 3])
        assert record["answered_stamp_ns"] == int(record["frame_name"]) and "total" in record["timings_ms"]
        assert record["descriptions"] == [""] * 4 and record["description_sources"] == ["none"] * 4
        label = cv2.imread(str(out / record["label"]), cv2.IMREAD_UNCHANGED)
        assert label.dtype == np.uint8 and np.array_equal(label, band_labels())
    with bag_io.InputBag(out / "bag") as bag:
        responses = [m for _, m in bag.messages(f"/{name}/segment_semantic/response")]
        assert len(responses) == 3 and len([m for _, m in bag.messages(f"/{name}_in/image")]) == 3
    assert list(responses[0].label_names) == CATEGORIES

    # Ground truth from the same bands, but frame 1's person band half floor and frame 2 without any.
    truth = tmp_path / "truth"
    truth.mkdir()
    cv2.imwrite(str(truth / f"{stamps[0]}.png"), band_labels())
    changed = band_labels()
    changed[40:60] = 1
    cv2.imwrite(str(truth / f"{stamps[1]}.png"), changed)
    done = subprocess.run([sys.executable, "-P", "-m", "lisa_ros.tools.cli", "eval", str(out), "--gt-labels",
                           str(truth)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "report" / "summary.json").read_text())["semantic"]
    floor, person = 80 / 100, 60 / 80  # rows over both frames: 20 floor rows predicted as person
    assert summary["per_class_iou"]["floor"] == pytest.approx(floor)
    assert summary["per_class_iou"]["person"] == pytest.approx(person)
    assert summary["per_class_iou"]["cup"] == 1.0 and summary["absent"] == ["nothing here"]
    assert summary["miou"] == pytest.approx((floor + person + 1.0) / 3, abs=1e-6)
    assert summary["pixel_accuracy"] == pytest.approx(1 - 20 / 240, abs=1e-6)
    assert summary["frames_without_truth"] == [str(stamps[2])]


@pytest.mark.ros
def test_results_line_carries_the_descriptions_for_review():
    """The descriptions a category was segmented with go into results.jsonl, beside their sources, so a user
    can read them there and put better ones in semantic.descriptions_file."""
    from lisa_ros.msg import SemanticSegmentation

    result = SemanticSegmentation(label_names=["cup", "dog"], descriptions=["white ceramic, small", ""],
                                  description_sources=["user", "generated-unusable"])
    record = record_of(result, "labels/00000_1.png", 3.0)
    assert record["descriptions"] == ["white ceramic, small", ""]
    assert record["description_sources"] == ["user", "generated-unusable"]
    assert json.loads(json.dumps(record)) == record


def test_label_array_reads_16_bit_labels_in_either_byte_order():
    label = np.array([[0, 300], [65534, 7]], np.uint16)
    for big in (0, 1):
        data = label.astype(">u2" if big else "<u2").tobytes()
        padded = np.frombuffer(data, np.uint8).reshape(2, 4)
        padded = np.concatenate([padded, np.zeros((2, 2), np.uint8)], axis=1)  # step 6: 2 bytes of padding
        msg = bag_io.typestore().types[bag_io.IMAGE](header=bag_io.header(1, "cam"), height=2, width=2,
                                                     encoding="16UC1", is_bigendian=big, step=6,
                                                     data=padded.reshape(-1))
        assert np.array_equal(label_array(msg), label) and label_array(msg).dtype == np.uint16


def test_semantic_replay_rejects_empty_category_list_before_any_ros(tmp_path, capsys):
    from lisa_ros.tools.cli import main

    write_bag(tmp_path / "bag", frames=1)
    assert main(["replay", str(tmp_path / "bag"), "-o", str(tmp_path / "out"), "--semantic", " , "]) == 2
    assert "category list is empty" in capsys.readouterr().err


@pytest.mark.ros
def test_semantic_replay_over_255_categories_records_16_bit_labels(tmp_path):
    stamps = write_bag(tmp_path / "bag", frames=1)
    names = [f"class {k}" for k in range(300)]
    out, name = tmp_path / "out", "sem_replay16"
    command = [sys.executable, "-P", "-m", "lisa_ros.tools.cli", "replay", str(tmp_path / "bag"), "-o", str(out),
               "--semantic", ",".join(names), "--start-node", "--node-params", str(PLUMBING), "--node-name", name,
               "--publish-image", f"/{name}_in/image", "--result-timeout", "30", "--fail-on-error"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    label = cv2.imread(str(out / record["label"]), cv2.IMREAD_UNCHANGED)
    expected = np.zeros((120, 160), np.uint16)
    for band in range(300):  # the plumbing bands: 120 rows over 300 categories, most get none
        expected[band * 120 // 300:(band + 1) * 120 // 300] = band + 1
    assert label.dtype == np.uint16 and np.array_equal(label, expected) and label.max() == 300
    truth = tmp_path / "truth"
    truth.mkdir()
    cv2.imwrite(str(truth / f"{stamps[0]}.png"), expected)
    done = subprocess.run([sys.executable, "-P", "-m", "lisa_ros.tools.cli", "eval", str(out), "--gt-labels",
                           str(truth)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "report" / "summary.json").read_text())["semantic"]
    assert summary["ignore_index"] == 65535 and summary["miou"] == 1.0 and summary["pixel_accuracy"] == 1.0
    assert len(summary["absent"]) == 300 - 120  # one row each for 120 categories


def test_semantic_replay_names_an_unusable_frame_before_starting_a_node(tmp_path, capsys):
    from lisa_ros.tools.cli import main

    with bag_io.OutputBag(tmp_path / "bag", "sqlite3") as bag:
        good = bag_io.raw_image_msg(np.zeros((4, 4, 3), np.uint8), bag_io.header(1, "cam"))
        bag.write("/camera/image", 1, good, bag_io.IMAGE)
        cut = bag_io.raw_image_msg(np.zeros((4, 4, 3), np.uint8), bag_io.header(2, "cam"))
        cut.data = cut.data[:10]  # shorter than height x step
        bag.write("/camera/image", 2, cut, bag_io.IMAGE)
    code = main(["replay", str(tmp_path / "bag"), "-o", str(tmp_path / "out"), "--semantic", "floor",
                 "--start-node", "--node-params", str(PLUMBING)])
    assert code == 2 and "frame 1 on '/camera/image' is unusable" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
