"""model.quantization torchao on the CPU (torchao's CPU int4 tinygemm and int8 weight-only kernels): only
the LLaMA decoder's linears are quantized, the [SEG] -> mask path stays fp32, and the refusals name the fix.
Agreement with fp32 is in test_quantization_parity.py."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

pytest.importorskip("torchao")


@pytest.mark.parametrize("precision, weight_type", [("int4", "Int4OpaqueTensor"), ("int8", "Int8Tensor")])
def test_torchao_quantizes_only_the_decoder_linears(make_engine, tiny_7b, frame, precision, weight_type):
    from torchao.utils import TorchAOBaseTensor

    from lisa_ros.model import quantization

    engine = make_engine(tiny_7b.lisa_dir, precision=precision, quantization="torchao")
    try:
        model = engine.model
        decoder = [m for m in model.llm.model.layers.modules() if isinstance(m, nn.Linear)]
        assert len(decoder) == 7 * len(model.llm.model.layers)  # q, k, v, o, gate, up, down
        assert all(isinstance(m, quantization.TorchaoLinear) and type(m.weight).__name__ == weight_type
                   for m in decoder)
        if precision == "int4":  # 64-column groups where the width allows (the tiny hidden size is 64)
            assert {m.weight.block_size[1] for m in decoder} == {64}
        kept = [model.llm.lm_head, model.mm_projector, *model.text_hidden_fcs.modules(),
                *model.visual_model.modules(), *model.vision_tower.modules(), model.llm.model.embed_tokens]
        assert not any(quantization.is_quantized_layer(m) for m in kept)
        assert not any(isinstance(p, TorchAOBaseTensor) for m in kept for p in m.parameters())
        for module in (model.text_hidden_fcs, model.visual_model.prompt_encoder, model.visual_model.mask_decoder):
            assert all(p.dtype == torch.float32 for p in module.parameters())

        out = engine.segment(frame, "Segment the cup.", frame_key=1, force_answer="Sure, [SEG] and [SEG].")  # forced
        assert len(out.masks) == 2 and all(torch.isfinite(torch.tensor(out.scores)))
        assert out.masks[0].shape == frame.shape[:2]
    finally:
        engine.unload()


def test_a_width_without_an_int4_group_is_refused_naming_the_layer(make_engine, tiny_mlp_width_120):
    """down_proj reads the 120-wide MLP: torchao's CPU int4 groups are 32/64/128 columns. Refused at load, before
    a weight is read, rather than left unquantized (torchao's own quantize_ skips such a layer with an info log)."""
    from lisa_ros.core.engine import EngineError

    with pytest.raises(EngineError, match=r"decoder layer 0\.mlp\.down_proj has 120 input columns.*bitsandbytes"):
        make_engine(tiny_mlp_width_120.lisa_dir, precision="int4", quantization="torchao")


@pytest.mark.parametrize("precision", ["int4", "int8"])
def test_a_gpu_older_than_ampere_is_refused_before_loading(monkeypatch, precision):
    """bf16 compute and tinygemm's CUDA kernels need sm_80+. The GPU is emulated: only the device query is replaced;
    the check runs where the loader swaps the layers, before any weight is read or any CUDA memory is touched."""
    from lisa_ros.core.engine import EngineError
    from lisa_ros.model import quantization

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    decoder = nn.Sequential(nn.Linear(64, 64, device="meta"))
    with pytest.raises(EngineError, match=r"Tesla T4 is 7\.5.*model\.quantization to bitsandbytes"):
        quantization.replace_linears(decoder, precision, torch.bfloat16, "torchao", torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 7))  # Jetson Orin
    assert quantization.replace_linears(decoder, precision, torch.bfloat16, "torchao", torch.device("cuda")) == 1
    expected = "Int4WeightOnlyConfig" if precision == "int4" else "Int8WeightOnlyConfig"
    assert type(decoder[0].torchao_config).__name__ == expected
    if precision == "int4":
        assert decoder[0].torchao_config.int4_packing_format == "tile_packed_to_4d"  # CUDA's packing, not the CPU's


def test_bitsandbytes_and_fp32_need_no_torchao_and_torchao_without_it_names_the_fix(tiny_7b):
    """A fresh interpreter where torchao cannot be imported (as on a machine without requirements/torchao.txt):
    transformers, fp32 and bitsandbytes int4 load as before; model.quantization torchao fails at load with the fix."""
    code = (
        "import sys\n"
        "sys.modules['torchao'] = None  # import torchao raises ImportError; transformers sees it as absent\n"
        "from lisa_ros.core.engine import EngineError\n"
        "from lisa_ros.model.engine import LisaEngine\n"
        f"base = {{'path': {str(tiny_7b.lisa_dir)!r}, 'device': 'cpu'}}\n"
        "for precision in ('fp32', 'int4'):\n"
        "    engine = LisaEngine.from_options(dict(base, precision=precision))\n"
        "    engine.load()\n"
        "    engine.unload()\n"
        "    print(precision, 'loaded')\n"
        "try:\n"
        "    LisaEngine.from_options(dict(base, precision='int4', quantization='torchao')).load()\n"
        "except EngineError as error:\n"
        "    print('refused:', error)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), HF_HUB_OFFLINE="1")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "fp32 loaded" in run.stdout and "int4 loaded" in run.stdout, run.stdout
    assert "refused: model.quantization is 'torchao'" in run.stdout, run.stdout
    assert "pip install -r requirements/torchao.txt" in run.stdout
