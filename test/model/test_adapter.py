"""LoRA adapters (lisa_ros.model.adapter) on the tiny checkpoint: ``model.adapter`` answers as PEFT's own
``merge_and_unload`` of the same adapter does, at every CPU precision; the merged checkpoint equals it through
the unchanged loader; adapters for another base, or with missing, foreign or unmergeable parts, are refused
naming the file and the fix."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from adapter_factory import write_test_adapter
from lisa_ros.model import adapter as adapters
from lisa_ros.model.adapter import AdapterError, read_adapter
from lisa_ros.model.engine import LisaOptions
from lisa_ros.model.loading import parameter_name
from lisa_ros.tools import cli

pytest.importorskip("peft")
INSTRUCTION = "Please segment the cup."
SHORT = {"max_new_tokens": 16}  # the random LoRA update makes the tiny model ramble


@pytest.fixture(scope="module")
def adapter_dir(tiny_7b, tmp_path_factory):
    return write_test_adapter(tiny_7b.lisa_dir, tmp_path_factory.mktemp("adapters") / "kitchen")


@pytest.fixture(scope="module")
def adapted(make_engine, tiny_7b, adapter_dir):
    engine = make_engine(tiny_7b.lisa_dir, adapter=str(adapter_dir), **SHORT)
    yield engine
    engine.unload()


@pytest.fixture(scope="module")
def peft_merged(make_engine, tiny_7b, adapter_dir):
    """The base engine with the adapter applied by PEFT itself (merge_and_unload) and the trained modules loaded."""
    from peft import PeftModel

    engine = make_engine(tiny_7b.lisa_dir, **SHORT)
    PeftModel.from_pretrained(engine.model.llm, adapter_dir).merge_and_unload()  # merges into model.llm in place
    trained = load_file(adapter_dir / adapters.TRAINED_WEIGHTS)
    result = engine.model.load_state_dict({parameter_name(k): v for k, v in trained.items()}, strict=False)
    assert not result.unexpected_keys
    yield engine
    engine.unload()


def prompt_logits(engine) -> torch.Tensor:
    """(L, vocab) next-token logits of a text prompt (embeddings, every decoder layer, lm_head)."""
    ids = torch.tensor([[engine.tokenizer.bos_id, *engine.tokenizer.encode_text(INSTRUCTION)]])
    with torch.inference_mode():
        hidden = engine.model.decoder_hidden(engine.model.llm.get_input_embeddings()(ids))
        return engine.model.next_token_logits(hidden)[0]


def test_adapter_answers_as_peft_merge_and_unload(adapted, peft_merged, engine, frame):
    merged_state, adapted_state = peft_merged.model.state_dict(), adapted.model.state_dict()
    assert merged_state.keys() == adapted_state.keys()
    for name, tensor in merged_state.items():
        torch.testing.assert_close(adapted_state[name], tensor, msg=name)
    torch.testing.assert_close(prompt_logits(adapted), prompt_logits(peft_merged))
    assert not torch.allclose(prompt_logits(adapted), prompt_logits(engine), atol=1e-2)  # the adapter matters

    answer = adapted.segment(frame, INSTRUCTION, frame_key="adapter")
    assert answer.text == peft_merged.segment(frame, INSTRUCTION, frame_key="adapter").text
    masked = adapted.segment(frame, INSTRUCTION, frame_key="adapter", force_answer="Sure, [SEG] and [SEG].")
    expected = peft_merged.segment(frame, INSTRUCTION, frame_key="adapter", force_answer="Sure, [SEG] and [SEG].")
    assert len(masked.masks) == 2
    assert all((a == b).mean() > 0.999 for a, b in zip(masked.masks, expected.masks, strict=True))
    assert masked.scores == pytest.approx(expected.scores, abs=1e-5)


def test_results_cache_keys_and_diagnostics_name_the_adapter(adapted, engine, adapter_dir, tmp_path):
    identity = read_adapter(adapter_dir).identity
    assert adapted.model_id == "lisa-tiny-7b+kitchen"
    assert adapted.diagnostics() == {"adapter": "kitchen", "adapter_identity": identity}
    assert engine.diagnostics() == {}
    # Semantic mode caches descriptions per checkpoint_id: the adapter's are its own.
    assert adapted.checkpoint_id == f"{engine.checkpoint_id.replace('@', '+kitchen@')}+{identity}"
    copy = shutil.copytree(adapter_dir, tmp_path / "copy")
    assert read_adapter(copy).identity == identity  # the files, not where they lie
    description = json.loads((copy / adapters.DESCRIPTION).read_text())
    (copy / adapters.DESCRIPTION).write_text(json.dumps(description | {"train_samples": 1}))
    assert read_adapter(copy).identity != identity


@pytest.mark.parametrize("precision", ["bf16", "int8", "int4"])
def test_adapter_is_merged_before_the_cast_or_quantization(make_engine, tiny_7b, adapter_dir, peft_merged, engine,
                                                           frame, precision):
    """At bf16 a merged weight is the fp32 merge rounded once; int8 and int4 quantize the merged weight (it is
    nearer to PEFT's merge than to the base's), and the engine answers with masks."""
    pytest.importorskip("bitsandbytes")
    quantized = make_engine(tiny_7b.lisa_dir, precision=precision, adapter=str(adapter_dir), **SHORT)
    try:
        layer = quantized.model.llm.model.layers[0].self_attn.q_proj
        merged = peft_merged.model.llm.model.layers[0].self_attn.q_proj.weight
        base = engine.model.llm.model.layers[0].self_attn.q_proj.weight
        if precision == "bf16":
            assert torch.equal(layer.weight, merged.to(torch.bfloat16))
        else:
            weight = dequantized(layer)
            assert (weight - merged).norm() < 0.5 * (weight - base).norm()
        out = quantized.segment(frame, INSTRUCTION, frame_key="q", force_answer="Sure, [SEG].")
        assert len(out.masks) == 1 and out.masks[0].shape == frame.shape[:2] and math.isfinite(out.scores[0])
        assert quantized.segment(frame, INSTRUCTION, frame_key="q").text
    finally:
        quantized.unload()


def dequantized(layer) -> torch.Tensor:
    """(out, in) fp32 weight of a bitsandbytes layer."""
    import bitsandbytes as bnb

    if isinstance(layer, bnb.nn.Linear4bit):
        return bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
    return layer.weight.data.float() * layer.weight.SCB.float()[:, None] / 127  # LLM.int8: per-row absmax


def test_merged_checkpoint_loads_unchanged_and_equals_the_adapter(make_engine, tiny_7b, adapter_dir, frame,
                                                                 tmp_path, capsys):
    """`lisa-ros merge-adapter`: the loader reads the result as a plain checkpoint (its own folder, CLIP found
    through the rewritten relative vision_tower); merged weights keep the base's dtypes, so at bf16 (the
    released LLM's dtype) the two are the same model, bit for bit."""
    out = tmp_path / "deploy" / "lisa-kitchen"
    assert cli.main(["merge-adapter", str(tiny_7b.lisa_dir), str(adapter_dir), str(out)]) == 0
    assert str(out / "model.safetensors.index.json") in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["lisa_ros_merged_adapter"]["identity"] == read_adapter(adapter_dir).identity
    assert not list(tmp_path.rglob("*.partial"))

    merged = make_engine(out, precision="bf16", **SHORT)
    adapted = make_engine(tiny_7b.lisa_dir, precision="bf16", adapter=str(adapter_dir), **SHORT)
    try:
        assert merged.model_id == "lisa-kitchen"
        merged_state, adapted_state = merged.model.state_dict(), adapted.model.state_dict()
        assert all(torch.equal(merged_state[name], tensor) for name, tensor in adapted_state.items())
        first = merged.segment(frame, INSTRUCTION, frame_key="m", force_answer="Sure, [SEG].")
        second = adapted.segment(frame, INSTRUCTION, frame_key="m", force_answer="Sure, [SEG].")
        assert (first.masks[0] == second.masks[0]).all() and first.scores == second.scores
        assert merged.segment(frame, INSTRUCTION, frame_key="m").text == adapted.segment(
            frame, INSTRUCTION, frame_key="m").text
    finally:
        merged.unload()
        adapted.unload()

    assert cli.main(["merge-adapter", str(tiny_7b.lisa_dir), str(adapter_dir), str(out)]) == 1
    assert f"{out} already exists" in capsys.readouterr().err


