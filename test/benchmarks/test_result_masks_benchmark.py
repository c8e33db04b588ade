"""Smoke test of benchmarks/result_masks.py: it builds both encodings the node's way, serialises them as DDS does
and decodes them with the README's code; the figures' plumbing is checked, not the timings."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parents[2] / "benchmarks"))
pytestmark = pytest.mark.ros


def test_result_masks_benchmark_writes_sizes_of_both_encodings(tmp_path):
    import result_masks

    out = tmp_path / "result_masks.json"
    assert result_masks.main(["--repeats", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["command"] and result["masks"] == 16 and result["frame"] == "1920x1080"
    rows = {(r["mask_set"], r["encoding"]): r for r in result["rows"]}
    assert set(rows) == {(s, e) for s in ("objects", "ragged") for e in ("raw", "png")}
    assert all(r["pixel_exact"] for r in rows.values())
    for mask_set in ("objects", "ragged"):
        assert rows[mask_set, "raw"]["serialized_bytes"] > 16 * 1920 * 1080  # a byte per pixel, plus headers
        assert rows[mask_set, "png"]["serialized_bytes"] < rows[mask_set, "raw"]["serialized_bytes"] / 20
