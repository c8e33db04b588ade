"""Smoke tests of the benchmark harness (tiny shapes, seconds): the scripts run and write their JSON.

Benchmarks are not tests: no timing is asserted here, only that each script
produces well-formed results (so the GPU command is not dead code on arrival).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.append(str(BENCHMARKS))

pytest.importorskip("torch")


def test_engine_vs_reference_tiny_random(tmp_path, monkeypatch):
    import common
    import engine_vs_reference

    written = []  # every version of the JSON, in order: a run cut off keeps the last one

    def write_and_keep(name, payload, out=None):
        path = write_result(name, payload, out)
        written.append(json.loads(path.read_text()))
        return path

    write_result = common.write_result
    monkeypatch.setattr(common, "write_result", write_and_keep)
    out = tmp_path / "evr.json"
    assert engine_vs_reference.main(["--shape", "tiny-random", "--repeats", "1", "--warmup", "0",
                                     "--long-tokens", "12", "--width", "64", "--height", "48",
                                     "--out", str(out)]) == 0
    assert [(list(w["results"]), w["complete"]) for w in written] == [
        ([], False), (["short"], False), (["short", "long"], False), (["short", "long"], True)]
    assert written[0]["load_s"] > 0 and not list(tmp_path.glob("*.partial"))
    result = json.loads(out.read_text())
    for name, tokens in (("short", 8), ("long", 12)):
        row = result["results"][name]
        assert row["generated_tokens"] == tokens
        assert row["speedup_vs_reference"] > 0 and row["same_frame_speedup"] > 0
        # Same forced tokens, same model: the engine's masks are the reference's.
        assert row["mask_iou_engine_vs_reference"] == [1.0]
        assert row["engine_same_frame_phases_ms"]["sam_encoder"] == 0.0
    assert result["machine_start"]["cpu"]


def test_full_size_smoke(tmp_path):
    import full_size

    out = tmp_path / "fs.json"
    assert full_size.main(["--smoke", "--precisions", "fp32", "int4", "--width", "64", "--height", "48",
                           "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["precision"] for r in rows] == ["fp32", "int4"]
    for row in rows:
        assert set(row["phases_ms"]) == {"preprocess", "clip", "prefill", "decode_per_token", "sam_encoder",
                                         "mask_decode"}
        assert row["end_to_end"]["long"]["tokens"] == 16


def test_semantic_tiny_random(tmp_path):
    import semantic

    out = tmp_path / "semantic.json"
    assert semantic.main(["--shape", "tiny-random", "--sizes", "2", "5", "--repeats", "1", "--keep", "0.4",
                          "--width", "64", "--height", "48", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["results"]) == {"2", "5"}
    for size, row in result["results"].items():
        assert row["batched_over_single"] > 0 and row["separate_over_batched"] > 0
        assert row["kept_by_filter"] == [max(1, round(0.4 * int(size)))]  # the threshold keeps what it was set to
        assert "filter" in row["filtered_phases_ms"] and "filter" not in row["batched_phases_ms"]
    assert result["uptime_start"] and result["describe_one_category_ms"]["n"] == 3


def test_random_shapes_match_the_released_sizes():
    import models

    assert models.LLAMA_SHAPES["7b"]["hidden_size"] == 4096 and models.LLAMA_SHAPES["7b"]["num_hidden_layers"] == 32
    assert models.LLAMA_SHAPES["13b"]["hidden_size"] == 5120 and models.LLAMA_SHAPES["13b"]["num_hidden_layers"] == 40
    assert models.SAM_SHAPES["7b"] is None  # None = SAM ViT-H, what released checkpoints carry
    config_dir = models.shape_checkpoint("7b")
    from lisa_ros.model.checkpoint_config import load_lisa_config

    config = load_lisa_config(config_dir)
    assert config.sam.encoder_embed_dim == 1280 and config.sam.encoder_depth == 32 and not config.is_tiny


@pytest.mark.ros
def test_plumbing_and_stream_run(tmp_path):
    import plumbing
    import stream

    out = tmp_path / "plumbing.json"
    assert plumbing.main(["--sizes", "640x480", "--requests", "3", "--warmup", "1", "--idle-seconds", "0.2",
                           "--out", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["unanswered"] == 0 and row["round_trip_ms"]["n"] == 3
    out = tmp_path / "stream.json"
    assert stream.main(["--minutes", "0.1", "--hz", "10", "--engine-delay", "0.05", "--instruction-period", "1",
                        "--first-instruction-after", "1", "--sample-period", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["instructions_answered"] == result["instructions_sent"] > 0
    assert result["duplicates"] == 0
