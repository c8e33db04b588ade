"""Loading the released layout (both token layouts, pickles and safetensors), and every
bad-checkpoint case failing with an error that names the file and the fix."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from lisa_ros.core.engine import EngineError
from lisa_ros.model.checkpoint import convert_to_safetensors, find_weight_files

FORCED = "Sure, [SEG]."


def copy_checkpoint(checkpoint, tmp_path):
    """A writable copy of a tiny LISA dir next to its CLIP dir (the config points at ../clip-vit-tiny)."""
    shutil.copytree(checkpoint.clip_dir, tmp_path / checkpoint.clip_dir.name)
    return shutil.copytree(checkpoint.lisa_dir, tmp_path / checkpoint.lisa_dir.name)


def test_13b_layout_loads_and_segments(tiny_13b, frame, make_engine):
    engine = make_engine(tiny_13b.lisa_dir)
    assert engine.tokenizer.seg_id == engine.tokenizer.sp.GetPieceSize()  # [SEG] first in the 13B layout
    out = engine.segment(frame, "Segment the cup.", frame_key="f", force_answer=FORCED)
    assert len(out.masks) == 1 and out.masks[0].shape == frame.shape[:2]
    engine.unload()
    assert engine.model is None


def test_safetensors_preferred_and_identical(tiny_7b, engine, frame, tmp_path, make_engine):
    directory = copy_checkpoint(tiny_7b, tmp_path)
    convert_to_safetensors(directory, directory)
    assert find_weight_files(directory).format == "safetensors"
    for shard in directory.glob("*.bin"):
        shard.unlink()  # proves the pickles are not read any more
    converted = make_engine(directory)
    expected = engine.segment(frame, "Segment the cup.", frame_key="st", force_answer=FORCED)
    got = converted.segment(frame, "Segment the cup.", frame_key="st", force_answer=FORCED)
    assert got.text == expected.text and got.scores == expected.scores
    assert all((a == b).all() for a, b in zip(got.masks, expected.masks))
    for name, param in engine.model.state_dict().items():
        assert torch.equal(param, converted.model.state_dict()[name]), name


def _edit_config(directory, **changes):
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _missing_shard(d):
    (d / "pytorch_model-00002-of-00002.bin").unlink()


def _wrong_shapes(d):
    _edit_config(d, intermediate_size=96)


def _truncated_shard(d):
    shard = d / "pytorch_model-00001-of-00002.bin"
    shard.write_bytes(shard.read_bytes()[:5000])


def _pickled_code(d):
    torch.save({"model.norm.weight": torch.ones(4), "payload": np.dtype}, d / "pytorch_model-00002-of-00002.bin")


def _missing_tokenizer(d):
    (d / "tokenizer.model").unlink()


def _not_lisa(d):
    _edit_config(d, architectures=["LlamaForCausalLM"], model_type="llama")


def _no_seg_token(d):
    tokens = json.loads((d / "added_tokens.json").read_text())
    del tokens["[SEG]"]
    (d / "added_tokens.json").write_text(json.dumps(tokens))


def _missing_weights(d):
    index = json.loads((d / "pytorch_model.bin.index.json").read_text())
    shard = d / "pytorch_model-00002-of-00002.bin"
    state = torch.load(shard, weights_only=True)
    del state["model.text_hidden_fcs.0.2.weight"]
    torch.save(state, shard)
    del index["weight_map"]["model.text_hidden_fcs.0.2.weight"]


def _corrupt_config(d):
    (d / "config.json").write_text("{not json")


@pytest.mark.parametrize("damage, names, fix, at_configure", [
    (_missing_shard, "pytorch_model-00002-of-00002.bin", "re-download", True),
    (_wrong_shapes, "pytorch_model-00001-of-00002.bin", "re-download", False),
    (_truncated_shard, "pytorch_model-00001-of-00002.bin", "download it again", False),
    (_pickled_code, "pytorch_model-00002-of-00002.bin", "weights_only", False),
    (_missing_tokenizer, "tokenizer.model", "copy tokenizer.model", True),
    (_not_lisa, "config.json", "not LISA", False),
    (_no_seg_token, "added_tokens.json", "not a LISA tokenizer", False),
    (_missing_weights, "text_hidden_fcs.0.2.weight", "re-download", False),
    (_corrupt_config, "config.json", "not valid JSON", False),
])
def test_bad_checkpoint_errors_name_file_and_fix(tiny_7b, tmp_path, damage, names, fix, at_configure, make_engine):
    """A missing file is found by the option checks (configure names it with every other problem); what
    needs the files read is found at load."""
    directory = copy_checkpoint(tiny_7b, tmp_path)
    damage(directory)
    with pytest.raises(ValueError if at_configure else EngineError) as caught:
        make_engine(directory)
    message = str(caught.value)
    assert names in message and "Fix:" in message and fix in message, message


def test_clip_not_found_offline(tiny_7b, tmp_path, make_engine):
    with pytest.raises(EngineError) as caught:
        make_engine(tiny_7b.lisa_dir, vision_tower="openai/clip-vit-large-patch14", local_files_only=True,
                    cache_dir=str(tmp_path))
    message = str(caught.value)
    assert "openai/clip-vit-large-patch14" in message and "offline" in message
    assert "model.vision_tower" in message and "hf download" in message


def test_hub_id_not_cached_offline(tmp_path, make_engine):
    with pytest.raises(EngineError) as caught:
        make_engine("xinlai/LISA-7B-v1", cache_dir=str(tmp_path))  # HF_HUB_OFFLINE=1 from conftest
    assert "xinlai/LISA-7B-v1" in str(caught.value) and "model.path" in str(caught.value)


def test_missing_directory_is_named_by_the_option_checks_and_at_load(tmp_path, make_engine):
    from lisa_ros.model.engine import LisaEngine, LisaOptions

    with pytest.raises(ValueError, match="does not exist"):
        make_engine(tmp_path / "nowhere")
    unchecked = LisaEngine(LisaOptions(path=str(tmp_path / "nowhere"), device="cpu", precision="fp32"))
    with pytest.raises(EngineError, match="does not exist"):  # options built without the checks
        unchecked.load()


def test_loads_from_hub_cache_layout(tiny_7b, tmp_path, frame, make_engine):
    """An HF id resolves through the hub cache (offline): snapshots/<commit>/ with refs/main."""
    repo = tmp_path / "hub" / "models--xinlai--LISA-7B-v1"
    commit = "0" * 40
    shutil.copytree(tiny_7b.lisa_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    engine = make_engine("xinlai/LISA-7B-v1", cache_dir=str(tmp_path / "hub"), vision_tower=str(tiny_7b.clip_dir))
    assert engine.model_id == "xinlai/LISA-7B-v1"
    assert engine.segment(frame, "Segment the cup.", frame_key=1, force_answer=FORCED).found
