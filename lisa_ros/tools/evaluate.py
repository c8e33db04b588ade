"""``lisa-ros eval``: score a replay's masks against ground truth and write a report.

Every request in the results folder is one sample. Its prediction is the union of
its masks (empty when the node answered NOT_FOUND or failed, so failures cost
IoU instead of vanishing from the average); its ground truth is the mask of the
frame it was answered on. Requests whose frame has no ground truth are listed
but not scored. Without any ground truth (most recordings have none) the report
still gives the statuses, latency and mask statistics (masks per answer, area).

3D error: when the replay recorded the node's ~/targets_3d (depth on: records carry
``targets_3d``) and the ground truth has positions, each sample with a ground-truth position
is scored by the distance from its best target's centroid (the ~/target_point a grasping
node takes) to that position; a sample without a point (no mask, no depth, a failure) keeps
the reason and counts as not within the tolerance.

Refusal calibration (``lisa_ros.tools.refusal``): with labelled negatives (frames whose ground
truth is empty: the target is absent) and positives, the rates of masks given for absent targets
and of present targets refused over a threshold on the answer's best mask score, and the
``min_mask_score`` recommended for the node.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from lisa_ros.core.types import Status
from lisa_ros.tools import ground_truth, metrics, refusal, results_folder

POSITION_TOLERANCE_M = 0.05


@dataclasses.dataclass
class Sample:
    record: dict
    intersection: int | None = None  # None: no ground truth for this frame
    union: int | None = None
    truth_pixels: int = 0
    predicted_pixels: int = 0
    truth_mask: np.ndarray | None = None
    truth_position: ground_truth.Position | None = None  # None: not 3D-scored
    position: tuple[float, float, float] | None = None  # the best target's centroid, when it has one
    position_error_m: float | None = None  # with a point and a ground-truth position in its frame
    position_status: str = ""  # why there is no point, or no error ("" when there is)

    @property
    def mask_count(self) -> int:
        return len(self.record.get("masks", []))

    @property
    def area_fraction(self) -> float:
        """Share of the frame the predicted masks (their union) cover."""
        height, width = self.record["image_size"]
        return self.predicted_pixels / (height * width)

    @property
    def scored(self) -> bool:
        return self.union is not None

    @property
    def iou(self) -> float | None:
        return metrics.iou(self.intersection, self.union) if self.scored else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", help="results folder written by `lisa-ros replay`")
    truth = parser.add_mutually_exclusive_group()  # none: statuses, latency and mask statistics only
    truth.add_argument("--gt-bag", help="rosbag2 (directory or bare .mcap/.db3 file) with a ground-truth mask topic "
                       "(masks carry their frame's header)")
    truth.add_argument("--gt-masks", help="folder of PNG masks named <frame stamp ns>.png")
    truth.add_argument("--gt-reasonseg", help="folder of ReasonSeg JSON annotations named <frame stamp ns>.json")
    truth.add_argument("--gt-labels", help="semantic replays: folder of label PNGs named <frame stamp ns>.png "
                       "(values = the replay's label ids, 0 unlabelled, 255 ignore)")
    parser.add_argument("--gt-topic", default="/ground_truth/mask",
                        help="with --gt-bag: the mask topic (default /ground_truth/mask)")
    parser.add_argument("--gt-position-topic",
                        help="with --gt-bag: geometry_msgs/PointStamped topic of the targets' 3D positions for the "
                        f"3D error (default {ground_truth.POSITION_TOPIC} when the bag has it)")
    parser.add_argument("--position-tolerance", type=float, default=POSITION_TOLERANCE_M, metavar="METRES",
                        help="3D error: a centroid this close to the ground truth counts as within "
                        f"(default {POSITION_TOLERANCE_M})")
    parser.add_argument("--max-false-acceptance", type=float, default=refusal.MAX_FALSE_ACCEPTANCE, metavar="RATE",
                        help="refusal calibration (needs frames whose ground truth is empty: absent targets): the "
                        "recommended min_mask_score is the lowest with at most this share of absent targets given "
                        f"a mask (default {refusal.MAX_FALSE_ACCEPTANCE})")
    parser.add_argument("--report", help="report folder (default RESULTS/report)")
    parser.add_argument("--worst", type=int, default=8, help="worst cases shown in the report (default 8)")
    parser.add_argument("--note", default="", help="a line printed at the top of the report (e.g. which model and why)")
    parser.add_argument("--min-giou", type=float, help="exit 1 when gIoU is below this (needs ground truth)")


def load_truth(args: argparse.Namespace):
    if args.gt_bag:
        return ground_truth.BagTopicTruth(args.gt_bag, args.gt_topic, args.gt_position_topic or
                                          ground_truth.POSITION_TOPIC, position_required=bool(args.gt_position_topic))
    if args.gt_masks:
        return ground_truth.PngFolderTruth(args.gt_masks)
    if args.gt_reasonseg:
        return ground_truth.ReasonSegTruth(args.gt_reasonseg)
    return ground_truth.NoTruth()


def predicted_position(record: dict) -> tuple[tuple | None, str, str]:
    """(the best target's centroid, its frame_id, "") or (None, "", why there is none), for a replay with depth."""
    if "targets_3d" not in record:
        kind = "no answer" if not Status.is_answered(record["status"]) else "no mask"
        return None, "", f"{kind} ({record['status']})"
    targets = record["targets_3d"]
    if targets is None:
        return None, "", "no ~/targets_3d received for this answer"
    if targets["best_index"] < 0:
        return None, "", targets["status_message"] or "no target has a point"
    return tuple(targets["targets"][targets["best_index"]]["centroid"]), targets["frame_id"], ""


def score_position(sample: Sample, truth: ground_truth.Position | None) -> None:
    """The sample's point (any answer of a replay with depth) and, with a ground-truth position, its error."""
    sample.position, frame_id, sample.position_status = predicted_position(sample.record)
    sample.truth_position = truth
    if truth is None or sample.position is None:
        return
    if truth.frame_id and frame_id != truth.frame_id:
        sample.position_status = (f"points in {frame_id!r}, ground truth in {truth.frame_id!r} (eval does not "
                                  "transform between frames)")
        return
    sample.position_error_m = float(np.linalg.norm(np.subtract(sample.position, truth.xyz)))


def score(root: Path, records: list[dict], truth) -> list[Sample]:
    samples = []
    with_depth = any("targets_3d" in record for record in records)  # the replay recorded ~/targets_3d
    for record in records:
        predicted = results_folder.predicted_mask(root, record)
        sample = Sample(record, predicted_pixels=int(predicted.sum()))
        found = truth.get(record["frame_name"], tuple(record["image_size"]), record.get("frame_occurrence", 0))
        if found is not None:
            mask, ignore = found
            sample.truth_mask = mask
            try:
                sample.intersection, sample.union = metrics.intersection_union(predicted, mask, ignore)
            except ValueError as err:
                raise ValueError(f"request {record['request']} (frame {record['frame_name']}): {err}") from None
            sample.truth_pixels = int(mask.sum())
        if with_depth:
            score_position(sample, truth.position(record["frame_name"], record.get("frame_occurrence", 0)))
        samples.append(sample)
    return samples


def run(args: argparse.Namespace) -> int:
    from lisa_ros.tools import report  # matplotlib only when there is something to plot

    root = Path(args.results)
    if args.gt_labels:
        return run_semantic(args, root)
    if args.min_giou is not None and not (args.gt_bag or args.gt_masks or args.gt_reasonseg):
        print("error: --min-giou needs ground truth: pass --gt-bag, --gt-masks or --gt-reasonseg", file=sys.stderr)
        return 2
    if args.gt_position_topic and not args.gt_bag:
        print("error: --gt-position-topic reads the --gt-bag; pass --gt-bag", file=sys.stderr)
        return 2
    if args.position_tolerance <= 0:
        print("error: --position-tolerance must be > 0 (metres)", file=sys.stderr)
        return 2
    if not 0 <= args.max_false_acceptance < 1:
        print("error: --max-false-acceptance must be in 0..1 (a rate, e.g. 0.05), below 1", file=sys.stderr)
        return 2
    try:
        records = results_folder.read_records(root)
        truth = load_truth(args)
        samples = score(root, records, truth)
    except (OSError, ValueError, ground_truth.bag_io.BagError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report_dir = Path(args.report) if args.report else root / "report"
    summary = report.write_report(report_dir, root, samples, truth, args.note, args.worst, args.position_tolerance,
                                  args.max_false_acceptance)
    print(report.summary_text(summary))
    print(f"report: {report_dir / 'report.md'} (plots and per_sample.csv beside it)")
    if args.min_giou is not None and summary["gIoU"] is None:
        print(f"no sample has ground truth ({truth.description}): --min-giou {args.min_giou} not met", file=sys.stderr)
        return 1
    if args.min_giou is not None and summary["gIoU"] < args.min_giou:
        print(f"gIoU {summary['gIoU']:.3f} is below --min-giou {args.min_giou}", file=sys.stderr)
        return 1
    return 0


def run_semantic(args: argparse.Namespace, root: Path) -> int:
    from lisa_ros.tools import semantic_eval

    if args.min_giou is not None:
        print("error: --min-giou scores instruction masks; it does not apply to --gt-labels", file=sys.stderr)
        return 2
    try:
        summary = semantic_eval.score(root, results_folder.read_records(root), args.gt_labels)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report_dir = semantic_eval.write_report(Path(args.report) if args.report else root / "report", summary, args.note)
    print(semantic_eval.summary_text(summary))
    print(f"report: {report_dir / 'report.md'} (semantic_confusion.png and summary.json beside it)")
    return 0
