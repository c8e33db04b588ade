"""Smoke test of benchmarks/tracking.py: its quick mode runs every part and writes well-formed JSON.

No timing is asserted (benchmarks are not tests); the figures' plumbing is: the runner processed
frames at the offered rate's order of magnitude, tracked with a sane IoU, and located in 3D.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[2] / "benchmarks"))


def test_tracking_benchmark_quick(tmp_path):
    import tracking

    out = tmp_path / "tracking.json"
    assert tracking.main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["machine_start"]["load_average_1_5_15"] and result["machine_end"]["cpu"]
    plain, with_depth = result["runner"]
    assert plain["frames_processed"] > 0 and plain["iou_median"] > 0.9 and not plain["lost"]
    assert with_depth["with_depth"] and with_depth["all_located"] is True
    occlusion = result["occlusion"]
    assert len(occlusion["scenes"]) == occlusion["summary"]["scenes"] == 2
    for scene in occlusion["scenes"]:  # an 8 px/frame bar over the whole object: reported lost before it is hidden
        assert scene["lost"] and 0 < scene["covered_at_loss"] < 1 and scene["iou_last_tracked"] > 0.9
    steps = [row["step"] for row in result["depth"]]
    assert any("decode 16UC1" in s for s in steps) and any("plumb_bob, with points" in s for s in steps)
    assert all(row["ms"]["median"] > 0 for row in result["depth"])
