"""benchmarks/gpu_quick.sh, the short GPU check: its CPU dry run (tiny shapes) runs every step and
writes every JSON, and a step over its time budget does not stop the next one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_quick.sh"

pytest.importorskip("torch")


def quick(out_dir: Path, **budgets: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable, **budgets)
    return subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out-dir", str(out_dir), "--note", "dry run"],
                          env=env, capture_output=True, text=True, timeout=3600)


def test_dry_run_measures_every_figure(tmp_path):
    run = quick(tmp_path, STEP1_S="1800", STEP2_S="900")  # budgets for a loaded CPU, not an H100
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    evr = json.loads((tmp_path / "engine_vs_reference_tiny-random_int4_cpu.json").read_text())
    assert evr["complete"] and evr["precision"] == "int4" and evr["note"] == "dry run"
    assert [row["generated_tokens"] for row in evr["results"].values()] == [8, 12]
    for row in evr["results"].values():
        assert row["reference_ms"]["median"] > 0 and row["engine_same_frame_ms"]["median"] > 0
        assert row["engine_same_frame_phases_ms"]["sam_encoder"] == 0.0 and row["mask_iou_engine_vs_reference"] == [1.0]
    sam = json.loads((tmp_path / "sam_attention_cpu_fp32_tiny.json").read_text())
    assert sam["sam"] == "tiny" and sam["rows"]["tiny_encoder_1024"]["max_abs_difference"] < 1e-3
    assert not list(tmp_path.glob("*.partial"))


def test_a_step_over_its_budget_does_not_stop_the_next(tmp_path):
    run = quick(tmp_path, STEP1_S="1", STEP2_S="900")
    assert run.returncode == 1
    assert "engine_vs_reference.py ended with status 124" in run.stdout
    assert (tmp_path / "sam_attention_cpu_fp32_tiny.json").is_file()
