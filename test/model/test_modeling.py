"""Building blocks: CLIP's selected layer, bf16 placement, the CLI tools."""
from __future__ import annotations

import json

import torch

from lisa_ros.model.preprocess import clip_pixels
from lisa_ros.model.tokenization import LisaTokenizer


def test_truncated_clip_equals_hidden_state_minus_two(engine, tiny_7b, frame):
    from transformers import CLIPVisionModel

    full = CLIPVisionModel.from_pretrained(tiny_7b.clip_dir).eval()
    pixels = clip_pixels(frame)
    with torch.no_grad():
        expected = full(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
        got = engine.model.vision_tower(pixel_values=pixels).last_hidden_state
    assert len(engine.model.vision_tower.encoder.layers) == full.config.num_hidden_layers - 1
    torch.testing.assert_close(got, expected)


def test_bf16_keeps_the_seg_path_fp32(make_engine, tiny_13b, frame):
    engine = make_engine(tiny_13b.lisa_dir, precision="bf16")
    model = engine.model
    assert model.llm.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert model.visual_model.image_encoder.patch_embed.proj.weight.dtype == torch.bfloat16
    for module in (model.text_hidden_fcs, model.visual_model.prompt_encoder, model.visual_model.mask_decoder):
        assert all(p.dtype == torch.float32 for p in module.parameters())
    out = engine.segment(frame, "Segment the cup.", frame_key=1, force_answer="Sure, [SEG].")  # forced
    assert len(out.masks) == 1 and out.masks[0].shape == frame.shape[:2]
    engine.unload()


def test_cli_make_tiny_checkpoint_and_convert(tmp_path, capsys):
    from lisa_ros.tools.cli import main

    assert main(["make-tiny-checkpoint", str(tmp_path), "--layout", "13b", "--seed", "4", "--train-steps", "0",
                 "--legacy", "absent"]) == 0
    lisa_dir = tmp_path / "lisa-tiny-13b"
    assert "legacy" not in json.loads((lisa_dir / "tokenizer_config.json").read_text())
    assert LisaTokenizer.from_directory(lisa_dir).legacy  # transformers 4.31's default
    config = json.loads((lisa_dir / "config.json").read_text())
    assert config["architectures"] == ["LISAForCausalLM"] and "lisa_ros_tiny_sam" in config
    assert "meaningless" in config["lisa_ros_note"]
    assert sorted(p.name for p in lisa_dir.glob("pytorch_model*")) == [
        "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json"]
    assert (tmp_path / "clip-vit-tiny" / "config.json").is_file()
    assert main(["convert", str(lisa_dir), "--out", str(tmp_path / "converted")]) == 0
    converted = tmp_path / "converted"
    assert (converted / "model.safetensors.index.json").is_file() and (converted / "tokenizer.model").is_file()
    assert not list(converted.glob("*.bin"))
    assert main(["convert", str(converted)]) == 1
    assert "already holds safetensors" in capsys.readouterr().err


def test_load_takes_its_weights_from_an_injected_tensor_source(tiny_7b, frame):
    """Benchmarks fill full-size shapes with random weights through ``LisaEngine(tensors=...)``, where they
    used to patch the engine module's loader; every tensor still goes through the loader's placement."""
    from lisa_ros.model.engine import LisaEngine, LisaOptions
    from lisa_ros.model.loading import checkpoint_tensors

    seen = []

    def zeroed_projector(model, state, placement):
        for name, tensor in checkpoint_tensors(tiny_7b.lisa_dir, tiny_7b.clip_dir)(model, state, placement):
            seen.append(name)
            yield name, torch.zeros_like(tensor) if name.startswith("mm_projector.") else tensor

    engine = LisaEngine(LisaOptions(path=str(tiny_7b.lisa_dir), device="cpu", precision="fp32",
                                    local_files_only=True), tensors=zeroed_projector)
    engine.load()
    assert set(seen) == set(engine.model.state_dict())
    features = engine.model.clip_features(clip_pixels(frame, engine.model.vision_tower.config.image_size))
    assert features.abs().max() == 0  # the source's tensors, not the files'
    engine.unload()
