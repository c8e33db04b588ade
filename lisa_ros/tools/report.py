"""The eval report: summary table, per-sample CSV and plots a person can read.

    report.md            summary table (3D error too, when the replay had depth and the truth positions),
                         the plots, every sample worst first
    summary.json         the same numbers for scripts
    per_sample.csv       one row per request
    iou_histogram.png    how the IoUs spread          (only with ground truth)
    latency_histogram.png
    worst_cases.png      the lowest-IoU samples: prediction blue, ground truth green (idem)
    refusal_calibration.png  false acceptance / false refusal against min_mask_score (with labelled negatives:
                         lisa_ros.tools.refusal)
"""
from __future__ import annotations

import csv
import json
import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lisa_ros.core.stats import median_p95  # noqa: E402
from lisa_ros.core.types import Status  # noqa: E402
from lisa_ros.tools import metrics, refusal, results_folder, visual  # noqa: E402

# Engines whose masks say nothing about LISA's quality.
NOT_A_REAL_MODEL = ("tiny", "plumbing", "random")
CSV_FIELDS = ["request", "frame_name", "frame_occurrence", "frame_index", "instruction", "status", "iou",
              "intersection", "union", "truth_pixels", "predicted_pixels", "mask_count", "area_fraction", "total_ms",
              "round_trip_ms", "model_id", "explanation", "position_error_m", "position_m", "truth_position_m",
              "position_status"]


def summarize_positions(samples, description: str | None, within_m: float) -> dict | None:
    """The 3D error over the samples with a ground-truth position (None when none is 3D-scored)."""
    scored = [s for s in samples if s.truth_position is not None]
    if not scored:
        return None
    without: dict[str, int] = {}
    for s in scored:
        if s.position_error_m is None:  # grouped by kind: "NO_DEPTH: no depth frame within ..." is NO_DEPTH
            kind = s.position_status.split(":")[0]
            without[kind] = without.get(kind, 0) + 1
    return {"ground_truth": description, **metrics.position_errors([s.position_error_m for s in scored], within_m),
            "without_point": without}


def summarize_eval(samples, truth_description: str, note: str, position_description: str | None = None,
                   within_m: float = 0.05, max_false_acceptance: float = refusal.MAX_FALSE_ACCEPTANCE) -> dict:
    scored = [s for s in samples if s.scored]
    pairs = [(s.intersection, s.union) for s in scored]
    latencies = [s.record["total_ms"] for s in samples if "total_ms" in s.record]
    round_trips = [s.record["round_trip_ms"] for s in samples if "round_trip_ms" in s.record]
    statuses: dict[str, int] = {}
    for s in samples:
        statuses[s.record["status"]] = statuses.get(s.record["status"], 0) + 1
    model_ids = sorted({s.record["model_id"] for s in samples if s.record.get("model_id")})
    warning = ""
    if any(word in model_id.lower() for model_id in model_ids for word in NOT_A_REAL_MODEL):
        warning = (f"The masks come from {', '.join(model_ids)}, not from trained LISA weights: they are "
                   "meaningless, and these scores only show that the pipeline runs end to end.")
    answered = [s for s in samples if Status.is_answered(s.record["status"])]  # the mask statistics' population
    with_masks = [s for s in answered if s.mask_count]
    counts = [s.mask_count for s in answered]
    area = median_p95([s.area_fraction for s in with_masks], digits=4)
    return {
        "samples": len(samples),
        "scored": len(scored),
        "without_ground_truth": len(samples) - len(scored),
        "gIoU": metrics.giou(pairs) if pairs else None,  # None, not NaN: summary.json stays strict JSON
        "cIoU": metrics.ciou(pairs) if pairs else None,
        "statuses": statuses,
        "latency_ms": median_p95(latencies),
        "round_trip_ms": median_p95(round_trips),
        "masks": {
            "answers": len(answered),
            "answers_with_masks": len(with_masks),
            "per_answer_mean": round(float(np.mean(counts)), 3) if counts else None,
            "per_answer_max": max(counts, default=None),
            "area_fraction_median": area["median"],
            "area_fraction_p95": area["p95"],
        },
        "position": summarize_positions(samples, position_description, within_m),
        "refusal": refusal.calibrate(samples, max_false_acceptance),
        "model_ids": model_ids,
        "ground_truth": truth_description,
        "note": note,
        "model_warning": warning,
    }


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _metres(value) -> str:
    return "n/a" if value is None else f"{value:.3f} m"


