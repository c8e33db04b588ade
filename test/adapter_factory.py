"""Adapters of tiny checkpoints made as `lisa-ros finetune` makes them (PEFT's save_pretrained of LoRA on the LLM,
the modules trained in full keyed like a released checkpoint, lisa_ros_adapter.json), with random non-zero
updates instead of training: every merged weight differs from the base's."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file

from lisa_ros.model import adapter
from lisa_ros.model.checkpoint import resolve_vision_tower, weights_identity
from lisa_ros.model.checkpoint_config import load_lisa_config
from lisa_ros.model.loading import Placement, checkpoint_key, load_lisa_model

# LISA's recipe; init_lora_weights=False makes lora_B random (PEFT's default zeros would merge to the base).
RECIPE = dict(r=8, lora_alpha=16, lora_dropout=0.05, bias="none", target_modules=["q_proj", "v_proj"])


def trained_in_full(key: str) -> bool:
    return key in adapter.TRAINED_IN_FULL_KEYS or key.startswith(adapter.TRAINED_IN_FULL_PREFIXES)


def write_test_adapter(base_dir: Path, out_dir: Path, seed: int = 0, trained_dtype: torch.dtype = torch.float32,
                       **lora_options) -> Path:
    """``out_dir``, holding an adapter of the checkpoint ``base_dir`` (``lora_options`` override the recipe)."""
    config = load_lisa_config(base_dir)
    clip_dir = resolve_vision_tower(config.vision_tower, base_dir)
    model = load_lisa_model(base_dir, clip_dir, config, Placement(torch.device("cpu"), "fp32"), progress=False)
    generator = torch.Generator().manual_seed(seed)
    trained = {}
    for name, parameter in model.named_parameters():
        key = checkpoint_key(name)
        if trained_in_full(key):
            noise = torch.randn(parameter.shape, generator=generator) * 0.05 * parameter.float().std().clamp(min=1e-3)
            trained[key] = (parameter.float() + noise).to(trained_dtype).contiguous()
    torch.manual_seed(seed)
    peft_model = get_peft_model(model.llm, LoraConfig(**(RECIPE | {"init_lora_weights": False} | lora_options)))
    peft_model.save_pretrained(out_dir)
    save_file(trained, str(out_dir / adapter.TRAINED_WEIGHTS))
    description = {"format": adapter.FORMAT, "name": out_dir.name, "base": base_dir.name,
                   "base_identity": weights_identity(base_dir), "created": "2026-12-07T00:00:00+00:00",
                   "recipe": RECIPE | {"lr": 3e-4, "epochs": 1}, "validation": {"gIoU": 0.0, "cIoU": 0.0, "epoch": 0},
                   "train_samples": 0}
    (out_dir / adapter.DESCRIPTION).write_text(json.dumps(description, indent=2))
    return out_dir
