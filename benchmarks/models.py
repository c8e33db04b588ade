"""Models for the benchmarks: the tiny checkpoint, and LISA-shaped models with random weights.

Compute does not depend on weight values, so LISA-7B / 13B shapes are benchmarked
without their weights: a checkpoint directory holding only ``config.json`` (the
released fields and sizes), the tokenizer files and a CLIP ``config.json`` is
written under ``benchmarks/.cache/shapes/``, and ``LisaEngine.load`` runs its real
path (config validation, tokenizer, placement, quantization, SAM stream on CUDA)
with a tensor source of random tensors made directly on the target device
(``LisaEngine(options, tensors=random_tensors())``) instead of the shard reader.
Quantized layers get their random fp16 weights through the engine's own
``quantization.quantized_weight`` (NF4 double-quant / LLM.int8), so memory and kernels
are those of a loaded checkpoint. No 14 GB file is written.

The tokenizer is the tiny checkpoint's (a 600-piece sentencepiece model with the
7B added-token layout): the prompt is a few tokens shorter or longer than with
LLaMA's tokenizer; every result records the prompt length it ran with.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import CLIPVisionConfig

from common import CACHE
from lisa_ros.model import quantization, tiny
from lisa_ros.model.engine import LisaEngine, LisaOptions
from lisa_ros.model.loading import Placement, TensorSource
from lisa_ros.model.modeling import LisaModel

# LLaMA dims of the released checkpoints (LISA-7B-v1: LLaMA-1 7B; LISA-13B-llama2-v1: LLaMA-2 13B).
LLAMA_SHAPES: dict[str, dict[str, Any]] = {
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, vocab_size=32004, max_position_embeddings=2048, rms_norm_eps=1e-6),
    "13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40,
                num_key_value_heads=40, vocab_size=32003, max_position_embeddings=4096, rms_norm_eps=1e-5),
    # CPU-sized: big enough that recomputing 300+ positions per token (the reference) shows.
    "mid": dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8,
                num_key_value_heads=8, vocab_size=32004, max_position_embeddings=2048, rms_norm_eps=1e-6),
    # The tiny checkpoint's dims (random weights, no training: a smoke shape).
    "tiny-random": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=4, vocab_size=608, max_position_embeddings=2048, rms_norm_eps=1e-6),
}
# openai/clip-vit-large-patch14 at 224 (layer -2 is used: 23 of 24 layers run).
CLIP_L14 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
CLIP_SHAPES = {
    "7b": CLIP_L14, "13b": CLIP_L14,
    "mid": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=4,
                image_size=224, patch_size=14, projection_dim=256, hidden_act="quick_gelu"),
    "tiny-random": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                        image_size=224, patch_size=14, projection_dim=32, hidden_act="quick_gelu"),
}
# None = SAM ViT-H at 1024 (what every released checkpoint carries); else a small SAM (lisa_ros_tiny_sam).
SAM_SHAPES: dict[str, dict[str, Any] | None] = {
    "7b": None, "13b": None,
    "mid": {"encoder_embed_dim": 64, "encoder_depth": 2, "encoder_num_heads": 2,
            "encoder_global_attn_indexes": [1], "decoder_mlp_dim": 512, "decoder_num_heads": 8,
            "iou_head_hidden_dim": 256},
    "tiny-random": tiny.TINY_SAM,
}
OUT_DIM = {"7b": 256, "13b": 256, "mid": 256, "tiny-random": 32}
RANDOM_SHAPES = tuple(LLAMA_SHAPES)


def tiny_checkpoint(directory: str | Path | None = None) -> Path:
    """The trained tiny checkpoint (7B layout), written once (about a minute) under the cache.

    The cache folder is named after a hash of ``lisa_ros/model/tiny.py``: a changed
    writer gives a fresh checkpoint, never a stale one.
    """
    digest = hashlib.sha1(Path(tiny.__file__).read_bytes()).hexdigest()[:10]
    root = Path(directory) if directory else CACHE / f"tiny-{digest}"
    lisa_dir = root / "lisa-tiny-7b"
    if not (lisa_dir / "pytorch_model.bin.index.json").is_file():
        tiny.write_tiny_checkpoint(root, "7b", seed=0)
    return lisa_dir


def shape_checkpoint(shape: str) -> Path:
    """A weightless checkpoint directory for a random-weight shape: config.json + tokenizer + CLIP config."""
    if shape not in LLAMA_SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {RANDOM_SHAPES}")
    root = CACHE / "shapes"
    lisa_dir, clip_dir = root / f"lisa-{shape}", root / f"clip-{shape}"
    lisa_dir.mkdir(parents=True, exist_ok=True)
    clip_dir.mkdir(parents=True, exist_ok=True)
    sp_model, added = tiny._train_tokenizer("7b")
    tiny._write_tokenizer(lisa_dir, sp_model, added)
    config = tiny._lisa_config("7b", LLAMA_SHAPES[shape]["vocab_size"])
    config.update(LLAMA_SHAPES[shape])
    config.update(_name_or_path=f"lisa-ros/random-{shape}", mm_hidden_size=CLIP_SHAPES[shape]["hidden_size"],
                  out_dim=OUT_DIM[shape], vision_tower=f"../clip-{shape}", mm_vision_tower=f"../clip-{shape}",
                  lisa_ros_note="random weights, for benchmarks only (benchmarks/models.py)")
    config.pop("lisa_ros_tiny_sam")
    if SAM_SHAPES[shape] is not None:
        config["lisa_ros_tiny_sam"] = SAM_SHAPES[shape]
    if shape == "13b":
        config.update(pretraining_tp=1)
    (lisa_dir / "config.json").write_text(json.dumps(config, indent=2))
    CLIPVisionConfig(**CLIP_SHAPES[shape]).save_pretrained(clip_dir)
    return lisa_dir


def _random_value(model: nn.Module, name: str, like: torch.Tensor, device: torch.device, dtype: torch.dtype,
                  generator: torch.Generator) -> torch.Tensor:
    if like.device.type != "meta":  # a real buffer built at construction (e.g. SAM's random PE matrix)
        return like
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    is_norm = isinstance(module, nn.LayerNorm) or "Norm" in type(module).__name__
    if leaf == "bias":
        return torch.zeros(like.shape, device=device, dtype=dtype)
    if is_norm and leaf == "weight":
        return torch.ones(like.shape, device=device, dtype=dtype)
    value = torch.empty(like.shape, device=device, dtype=dtype)
    return value.normal_(0.0, 0.02, generator=generator)


def random_tensors(seed: int = 0) -> TensorSource:
    """A ``lisa_ros.model.loading`` tensor source: random weights of the model's shapes, made on the device.

    ``load_lisa_model`` does the rest as for a checkpoint: construction on the meta device,
    the quantized-layer swap, placement (dtype per module, fp32 for the [SEG] -> mask path).
    """

    def source(model: LisaModel, state, placement: Placement):
        generator = torch.Generator(device=placement.device).manual_seed(seed)
        for name, like in state.items():
            module = model.get_submodule(name.rpartition(".")[0])
            quantized = quantization.is_quantized_layer(module) and name.endswith(".weight")
            dtype = placement.compute_dtype if quantized else placement.dtype_for(name)
            if not like.is_floating_point():
                dtype = like.dtype
            value = _random_value(model, name, like, placement.device, dtype, generator)
            if quantized:
                # As from a checkpoint file: bitsandbytes quantizes on the host -> device move (Int8Params
                # only quantizes when the data starts on the CPU).
                value = value.cpu()
            yield name, value
        if placement.device.type == "cuda":
            torch.cuda.synchronize(placement.device)

    return source


def load_engine(shape: str, precision: str, device: str, checkpoint: str | Path | None = None,
                **options: Any) -> LisaEngine:
    """A loaded ``LisaEngine``: ``shape`` "tiny" = the trained tiny checkpoint; others = random weights."""
    defaults = dict(max_history_turns=0, local_files_only=True, max_new_tokens=512)
    defaults.update(options)
    if shape == "tiny":
        path = Path(checkpoint) if checkpoint else tiny_checkpoint()
        engine = LisaEngine(LisaOptions(path=str(path), precision=precision, device=device, **defaults))
        engine.load()
        return engine
    engine = LisaEngine(LisaOptions(path=str(shape_checkpoint(shape)), precision=precision, device=device,
                                    **defaults), tensors=random_tensors())
    engine.load()
    return engine


def parameter_count(model: nn.Module) -> dict[str, float]:
    """Millions of parameters per part (quantized weights counted by their logical size)."""
    def count(module: nn.Module) -> float:
        total = 0
        for sub in module.modules():
            if quantization.is_quantized_layer(sub):
                total += sub.in_features * sub.out_features + (sub.bias.numel() if sub.bias is not None else 0)
                continue
            total += sum(p.numel() for p in sub.parameters(recurse=False))
        return round(total / 1e6, 2)

    return {"llm": count(model.llm), "clip": count(model.vision_tower), "sam": count(model.visual_model),
            "projector_and_head": round(count(model.mm_projector) + count(model.text_hidden_fcs), 2)}


def weight_dtypes(model: nn.Module) -> dict[str, int]:
    """How many LLaMA decoder linear weights have each storage dtype (int8/uint8 = quantized)."""
    counts: dict[str, int] = {}
    for module in model.llm.model.layers.modules():
        if isinstance(module, nn.Linear):
            key = str(module.weight.dtype).replace("torch.", "")
            counts[key] = counts.get(key, 0) + 1
    return counts