def position_rows(position: dict | None) -> list[tuple[str, str]]:
    if position is None:
        return []
    without = ", ".join(f"{kind} {count}" for kind, count in sorted(position["without_point"].items())) or "none"
    return [
        ("3D ground truth", position["ground_truth"]),
        ("3D error, best target's centroid (median / mean / max)",
         f"{_metres(position['median_m'])} / {_metres(position['mean_m'])} / {_metres(position['max_m'])} "
         f"({position['measured']} of {position['samples']} measured)"),
        (f"3D: within {position['within_m'] * 100:g} cm of the ground truth",
         f"{position['within']} of {position['samples']} ({_fmt(position['fraction_within'])})"),
        ("3D: no error (no point, or another frame)", without),
    ]


def summary_rows(summary: dict) -> list[tuple[str, str]]:
    lat, rtt, masks = summary["latency_ms"], summary["round_trip_ms"], summary["masks"]
    return [
        ("model", ", ".join(summary["model_ids"]) or "unknown"),
        ("ground truth", summary["ground_truth"]),
        ("samples (scored / no ground truth)",
         f"{summary['samples']} ({summary['scored']} / {summary['without_ground_truth']})"),
        ("gIoU (mean per-sample IoU)", _fmt(summary["gIoU"])),
        ("cIoU (total intersection / total union)", _fmt(summary["cIoU"])),
        ("statuses", ", ".join(f"{k} {v}" for k, v in sorted(summary["statuses"].items()))),
        ("latency, node (median / p95)", f"{lat['median']} / {lat['p95']} ms"),
        ("round trip, replay (median / p95)", f"{rtt['median']} / {rtt['p95']} ms"),
        ("masks per answer (mean / max of OK + NOT_FOUND; how many had masks)", f"{_fmt(masks['per_answer_mean'])} / "
         f"{_fmt(masks['per_answer_max'])} ({masks['answers_with_masks']} of {masks['answers']} OK/NOT_FOUND)"),
        ("mask area, share of the frame (median / p95)", f"{_fmt(masks['area_fraction_median'])} / "
         f"{_fmt(masks['area_fraction_p95'])}"),
        *position_rows(summary.get("position")),
    ]


def summary_text(summary: dict) -> str:
    rows = summary_rows(summary)
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows] + refusal.printed_lines(summary["refusal"])
    for line in (summary["note"], summary["model_warning"]):
        if line:
            lines.insert(0, f"NOTE: {line}")
    return "\n".join(lines)


def _worst_first(samples) -> list:
    return sorted(samples, key=lambda s: (not s.scored, s.iou if s.scored else 0.0, s.record["request"]))


