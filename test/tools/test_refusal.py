"""lisa-ros eval's refusal calibration (lisa_ros.tools.refusal) on a hand-made results folder, its rates against
scikit-learn's roc_curve (requirements/test.txt)."""
import json

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from lisa_ros.tools import refusal, visual
from lisa_ros.tools.cli import main
from lisa_ros.tools.results_folder import ResultsFolder

SIZE = (6, 8)  # height, width
TARGET = np.zeros(SIZE, bool)
TARGET[1:4, 2:6] = True
ABSENT = np.zeros(SIZE, bool)
REFUSED_BY_THE_NODE = "best mask score 0.40 is below min_mask_score 0.5: refused"
# request -> (status, mask scores, ground truth or None, status_message)
CASES = {
    0: ("OK", [0.2], ABSENT, ""),  # absent targets (negatives): best scores 0.2, 0.35, none, 0.6
    1: ("OK", [0.35], ABSENT, ""),
    2: ("NOT_FOUND", [], ABSENT, ""),
    3: ("OK", [0.1, 0.6], ABSENT, ""),  # the best mask counts
    4: ("OK", [0.9], TARGET, ""),  # present targets (positives): best scores 0.9, 0.7, 0.3, none
    5: ("OK", [0.7, 0.05], TARGET, ""),
    6: ("OK", [0.3], TARGET, ""),
    7: ("NOT_FOUND", [], TARGET, REFUSED_BY_THE_NODE),
    8: ("NO_RESULT", [], ABSENT, ""),  # not an answer: left out
    9: ("OK", [0.95], None, ""),  # no ground truth: left out
}
# By hand: absent targets given a mask (of 4) and present targets refused (of 4) at each t
EXPECTED = {0.0: (3, 1), 0.2: (3, 1), 0.21: (2, 1), 0.31: (2, 2), 0.36: (1, 2), 0.6: (1, 2), 0.61: (0, 2),
            0.71: (0, 3), 0.91: (0, 4), 1.0: (0, 4)}


def write_results(root, cases):
    folder = ResultsFolder(root / "results")
    truth = root / "gt"
    truth.mkdir()
    image = np.full((*SIZE, 3), 120, np.uint8)
    for request, (status, scores, mask, message) in cases.items():
        stamp = 2_000_000_000 + request
        record = {"request": request, "instruction": f"the thing {request}", "frame_index": request,
                  "frame_name": str(stamp), "image_size": list(SIZE), "status": status, "status_message": message,
                  "frame": folder.save_frame(request, stamp, image), "model_id": "plumbing"}
        if status != "NO_RESULT":
            names, overlay = folder.save_answer(request, image, [TARGET] * len(scores))
            record.update(masks=names, overlay=overlay, scores=scores, explanation="It is [SEG].")
        folder.append(record)
        if mask is not None:
            visual.write_png(truth / f"{stamp}.png", mask)
    folder.close()
    return root / "results", truth


def test_calibration_rates_recommendation_report_and_plot(tmp_path, capsys):
    results, truth = write_results(tmp_path, CASES)
    assert main(["eval", str(results), "--gt-masks", str(truth)]) == 0
    out = capsys.readouterr().out
    summary = json.loads((results / "report" / "summary.json").read_text())["refusal"]
    assert (summary["negatives"], summary["positives"], summary["not_answered"]) == (4, 4, 1)
    curve = {point["t"]: (point["false_acceptance"], point["false_refusal"]) for point in summary["curve"]}
    assert len(curve) == 101
    for t, (accepted, refused) in EXPECTED.items():
        assert curve[t] == (accepted / 4, refused / 4), t
    assert summary["recommended"] == {"t": 0.61, "false_acceptance": 0.0, "false_refusal": 0.5}
    assert summary["equal_error"] == {"t": 0.31, "false_acceptance": 0.5, "false_refusal": 0.5}
    assert summary["refused_by_the_replays_node"] == 1
    assert "for the node's params file:\n    min_mask_score: 0.61\n" in out and "4 absent / 4 present targets" in out
    assert "refused by the replayed node's own min_mask_score: 1;" in out
    report = (results / "report" / "report.md").read_text()
    assert "```yaml\nmin_mask_score: 0.61\n```" in report
    assert "| 0.61 (recommended) | 0.000 | 0.500 |" in report and "| 0.35 | 0.500 | 0.500 |" in report
    assert visual.read_rgb(results / "report" / refusal.PLOT_FILE).shape[0] > 100


