"""8-bit and 4-bit (bitsandbytes quantizes on the CPU here): they load and run, the LLaMA
decoder is quantized, and SAM, the projector, lm_head and the [SEG] head are not."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

pytest.importorskip("bitsandbytes")


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_quantized_load_and_segment(make_engine, tiny_7b, frame, precision):
    import bitsandbytes as bnb

    engine = make_engine(tiny_7b.lisa_dir, precision=precision)
    model = engine.model
    expected = bnb.nn.Linear8bitLt if precision == "int8" else bnb.nn.Linear4bit
    decoder = [m for m in model.llm.model.layers.modules() if isinstance(m, nn.Linear)]
    assert decoder and all(isinstance(m, expected) for m in decoder)
    weight_dtype = torch.int8 if precision == "int8" else torch.uint8
    assert all(m.weight.dtype == weight_dtype for m in decoder)

    kept = [model.llm.lm_head, model.mm_projector, *model.text_hidden_fcs.modules(), *model.visual_model.modules(),
            *model.vision_tower.modules()]
    assert not any(isinstance(m, (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit)) for m in kept)
    for module in (model.text_hidden_fcs, model.visual_model.prompt_encoder, model.visual_model.mask_decoder):
        assert all(p.dtype == torch.float32 for p in module.parameters())

    out = engine.segment(frame, "Segment the cup.", frame_key=1, force_answer="Sure, [SEG] and [SEG].")  # forced
    assert len(out.masks) == 2 and all(torch.isfinite(torch.tensor(out.scores)))
    assert out.masks[0].shape == frame.shape[:2]
    engine.unload()


def test_full_precision_load_never_imports_bitsandbytes(tiny_7b):
    """bitsandbytes only for int8/int4: its import costs start-up and shutdown time and, on avx512_bf16
    CPUs, logs a spurious "pip install kernels" warning. A fresh interpreter, so nothing imported it before."""
    code = (
        "import sys\n"
        "from lisa_ros.model.engine import LisaEngine\n"
        f"options = {{'path': {str(tiny_7b.lisa_dir)!r}, 'device': 'cpu', 'precision': 'fp32'}}\n"
        "engine = LisaEngine.from_options(options)\n"
        "engine.load()\n"
        "engine.unload()\n"
        "print('bitsandbytes imported:', 'bitsandbytes' in sys.modules)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), HF_HUB_OFFLINE="1")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "bitsandbytes imported: False" in run.stdout, run.stdout
    assert "kernels" not in run.stderr


def test_int4_widths_the_packed_cpu_path_cannot_take_keep_the_unpacked_kernels(make_engine, tiny_mlp_width_120,
                                                                                frame, monkeypatch):
    """On avx512_bf16 CPUs bitsandbytes repacks each 4-bit weight in blocks of 32 output rows and 64-column
    scale blocks on its first forward: it asserted (a bare AssertionError) on 120 outputs (gate/up) and
    failed a reshape on 120 inputs (down; seen on this project's avx512_bf16 VM). That CPU is emulated while the layers
    are built (bitsandbytes reads the CPU's ability there); only the narrow layers are run, since the
    packed kernels themselves need the real instructions."""
    import bitsandbytes as bnb
    import bitsandbytes.nn.modules as bnb_modules

    with monkeypatch.context() as patch:
        patch.setattr(bnb_modules, "has_avx512bf16", lambda: True)
        engine = make_engine(tiny_mlp_width_120.lisa_dir, precision="int4")
    try:
        layers = {n: m for n, m in engine.model.llm.model.layers.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
        narrow = {n: m for n, m in layers.items() if m.out_features % 32 or m.in_features % 64}
        assert narrow and all(n.endswith(("gate_proj", "up_proj", "down_proj")) for n in narrow)
        assert any(n.endswith("down_proj") for n in narrow)
        assert all(m.support_avx512bf16_for_cpu for n, m in layers.items() if n not in narrow)  # packed as before
        for name, layer in narrow.items():
            x = torch.randn(3, layer.in_features)
            weight = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
            torch.testing.assert_close(layer(x), x @ weight.t(), atol=1e-4, rtol=1e-4, msg=name)
    finally:
        engine.unload()
    # This CPU as it is (packed path or not): the whole model runs.
    engine = make_engine(tiny_mlp_width_120.lisa_dir, precision="int4")
    try:
        out = engine.segment(frame, "Segment the cup.", frame_key=1, force_answer="Sure, [SEG].")  # forced
        assert out.found and all(torch.isfinite(torch.tensor(out.scores)))
    finally:
        engine.unload()