def plot_iou_histogram(samples, path: Path) -> None:
    ious = [s.iou for s in samples if s.scored]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(ious, bins=np.linspace(0, 1, 11), color="#4a7ab5", edgecolor="white")
    ax.set(xlabel="IoU per sample", ylabel="samples", title=f"IoU distribution ({len(ious)} samples)", xlim=(0, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_latency_histogram(samples, path: Path) -> None:
    node = [s.record["total_ms"] for s in samples if "total_ms" in s.record]
    trip = [s.record["round_trip_ms"] for s in samples if "round_trip_ms" in s.record]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if node:
        bins = np.linspace(0, max(node + trip) * 1.05 + 1e-3, 21)
        ax.hist([node, trip], bins=bins, label=["node (received -> published)", "replay round trip"],
                color=["#4a7ab5", "#e0a030"])
        ax.legend()
    ax.set(xlabel="latency (ms)", ylabel="requests", title="Latency")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_worst_cases(samples, results_root: Path, path: Path, count: int) -> None:
    """The lowest-IoU samples, each as its frame with prediction (blue) and ground truth (green outline)."""
    chosen = [s for s in _worst_first(samples) if s.scored][:count]
    columns = min(4, max(len(chosen), 1))
    rows = max(math.ceil(len(chosen) / columns), 1)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, sample in zip(axes.flat, chosen, strict=False):  # the grid may have more cells than samples
        record = sample.record
        image = visual.read_rgb(results_root / record["frame"])
        ax.imshow(visual.eval_overlay(image, results_folder.predicted_mask(results_root, record), sample.truth_mask))
        said = record.get("explanation") or record.get("status_message", "")
        title = (f"#{record['request']} IoU {sample.iou:.2f} {record['status']}\n"
                 f"{textwrap.shorten(record['instruction'], 48)}\n\u201c{textwrap.shorten(said, 48)}\u201d")
        ax.set_title(title, fontsize=8)
    fig.suptitle("Worst cases: prediction blue, ground truth green outline", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_csv(samples, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for s in samples:
            row = {key: s.record.get(key, "") for key in CSV_FIELDS}
            row.update(iou="" if not s.scored else f"{s.iou:.4f}", intersection=s.intersection if s.scored else "",
                       union=s.union if s.scored else "", truth_pixels=s.truth_pixels if s.scored else "",
                       predicted_pixels=s.predicted_pixels, mask_count=s.mask_count,
                       area_fraction=f"{s.area_fraction:.4f}",
                       position_error_m="" if s.position_error_m is None else f"{s.position_error_m:.4f}",
                       position_m=_xyz(s.position),
                       truth_position_m=_xyz(s.truth_position.xyz if s.truth_position else None),
                       position_status=s.position_status)
            writer.writerow(row)


def _xyz(point) -> str:
    return "" if point is None else " ".join(f"{value:.4f}" for value in point)


def _position_cell(sample) -> str:
    if sample.truth_position is None:
        return "n/a"
    if sample.position_error_m is None:
        return f"no error: {textwrap.shorten(sample.position_status, 40)}".replace("|", "/")
    return f"{sample.position_error_m:.3f} m"


def write_markdown(summary: dict, samples, path: Path) -> None:
    lines = ["# lisa_ros evaluation report", ""]
    for line in (summary["model_warning"], summary["note"]):
        if line:
            lines += [f"> **{line}**", ""]
    lines += ["| | |", "|---|---|"] + [f"| {name} | {value} |" for name, value in summary_rows(summary)]
    position = summary.get("position")
    if position is not None:
        lines += ["", "3D error of a sample: the distance from its best target's centroid (`~/targets_3d`: the",
                  "highest-scoring mask with a point, as on `~/target_point`) to its ground-truth position",
                  f"({position['ground_truth']}), in the depth optical frame; a sample without a point has no",
                  "error and is not within the tolerance."]
    lines += refusal.markdown_lines(summary["refusal"])
    if summary["scored"]:
        lines += ["", "IoU of a sample: its masks (union) against its frame's ground truth; an empty prediction on an",
                  "empty ground truth scores 1, a failed request scores as an empty prediction.", "",
                  "![IoU distribution](iou_histogram.png)", "![Latency](latency_histogram.png)",
                  "![Worst cases](worst_cases.png)", "", "## Samples, worst first", ""]
    else:
        lines += ["", "No sample has ground truth: no IoU; statuses, latency and mask statistics only.", "",
                  "![Latency](latency_histogram.png)", "", "## Samples", ""]
    lines += ["| request | frame | instruction | status | IoU | masks | area | 3D error | explanation |",
              "|---|---|---|---|---|---|---|---|---|"]
    for s in _worst_first(samples):
        r = s.record
        explanation = textwrap.shorten(r.get("explanation") or r.get("status_message", ""), 80).replace("|", "/")
        lines.append(f"| {r['request']} | {r['frame_index']} | {r['instruction'].replace('|', '/')} | {r['status']} | "
                     f"{_fmt(s.iou)} | {s.mask_count} | {s.area_fraction:.3f} | {_position_cell(s)} | {explanation} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_report(report_dir: Path, results_root: Path, samples, truth, note: str, worst: int,
                 within_m: float = 0.05, max_false_acceptance: float = refusal.MAX_FALSE_ACCEPTANCE) -> dict:
    report_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize_eval(samples, truth.description, note, truth.position_description, within_m,
                             max_false_acceptance)
    write_csv(samples, report_dir / "per_sample.csv")
    plot_latency_histogram(samples, report_dir / "latency_histogram.png")
    if summary["scored"]:
        plot_iou_histogram(samples, report_dir / "iou_histogram.png")
        plot_worst_cases(samples, results_root, report_dir / "worst_cases.png", worst)
    if summary["refusal"] and summary["refusal"]["curve"]:
        refusal.plot(summary["refusal"], report_dir / refusal.PLOT_FILE)
    write_markdown(summary, samples, report_dir / "report.md")
    (report_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary
