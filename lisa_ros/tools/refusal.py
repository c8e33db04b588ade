"""Refusal calibration for ``lisa-ros eval``: the ``min_mask_score`` that keeps a grasping node off masks of absent
targets.

LISA answers [SEG] even when the target is not in the frame. The samples are the answers (OK / NOT_FOUND) whose frame
has ground truth: a *negative* has an empty truth (the target is absent), a *positive* a non-empty one. An answer's
score is its best mask's score (SAM's IoU prediction); an answer without a mask is refused at every threshold. With
``min_mask_score = t`` the node keeps the masks scoring >= t (0 = off: all), so at t:

    false acceptance = negatives still given a mask / negatives
    false refusal    = positives left without a mask / positives

Recommended: the lowest t (0.01 steps, 0..1: the parameter's range) with false acceptance <= the target (default 5%).
A grasping node acting on a mask of an absent target grips something else; a false refusal costs a re-ask or another
view. So the dangerous error is bounded first, and the lowest such t refuses the fewest present targets (false
refusal only grows with t).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lisa_ros.core.types import Status

MAX_FALSE_ACCEPTANCE = 0.05
THRESHOLDS = np.round(np.arange(0, 101) / 100, 2)  # min_mask_score's range, 0 = off
PLOT_FILE = "refusal_calibration.png"
REPLAY_REFUSED = "is below min_mask_score"  # in the node's message when it refused every mask (core.worker)


def answer_score(record: dict) -> float | None:
    """The best mask score of a recorded answer; None when it has no mask. Raises ValueError for masks without
    their scores (the threshold cannot be applied to them)."""
    masks, scores = record.get("masks", []), record.get("scores", [])
    if not masks:
        return None
    if len(scores) != len(masks):
        raise ValueError(f"request {record['request']} has {len(masks)} masks but {len(scores)} scores in "
                         "results.jsonl: refusal calibration needs each mask's score (lisa-ros replay records them)")
    return max(float(score) for score in scores)


def rates(negative_scores: list[float | None], positive_scores: list[float | None],
          thresholds=THRESHOLDS) -> tuple[np.ndarray, np.ndarray]:
    """(false acceptance, false refusal) at each threshold (both lists non-empty); a score of None (no mask) is
    refused at every threshold, and t <= 0 is off (every mask kept), as in the node."""
    def accepted(scores: list[float | None]) -> np.ndarray:  # (thresholds, samples)
        best = np.array([-np.inf if s is None else s for s in scores], np.float64)
        t = np.asarray(thresholds, np.float64)[:, None]
        return np.isfinite(best) & ((t <= 0) | (best >= t))

    return accepted(negative_scores).mean(axis=1), 1.0 - accepted(positive_scores).mean(axis=1)


def calibrate(samples, max_false_acceptance: float = MAX_FALSE_ACCEPTANCE) -> dict | None:
    """The calibration over eval's samples (None when none has ground truth)."""
    scored = [s for s in samples if s.scored]
    if not scored:
        return None
    answered = [s for s in scored if Status.is_answered(s.record["status"])]
    absent = [s for s in answered if s.truth_pixels == 0]
    present = [s for s in answered if s.truth_pixels > 0]
    result = {"negatives": len(absent), "positives": len(present), "not_answered": len(scored) - len(answered),
              "max_false_acceptance": max_false_acceptance, "curve": [], "recommended": None, "equal_error": None,
              "problem": "", "refused_by_the_replays_node": sum(REPLAY_REFUSED in s.record.get("status_message", "")
                                                                for s in answered)}
    if not absent or not present:
        return result
    try:
        negatives, positives = ([answer_score(s.record) for s in group] for group in (absent, present))
    except ValueError as error:  # the rest of the report stands
        result["problem"] = str(error)
        return result
    false_acceptance, false_refusal = rates(negatives, positives)
    result["curve"] = [{"t": float(t), "false_acceptance": round(float(fa), 4), "false_refusal": round(float(fr), 4)}
                       for t, fa, fr in zip(THRESHOLDS, false_acceptance, false_refusal, strict=True)]
    meeting = np.flatnonzero(false_acceptance <= max_false_acceptance)
    if meeting.size:
        result["recommended"] = result["curve"][int(meeting[0])]
    result["equal_error"] = result["curve"][int(np.argmin(np.abs(false_acceptance - false_refusal)))]
    return result


def parameter_line(calibration: dict) -> str:
    """What to put in the node's params file."""
    return f"min_mask_score: {calibration['recommended']['t']:.2f}"


def _percent(rate: float) -> str:
    return f"{100 * rate:.1f}%"