def test_rslora_scales_by_the_square_root_of_the_rank(make_engine, tiny_13b, tmp_path):
    from peft import PeftModel

    directory = write_test_adapter(tiny_13b.lisa_dir, tmp_path / "rs", seed=3, use_rslora=True, r=4, lora_alpha=8)
    assert read_adapter(directory).scale == 8 / 2
    adapted = make_engine(tiny_13b.lisa_dir, adapter=str(directory))
    reference = make_engine(tiny_13b.lisa_dir)
    try:
        PeftModel.from_pretrained(reference.model.llm, directory).merge_and_unload()
        for index, layer in enumerate(reference.model.llm.model.layers):
            for name in ("q_proj", "v_proj"):
                torch.testing.assert_close(getattr(adapted.model.llm.model.layers[index].self_attn, name).weight,
                                           getattr(layer.self_attn, name).weight)
    finally:
        adapted.unload()
        reference.unload()


# -- refusals ------------------------------------------------------------------------------------------------------

def edit_json(name: str, **changes):
    def edit(directory):
        path = directory / name
        path.write_text(json.dumps(json.loads(path.read_text()) | changes))
    return edit


def edit_trained(key: str, shape: tuple[int, ...] | None = None):
    """Adds ``key`` (with ``shape``), or changes an existing key's shape."""
    def edit(directory):
        path = directory / adapters.TRAINED_WEIGHTS
        tensors = load_file(path)
        tensors[key] = torch.zeros(shape or tensors[key].shape)
        save_file(tensors, str(path))
    return edit


