"""Engine options: exact keys, types and combinations, errors naming the option."""
from __future__ import annotations

import pytest

from lisa_ros.core.engine import EngineError, create_engine
from lisa_ros.model.engine import LisaEngine, LisaOptions


def test_defaults_and_factory():
    engine = create_engine("lisa", {})
    assert isinstance(engine, LisaEngine)
    assert engine.model_id == "xinlai/LISA-7B-v1"
    assert engine.options == LisaOptions()
    assert LisaOptions().clip_preprocess == "center_crop" and LisaOptions().max_new_tokens == 512


def test_fields_and_defaults_are_the_declared_options():
    """LisaOptions used to repeat the option list (a new field was never a node parameter) and defaulted
    precision to bf16 while config/lisa.yaml and the README said int4."""
    import dataclasses

    from lisa_ros.core.engine_options import LISA_OPTIONS

    assert {f.name: f.default for f in dataclasses.fields(LisaOptions)} == {
        name: default for name, (default, _) in LISA_OPTIONS.items()}
    assert LisaOptions().precision == "int4"
    assert LisaOptions.__module__ == "lisa_ros.model.engine"


@pytest.mark.parametrize("options, named", [
    ({"pathh": "x"}, "pathh"),
    ({"precision": "fp8"}, "precision"),
    ({"precision": "int4", "quantization": "gptq"}, "quantization"),
    ({"device": "gpu"}, "device"),
    ({"device": "cpu", "precision": "fp16"}, "fp16"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_new_tokens": True}, "max_new_tokens"),
    ({"frame_cache_size": -1}, "frame_cache_size"),
    ({"local_files_only": 1}, "local_files_only"),
    ({"compile": "true"}, "compile"),
    ({"clip_preprocess": "stretch"}, "clip_preprocess"),
    ({"path": " "}, "path"),
    ({"max_history_turns": "2"}, "max_history_turns"),
])
def test_bad_options_name_the_option(options, named):
    with pytest.raises(ValueError, match=named):
        LisaEngine.from_options(options)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8", "int4"])
@pytest.mark.parametrize("quantization", ["bitsandbytes", "torchao"])
def test_cpu_precisions_accepted(precision, quantization):
    assert LisaEngine.from_options({"device": "cpu", "precision": precision,
                                    "quantization": quantization}).options.quantization == quantization


def test_segment_before_load_is_refused():
    import numpy as np

    engine = LisaEngine.from_options({"device": "cpu", "precision": "fp32"})
    with pytest.raises(EngineError, match="load"):
        engine.segment(np.zeros((4, 4, 3), np.uint8), "x", frame_key=0)


def test_cuda_without_gpu_is_an_engine_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(EngineError, match="model.device"):
        LisaEngine.from_options({"device": "cuda", "precision": "int4"}).load()


def test_model_package_never_imports_rclpy():
    import subprocess
    import sys

    code = ("import sys, lisa_ros.model.engine, lisa_ros.model.tiny, lisa_ros.tools.convert_checkpoint; "
            "assert 'rclpy' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