def text_lines(calibration: dict | None) -> list[str]:
    """What eval prints and report.md says about the refusal threshold."""
    if calibration is None:
        return []
    target = _percent(calibration["max_false_acceptance"])
    counted = f"{calibration['negatives']} absent / {calibration['positives']} present targets"
    if calibration["problem"]:
        return [f"refusal calibration: {calibration['problem']}"]
    if not calibration["negatives"]:
        return [f"refusal calibration ({counted}): needs labelled negatives, frames whose ground truth is empty "
                "(the target is absent); none here, so no min_mask_score is recommended"]
    if not calibration["positives"]:
        return [f"refusal calibration ({counted}): needs present targets too (non-empty ground truth)"]
    lines = []
    if calibration["refused_by_the_replays_node"]:
        lines.append("refusal calibration: answers refused by the replayed node's own min_mask_score: "
                     f"{calibration['refused_by_the_replays_node']}; their scores are lost, so rates below its "
                     "threshold are not measured (replay with min_mask_score 0)")
    recommended, equal = calibration["recommended"], calibration["equal_error"]
    if recommended is None:
        at_one = calibration["curve"][-1]
        lines.append(f"refusal calibration ({counted}): no min_mask_score in 0..1 keeps false acceptance <= {target} "
                     f"(at 1.00 it is {_percent(at_one['false_acceptance'])}): the mask scores do not tell absent "
                     "targets apart; min_mask_score cannot make these answers safe to act on")
        return lines
    lines.append(f"refusal calibration ({counted}): the lowest threshold with false acceptance <= {target} gives "
                 f"{_percent(recommended['false_acceptance'])} of absent targets a mask and refuses "
                 f"{_percent(recommended['false_refusal'])} of present ones (equal error "
                 f"{_percent(equal['false_acceptance'])} / {_percent(equal['false_refusal'])} at t = "
                 f"{equal['t']:.2f}); for the node's params file:")
    if recommended["false_refusal"] == 1.0:
        lines.append("refusal calibration: at that threshold every present target is refused too")
    return lines


def printed_lines(calibration: dict | None) -> list[str]:
    """What eval prints: ``text_lines``, then the recommended parameter line as it goes in a params file."""
    lines = text_lines(calibration)
    if calibration is not None and calibration["recommended"] is not None:
        lines.append(f"    {parameter_line(calibration)}")
    return lines


def markdown_lines(calibration: dict | None) -> list[str]:
    """report.md's section: the rule, the recommendation, the table every 0.05 and the plot."""
    if calibration is None:
        return []
    lines = ["", "## Refusal calibration (min_mask_score)", "",
             "Over the answers whose frame has ground truth: an empty truth is an absent target (a negative). At a",
             "threshold t the node keeps masks scoring >= t (`min_mask_score`, SAM's IoU prediction): *false",
             "acceptance* = absent targets still given a mask, *false refusal* = present targets left without one.",
             f"Recommended: the lowest t with false acceptance <= {_percent(calibration['max_false_acceptance'])}"
             " (acting on a mask of an absent target is the dangerous error; the lowest such t refuses the fewest",
             "present targets).", ""]
    lines += [f"- {line}" for line in text_lines(calibration)]
    if not calibration["curve"]:
        return lines
    if calibration["recommended"] is not None:
        lines += ["", "```yaml", parameter_line(calibration), "```"]
    shown = {round(t, 2) for t in np.arange(0, 1.0001, 0.05)} | {
        point["t"] for point in (calibration["recommended"], calibration["equal_error"]) if point}
    lines += ["", "| t | false acceptance | false refusal |", "|---|---|---|"]
    for point in calibration["curve"]:
        if point["t"] in shown:
            mark = " (recommended)" if point == calibration["recommended"] else ""
            lines.append(f"| {point['t']:.2f}{mark} | {point['false_acceptance']:.3f} | {point['false_refusal']:.3f} |")
    lines += ["", f"![Refusal calibration]({PLOT_FILE})"]
    return lines


def plot(calibration: dict, path: Path) -> None:
    """Both rates against t, the target and the recommended t marked."""
    import matplotlib.pyplot as plt  # report.py has chosen the Agg backend

    t = [point["t"] for point in calibration["curve"]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(t, [p["false_acceptance"] for p in calibration["curve"]], label="false acceptance (absent, given a mask)",
            color="#c0392b")
    ax.plot(t, [p["false_refusal"] for p in calibration["curve"]], label="false refusal (present, refused)",
            color="#4a7ab5")
    ax.axhline(calibration["max_false_acceptance"], color="#c0392b", linestyle=":", linewidth=1)
    if calibration["recommended"] is not None:
        ax.axvline(calibration["recommended"]["t"], color="black", linestyle="--", linewidth=1,
                   label=parameter_line(calibration))
    ax.set(xlabel="min_mask_score t", ylabel="rate", xlim=(0, 1), ylim=(-0.02, 1.02),
           title=f"Refusal calibration ({calibration['negatives']} absent / {calibration['positives']} present)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