def truncate(name: str):
    def edit(directory):
        path = directory / name
        path.write_bytes(path.read_bytes()[:-100])
    return edit


REFUSED_AT_CONFIGURE = {
    "missing file": (lambda d: (d / adapters.TRAINED_WEIGHTS).unlink(), ["lacks trained_modules.safetensors"]),
    "not LoRA": (edit_json(adapters.CONFIG, peft_type="IA3"), ["peft_type 'IA3'", "only LoRA"]),
    "DoRA": (edit_json(adapters.CONFIG, use_dora=True), ["DoRA", "not plain LoRA"]),
    "PiSSA": (edit_json(adapters.CONFIG, init_lora_weights="pissa"), ["rewrites the base weights"]),
    "per-module ranks": (edit_json(adapters.CONFIG, rank_pattern={"q_proj": 4}), ["rank_pattern"]),
    "biases": (edit_json(adapters.CONFIG, bias="lora_only"), ["bias='lora_only'"]),
    "vision target": (edit_json(adapters.CONFIG, target_modules=["q_proj", "v_proj", "out_proj"]),
                      ["target_modules", "LLaMA decoder linears"]),
    "rank mismatch": (edit_json(adapters.CONFIG, r=4), ["r=4 of adapter_config.json"]),
    "other format": (edit_json(adapters.DESCRIPTION, format="lisa_ros.adapter/9"), ["'lisa_ros.adapter/9'"]),
    "no base identity": (edit_json(adapters.DESCRIPTION, base_identity=""), ["'base_identity'"]),
    "frozen module trained": (edit_trained("model.mm_projector.weight", (64, 32)),
                              ["model.mm_projector.weight is not a module LISA's recipe trains in full"]),
    "truncated": (truncate(adapters.LORA_WEIGHTS), ["adapter_model.safetensors is corrupted or truncated"]),
}


@pytest.mark.parametrize("case", REFUSED_AT_CONFIGURE)
def test_broken_adapters_are_refused_at_configure_naming_the_problem(adapter_dir, tiny_7b, tmp_path, case):
    edit, fragments = REFUSED_AT_CONFIGURE[case]
    broken = shutil.copytree(adapter_dir, tmp_path / "broken")
    edit(broken)
    with pytest.raises(ValueError, match="option 'adapter'") as refused:
        LisaOptions.from_mapping({"path": str(tiny_7b.lisa_dir), "device": "cpu", "precision": "fp32",
                                  "adapter": str(broken)})
    assert all(f in str(refused.value) for f in fragments), str(refused.value)
    assert str(broken) in str(refused.value) and "Fix:" in str(refused.value)


def test_an_adapter_with_a_wrong_shape_fails_load_naming_the_key(make_engine, tiny_7b, adapter_dir, tmp_path):
    broken = shutil.copytree(adapter_dir, tmp_path / "wide")
    vocab, hidden = load_file(adapter_dir / adapters.TRAINED_WEIGHTS)["lm_head.weight"].shape
    edit_trained("lm_head.weight", (vocab + 1, hidden))(broken)
    with pytest.raises(AdapterError, match=rf"lm_head.weight has shape \({vocab}, {hidden}\) in the base model but "
                                           rf"the adapter gives \({vocab + 1}, {hidden}\)"):
        make_engine(tiny_7b.lisa_dir, adapter=str(broken))


def test_an_adapter_of_another_base_is_refused_naming_both(make_engine, tiny_7b, tiny_13b, adapter_dir, tmp_path):
    from lisa_ros.model.adapter import write_merged_checkpoint
    from lisa_ros.model.checkpoint import weights_identity

    expected = read_adapter(adapter_dir).base_identity
    found = weights_identity(tiny_13b.lisa_dir)
    with pytest.raises(AdapterError) as refused:
        make_engine(tiny_13b.lisa_dir, adapter=str(adapter_dir))
    message = str(refused.value)
    assert f"trained on 'lisa-tiny-7b' (identity {expected})" in message and f"has identity {found}" in message
    assert "Fix: set model.path to the checkpoint the adapter was fine-tuned from" in message
    with pytest.raises(AdapterError, match=found):
        write_merged_checkpoint(tiny_13b.lisa_dir, adapter_dir, tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_a_copy_of_the_base_elsewhere_is_the_adapters_base(tiny_7b, adapter_dir, tmp_path):
    """The robot's copy of the base (another folder, another machine) must accept the workstation's adapter."""
    copy = shutil.copytree(tiny_7b.lisa_dir, tmp_path / "robot" / "cache" / "lisa-tiny-7b")
    read_adapter(adapter_dir).check_base(copy)  # raises AdapterError when refused
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5}))  # another model now
    with pytest.raises(AdapterError, match="was trained on"):
        read_adapter(adapter_dir).check_base(copy)
