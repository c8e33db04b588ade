"""benchmarks/report.py's side-by-side table of precisions and 4-bit backends (what gpu_quick.sh's steps 1-4
write), and engine_vs_reference's result names and decode tokens/s."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.append(str(BENCHMARKS))

import common  # noqa: E402
import report  # noqa: E402


def result(precision: str, options: dict, started: str, shape: str = "7b", device: str = "cuda") -> dict:
    answer = {"engine_ms": {"median": 120.0}, "engine_same_frame_ms": {"median": 60.0}, "decode_tokens_per_s": 140.0,
              "generated_tokens": 8}
    return {"shape": shape, "device": device, "precision": precision, "engine_options": options, "load_s": 30.0,
            "results": {"short": answer, "long": dict(answer, decode_tokens_per_s=150.0, generated_tokens=64)},
            "gpu_weights_mb": 4000.0, "gpu_peak_engine_mb": 6000.0,
            "machine_start": {"date_utc": started, "gpu": "NVIDIA H100", "torch": "2.11.0"}}


def test_the_backends_of_one_shape_and_device_side_by_side(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    assert "No result yet" in report.backends()
    runs = {"int4_cuda": result("int4", {}, "2026-12-08 10:00:00"),
            "int4_torchao_compiled_cuda": result("int4", {"quantization": "torchao", "compile": True},
                                                 "2026-12-08 10:02:00"),
            "bf16_cuda": result("bf16", {}, "2026-12-08 10:04:00"),
            "mid_cpu": result("fp32", {}, "2026-12-01 10:00:00", shape="mid", device="cpu")}  # alone: no table
    for name, payload in runs.items():
        (tmp_path / f"engine_vs_reference_{name}.json").write_text(json.dumps(payload))
    text = report.backends()
    lines = [line for line in text.splitlines() if line.startswith("| ") and "ms" not in line]
    assert [line.split(" | ")[0] for line in lines] == ["| int4 bitsandbytes", "| int4 torchao compiled", "| bf16"]
    assert "#### 7b on cuda" in text and "mid on cpu" not in text and "decode >= 100 tokens/s" in text
    assert "| 8-token answer ms |" in text and "| decode tokens/s (64-token) |" in text
    assert "Machine: 2026-12-08 10:00:00 UTC" in text  # the run's first result
    assert "| 30.0 | 120.0 | 60.0 | 140.0 | 150.0 | 4000.0 | 6000.0 | 2026-12-08 10:02:00 |" in text


def test_result_names_and_decode_rate_follow_the_engine_options():
    import engine_vs_reference as evr

    args = argparse.Namespace(shape="7b", precision="int4", device="cuda:0", quantization="torchao", compile=True)
    assert evr.result_name(args) == "engine_vs_reference_7b_int4_torchao_compiled_cuda"
    assert evr.engine_options(args) == {"quantization": "torchao", "compile": True}
    plain = argparse.Namespace(shape="tiny", precision="fp32", device="cpu", quantization=None, compile=False)
    assert evr.result_name(plain) == "engine_vs_reference_tiny_fp32_cpu" and evr.engine_options(plain) == {}
    assert evr.decode_tokens_per_s(8, 70.0) == 100.0  # 7 decoder steps after the prefill in 70 ms
    assert evr.decode_tokens_per_s(1, 5.0) is None and evr.decode_tokens_per_s(8, 0.0) is None
