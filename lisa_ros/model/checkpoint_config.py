"""Reads a LISA ``config.json`` and turns it into the building blocks' configs.

A released checkpoint's config is a LLaVA-LLaMA config (``model_type: llava``,
``architectures: [LISAForCausalLM]``) with LLaVA's ``mm_*`` fields and LISA's
``out_dim``. Every size is validated here, before anything is allocated.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from transformers import LlamaConfig

from lisa_ros.core.engine import EngineError
from lisa_ros.model.sam import SamConfig

CONFIG_FILE = "config.json"  # a LISA checkpoint's config, in its directory

LISA_ARCHITECTURE = "LISAForCausalLM"
TINY_SAM_FIELD = "lisa_ros_tiny_sam"

# LLaMA fields copied from the LISA config to transformers' LlamaConfig.
_LLAMA_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_theta",
    "rope_scaling", "bos_token_id", "eos_token_id", "pad_token_id", "attention_bias",
)
# Upper bounds that no real LLaMA/CLIP exceeds: a corrupted config fails here
# instead of asking for terabytes.
_LIMITS = {
    "vocab_size": 1_000_000, "hidden_size": 32_768, "intermediate_size": 131_072,
    "num_hidden_layers": 256, "num_attention_heads": 256, "max_position_embeddings": 1_048_576,
    "mm_hidden_size": 32_768, "out_dim": 32_768,
}


class CheckpointError(EngineError):
    """A checkpoint file is missing, malformed or inconsistent; the message names it and the fix."""


@dataclasses.dataclass(frozen=True)
class LisaConfig:
    llama: LlamaConfig
    mm_hidden_size: int            # CLIP width (1024 for ViT-L/14)
    vision_select_layer: int       # CLIP hidden state fed to the projector (-2)
    vision_tower: str              # CLIP id or path named by the checkpoint
    use_im_start_end: bool         # prompt wraps the image in <im_start> ... <im_end>
    out_dim: int                   # [SEG] prompt embedding width (= SAM prompt dim)
    sam: SamConfig
    is_tiny: bool                  # SAM sizes from lisa_ros_tiny_sam (tiny test checkpoints)

    @property
    def hidden_size(self) -> int:
        return self.llama.hidden_size


def read_json(path: Path, fix: str) -> dict[str, Any]:
    """Parses a JSON object, naming the file and the fix on failure."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing. Fix: {fix}")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}). Fix: {fix}") from error
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} must hold a JSON object. Fix: {fix}")
    return value


def load_lisa_config(checkpoint_dir: Path) -> LisaConfig:
    path = checkpoint_dir / CONFIG_FILE
    fix = "point model.path at a released LISA checkpoint (e.g. xinlai/LISA-7B-v1) or re-download it"
    raw = read_json(path, fix)
    architectures = raw.get("architectures") or []
    if LISA_ARCHITECTURE not in architectures:
        raise CheckpointError(
            f"{path} describes model_type={raw.get('model_type')!r} architectures={architectures}, not LISA "
            f"({LISA_ARCHITECTURE}, model_type 'llava'). Fix: {fix}"
        )

    def integer(key: str, default: int | None = None, minimum: int = 1) -> int:
        value = raw.get(key, default)
        limit = _LIMITS.get(key, 1 << 20)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= limit:
            raise CheckpointError(f"{path}: {key}={value!r} must be an integer in [{minimum}, {limit}]. Fix: {fix}")
        return value

    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "max_position_embeddings"):
        integer(key)
    if raw["hidden_size"] % raw["num_attention_heads"]:
        raise CheckpointError(f"{path}: hidden_size must be a multiple of num_attention_heads. Fix: {fix}")
    llama_kwargs = {key: raw[key] for key in _LLAMA_FIELDS if raw.get(key) is not None}
    llama_kwargs["tie_word_embeddings"] = bool(raw.get("tie_word_embeddings", False))
    llama = LlamaConfig(**llama_kwargs)

    out_dim = integer("out_dim", 256)
    if TINY_SAM_FIELD in raw:
        try:
            sam = SamConfig.from_tiny_dict(raw[TINY_SAM_FIELD], prompt_embed_dim=out_dim)
        except (TypeError, ValueError) as error:
            raise CheckpointError(
                f"{path}: bad {TINY_SAM_FIELD} ({error}). Fix: regenerate the tiny checkpoint") from error
    else:
        # The reference builds ViT-H unconditionally; so does a released checkpoint.
        sam = SamConfig()
        if out_dim != sam.prompt_embed_dim:
            raise CheckpointError(f"{path}: out_dim={out_dim} but SAM ViT-H prompts are 256-d. Fix: {fix}")

    select = raw.get("mm_vision_select_layer", -2)
    if not isinstance(select, int) or isinstance(select, bool):
        raise CheckpointError(f"{path}: mm_vision_select_layer={select!r} must be an integer. Fix: {fix}")
    vision_tower = raw.get("vision_tower") or raw.get("mm_vision_tower") or ""
    if not isinstance(vision_tower, str):
        raise CheckpointError(f"{path}: vision_tower must be a string. Fix: {fix}")
    return LisaConfig(
        llama=llama,
        mm_hidden_size=integer("mm_hidden_size", 1024),
        vision_select_layer=select,
        vision_tower=vision_tower,
        use_im_start_end=bool(raw.get("mm_use_im_start_end", True)),
        out_dim=out_dim,
        sam=sam,
        is_tiny=TINY_SAM_FIELD in raw,
    )