def test_a_looser_false_acceptance_target_gives_a_lower_threshold(tmp_path, capsys):
    results, truth = write_results(tmp_path, CASES)
    assert main(["eval", str(results), "--gt-masks", str(truth), "--max-false-acceptance", "0.25"]) == 0
    assert "\n    min_mask_score: 0.36\n" in capsys.readouterr().out  # one absent target of 4 (0.6) still accepted


def test_scores_that_never_separate_absent_targets_recommend_nothing(tmp_path, capsys):
    """The plumbing engine's masks all score 1.0: no threshold in the parameter's range refuses the absent ones."""
    cases = {0: ("OK", [1.0], ABSENT, ""), 1: ("OK", [1.0], TARGET, "")}
    results, truth = write_results(tmp_path, cases)
    assert main(["eval", str(results), "--gt-masks", str(truth)]) == 0
    assert "no min_mask_score in 0..1 keeps false acceptance <= 5.0% (at 1.00 it is 100.0%)" in capsys.readouterr().out
    summary = json.loads((results / "report" / "summary.json").read_text())["refusal"]
    assert summary["recommended"] is None and "min_mask_score:" not in (results / "report" / "report.md").read_text()


def test_without_negatives_calibration_says_it_needs_them(tmp_path, capsys):
    cases = {request: case for request, case in CASES.items() if case[2] is not ABSENT}
    results, truth = write_results(tmp_path, cases)
    assert main(["eval", str(results), "--gt-masks", str(truth)]) == 0
    assert "needs labelled negatives, frames whose ground truth is empty" in capsys.readouterr().out
    assert "needs labelled negatives" in (results / "report" / "report.md").read_text()
    assert not (results / "report" / refusal.PLOT_FILE).exists()


def test_masks_without_scores_are_named_and_the_rest_of_the_report_stands(tmp_path, capsys):
    results, truth = write_results(tmp_path, CASES)
    records = [json.loads(line) for line in (results / "results.jsonl").read_text().splitlines()]
    del records[5]["scores"]
    (results / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["eval", str(results), "--gt-masks", str(truth)]) == 0
    assert "request 5 has 2 masks but 0 scores" in capsys.readouterr().out
    assert json.loads((results / "report" / "summary.json").read_text())["gIoU"] is not None


def test_a_bad_false_acceptance_target_is_refused(tmp_path, capsys):
    results, truth = write_results(tmp_path, CASES)
    assert main(["eval", str(results), "--gt-masks", str(truth), "--max-false-acceptance", "1.5"]) == 2
    assert "--max-false-acceptance must be in 0..1" in capsys.readouterr().err


def test_rates_equal_scikit_learn_roc_curve():
    """False acceptance is the false positive rate, false refusal 1 - the true positive rate, at every threshold
    roc_curve reports (an answer without a mask is scored below all of them, as it is refused at every t)."""
    rng = np.random.default_rng(3)
    negatives = [None if rng.random() < 0.2 else float(s) for s in rng.beta(2, 5, 60).round(3)]
    positives = [None if rng.random() < 0.1 else float(s) for s in rng.beta(5, 2, 90).round(3)]
    no_mask = -1.0
    labels = [0] * len(negatives) + [1] * len(positives)
    scores = [no_mask if s is None else s for s in negatives + positives]
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    real = (thresholds > no_mask) & np.isfinite(thresholds)
    assert real.sum() > 50
    false_acceptance, false_refusal = refusal.rates(negatives, positives, thresholds[real])
    np.testing.assert_allclose(false_acceptance, fpr[real])
    np.testing.assert_allclose(false_refusal, 1 - tpr[real])


@pytest.mark.parametrize("scores, expected", [([], None), ([0.2, 0.7], 0.7)])
def test_an_answers_score_is_its_best_masks(scores, expected):
    assert refusal.answer_score({"request": 0, "masks": ["m"] * len(scores), "scores": scores}) == expected
