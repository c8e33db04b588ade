"""``lisa-ros eval --gt-labels DIR``: score the label images of a semantic replay.

The records with ``"mode": "semantic"`` in the results folder are the samples. A
failed request (no label image) counts as all-unlabelled, so failures cost IoU
instead of vanishing. Ground truth is one PNG per frame named ``<frame stamp ns>.png``
(8 or 16 bit, values = label ids of the replay's category list, 0 = unlabelled,
255 = ignore); frames without one are listed, not scored. Every figure comes from
one confusion matrix summed over the frames (semantic_metrics.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from lisa_ros.tools import semantic_metrics

SEMANTIC_MODE = "semantic"
UNLABELLED = "unlabelled"


def semantic_records(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("mode") == SEMANTIC_MODE]


def class_names(records: list[dict]) -> list[str]:
    """"unlabelled" + the category list; one list for the whole replay, since ids are positions in it."""
    lists = {tuple(r["label_names"]) for r in records if r.get("label_names")}
    if len(lists) > 1:
        raise ValueError(f"the replay used {len(lists)} different category lists; ids would not match across frames")
    if not lists:
        raise ValueError("no semantic record has a label map (every request failed?): nothing to score")
    return [UNLABELLED, *lists.pop()]


def read_label(path: Path) -> np.ndarray:
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise ValueError(f"{path}: not a readable PNG")
    if label.ndim != 2:
        raise ValueError(f"{path}: a label image has one channel, this one has shape {label.shape}")
    return label


def predicted_label(root: Path, record: dict) -> np.ndarray:
    if record.get("label"):
        return read_label(root / record["label"])
    return np.zeros(record["image_size"], np.uint16)  # a failure: nothing labelled


def ignore_index_for(count: int) -> int:
    """255 (the ADE20K / Cityscapes convention); with more than 254 categories 255 is a class, so 65535."""
    return semantic_metrics.IGNORE_INDEX if count <= semantic_metrics.IGNORE_INDEX else 65535


def score(root: str | Path, records: list[dict], truth_dir: str | Path) -> dict:
    """The semantic scores of a results folder, and which frames were scored or lacked ground truth."""
    root, truth_dir = Path(root), Path(truth_dir)
    if not truth_dir.is_dir():
        raise ValueError(f"--gt-labels {truth_dir}: not a folder")
    samples = semantic_records(records)
    if not samples:
        raise ValueError(f"{root} has no semantic results (run `lisa-ros replay --semantic ...`)")
    names = class_names(samples)
    ignore = ignore_index_for(len(names))
    confusion = np.zeros((len(names), len(names)), np.int64)
    scored, no_truth = [], []
    for record in samples:
        truth_path = truth_dir / f"{record['frame_name']}.png"
        if not truth_path.is_file():
            no_truth.append(record["frame_name"])
            continue
        try:
            confusion += semantic_metrics.confusion_matrix(read_label(truth_path), predicted_label(root, record),
                                                           len(names), ignore)
        except ValueError as err:
            raise ValueError(f"request {record['request']} (frame {record['frame_name']}): {err}") from None
        scored.append(record["frame_name"])
    result = semantic_metrics.scores_from_confusion(confusion, names).to_dict()
    statuses: dict[str, int] = {}
    for record in samples:
        statuses[record["status"]] = statuses.get(record["status"], 0) + 1
    result.update(requests=len(samples), scored_frames=len(scored), frames_without_truth=no_truth,
                  statuses=statuses, ignore_index=ignore)
    return result


def write_report(report_dir: str | Path, summary: dict, note: str = "") -> Path:
    """report.md (semantic section), summary.json ({"semantic": ...}) and the confusion-matrix plot."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    scores = semantic_metrics.scores_from_confusion(np.array(summary["confusion"]), summary["classes"])
    plot = None
    if summary["scored_frames"]:
        plot = semantic_metrics.plot_confusion(scores, report_dir / "semantic_confusion.png").name
    summary = {**summary, "confusion_plot": plot}
    (report_dir / "summary.json").write_text(json.dumps({"semantic": summary}, indent=2) + "\n")

    def number(value):
        return "n/a" if value is None else f"{value:.4f}"

    lines = ["# lisa-ros eval report", ""] + ([note, ""] if note else []) + [
        "## Semantic segmentation", "",
        f"{summary['requests']} requests, {summary['scored_frames']} frames scored against ground truth, "
        f"{len(summary['frames_without_truth'])} without; statuses: "
        + ", ".join(f"{k} {v}" for k, v in sorted(summary["statuses"].items())), "",
        f"- mIoU: {number(summary['miou'])}", f"- fwIoU: {number(summary['fwiou'])}",
        f"- pixel accuracy: {number(summary['pixel_accuracy'])}",
        f"- mean accuracy: {number(summary['mean_accuracy'])}",
        f"- never predicted (in the ground truth): {', '.join(summary['never_predicted']) or 'none'}",
        f"- never present (predicted only): {', '.join(summary['never_present']) or 'none'}",
        f"- neither present nor predicted: {', '.join(summary['absent']) or 'none'}", "",
        f"`{UNLABELLED}` (id 0) is in the confusion matrix but not in the means; ground-truth value "
        f"{summary['ignore_index']} is ignored.", "",
        "| id | class | IoU |", "| --- | --- | --- |",
        *(f"| {i} | {name} | {number(summary['per_class_iou'][name])} |" for i, name in enumerate(summary["classes"])),
        "",
    ]
    if plot:
        lines += [f"![confusion matrix]({plot})", ""]
    (report_dir / "report.md").write_text("\n".join(lines))
    return report_dir


def summary_text(summary: dict) -> str:
    def number(value):
        return "n/a" if value is None else f"{value:.4f}"

    return (f"semantic: {summary['scored_frames']} frames scored, mIoU {number(summary['miou'])}, "
            f"fwIoU {number(summary['fwiou'])}, pixel accuracy {number(summary['pixel_accuracy'])}")
