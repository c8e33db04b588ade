"""lisa-ros eval --gt-labels on a hand-made semantic results folder: every figure computed by hand."""
import json

import cv2
import numpy as np
import pytest

from lisa_ros.tools.cli import main

NAMES = ["floor", "person", "cup", "stairs", "door"]  # ids 1..5
X = 255  # ignore
TRUTH_A = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [2, 2, 2, 2], [X, X, 0, 4]], np.uint16)  # written 16-bit
PRED_A = np.array([[1, 1, 1, 1], [1, 1, 2, 2], [2, 2, 2, 2], [3, 3, 3, 0]], np.uint8)
TRUTH_C = np.ones((4, 4), np.uint8)  # frame C's request failed: predicted all unlabelled
# confusion (truth row, predicted column): [0,3]=1, [1,0]=16, [1,1]=6, [1,2]=2, [2,2]=4, [4,0]=1
FLOOR, PERSON = 6 / 24, 4 / 6  # hits / (truth + predicted - hits)
MIOU = (FLOOR + PERSON + 0 + 0) / 4  # cup and stairs 0, door neither present nor predicted: left out
FWIOU = (24 * FLOOR + 4 * PERSON) / 29
PIXEL_ACCURACY = 10 / 29


@pytest.fixture
def semantic_results(tmp_path):
    root, truth = tmp_path / "results", tmp_path / "truth"
    (root / "labels").mkdir(parents=True)
    truth.mkdir()
    lines = []
    for request, (key, status, label) in enumerate([("100", "OK", PRED_A), ("200", "OK", PRED_A),
                                                   ("300", "TIMEOUT", None)]):
        record = {"request": request, "mode": "semantic", "frame_index": request, "frame_name": key,
                  "image_size": [4, 4], "status": status, "label_names": NAMES if label is not None else [],
                  "label_ids": [1, 2, 3, 4, 5] if label is not None else []}
        if label is not None:
            record["label"] = f"labels/{request:05d}_{key}.png"
            cv2.imwrite(str(root / record["label"]), label)
        lines.append(json.dumps(record))
    (root / "results.jsonl").write_text("\n".join(lines) + "\n")
    cv2.imwrite(str(truth / "100.png"), TRUTH_A)  # frame 200 has no ground truth
    cv2.imwrite(str(truth / "300.png"), TRUTH_C)
    return root, truth


def test_semantic_eval_figures_by_hand(semantic_results, capsys):
    root, truth = semantic_results
    assert main(["eval", str(root), "--gt-labels", str(truth)]) == 0
    summary = json.loads((root / "report" / "summary.json").read_text())["semantic"]
    assert summary["per_class_iou"] == {"unlabelled": 0.0, "floor": pytest.approx(FLOOR),
                                        "person": pytest.approx(PERSON), "cup": 0.0, "stairs": 0.0, "door": None}
    assert summary["miou"] == pytest.approx(MIOU, abs=1e-6)
    assert summary["fwiou"] == pytest.approx(FWIOU, abs=1e-6)
    assert summary["pixel_accuracy"] == pytest.approx(PIXEL_ACCURACY, abs=1e-6)
    assert summary["never_predicted"] == ["stairs"] and summary["never_present"] == ["cup"]
    assert summary["absent"] == ["door"]
    assert summary["scored_frames"] == 2 and summary["frames_without_truth"] == ["200"]
    assert summary["confusion"][1] == [16, 6, 2, 0, 0, 0] and summary["confusion"][0] == [0, 0, 0, 1, 0, 0]
    report = (root / "report" / "report.md").read_text()
    assert "## Semantic segmentation" in report and "| 2 | person | 0.6667 |" in report
    assert (root / "report" / "semantic_confusion.png").stat().st_size > 1000
    assert f"mIoU {MIOU:.4f}" in capsys.readouterr().out


def test_semantic_eval_rejects_truth_of_another_size(semantic_results, capsys):
    root, truth = semantic_results
    cv2.imwrite(str(truth / "100.png"), np.ones((5, 4), np.uint8))
    assert main(["eval", str(root), "--gt-labels", str(truth)]) == 2
    assert "request 0 (frame 100)" in capsys.readouterr().err


def test_semantic_eval_needs_semantic_results(tmp_path, capsys):
    (tmp_path / "results.jsonl").write_text(json.dumps({"request": 0, "frame_name": "1", "image_size": [2, 2]}) + "\n")
    assert main(["eval", str(tmp_path), "--gt-labels", str(tmp_path)]) == 2
    assert "no semantic results" in capsys.readouterr().err
