"""LISA assembled from transformers and segment_anything blocks, and its weight loader.

    image --CLIP ViT (layer -2, patches)--> (1, 256, C) --mm_projector--> (1, 256, H)
    prompt ids with the 256 image features spliced in --LLaMA--> hidden states (after norm)
    hidden state that predicted each [SEG] --text_hidden_fcs--> (n, 256) sparse prompts
    image --SAM ViT image encoder--> (1, 256, 64, 64) --mask decoder(prompts)--> masks, IoU

Parameter names are the checkpoint's, minus ``model.`` for the LISA parts and
under ``llm.`` for LLaMA (``model.layers.*`` -> ``llm.model.layers.*``), so loading
is a rename. The ``[SEG]`` head, SAM's prompt encoder and mask decoder always
run in fp32: in fp16 the ``[SEG]`` embedding (norm ~200) overflows there.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from accelerate import init_empty_weights
from torch import nn
from tqdm.auto import tqdm
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaForCausalLM
from transformers.cache_utils import Cache

from lisa_ros.model import quantization
from lisa_ros.model.checkpoint import find_weight_files, read_tensors
from lisa_ros.model.config import CheckpointError, LisaConfig, read_json
from lisa_ros.model.sam import build_sam
from lisa_ros.model.tokenization import IMAGE_PLACEHOLDER

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4")
# Modules kept in fp32 whatever the precision: the [SEG] -> prompt -> mask path.
FP32_PREFIXES = ("text_hidden_fcs.", "visual_model.prompt_encoder.", "visual_model.mask_decoder.")


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where and how the weights live."""

    device: torch.device
    precision: str

    @property
    def compute_dtype(self) -> torch.dtype:
        if self.precision in ("fp16", "bf16"):
            return torch.float16 if self.precision == "fp16" else torch.bfloat16
        if self.precision in quantization.QUANTIZED_PRECISIONS and self.device.type == "cuda":
            return torch.float16  # the reference's compute dtype for 8-bit and 4-bit
        return torch.float32

    def dtype_for(self, name: str) -> torch.dtype:
        return torch.float32 if name.startswith(FP32_PREFIXES) else self.compute_dtype


class LisaModel(nn.Module):
    def __init__(self, config: LisaConfig, clip_config: CLIPVisionConfig):
        super().__init__()
        self.config = config
        hidden = config.hidden_size
        config.llama._attn_implementation = "sdpa"
        clip_config._attn_implementation = "sdpa"
        self.llm = LlamaForCausalLM(config.llama)
        self.vision_tower = CLIPVisionModel(clip_config)  # truncated at the selected layer
        self.mm_projector = nn.Linear(config.mm_hidden_size, hidden)
        self.text_hidden_fcs = nn.ModuleList([nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, config.out_dim), nn.Dropout(0.0),
        )])
        self.visual_model = build_sam(config.sam)

    @property
    def device(self) -> torch.device:
        return self.mm_projector.weight.device

    def clip_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(1, 3, 224, 224) normalized -> (1, 256, H) projected patch features."""
        tower_dtype = self.vision_tower.embeddings.patch_embedding.weight.dtype
        hidden = self.vision_tower(pixel_values=pixels.to(self.device, tower_dtype)).last_hidden_state
        return self.mm_projector(hidden[:, 1:].to(self.mm_projector.weight.dtype))  # CLS dropped

    def embed(self, ids: Sequence[int], image_features: torch.Tensor) -> torch.Tensor:
        """Token embeddings with the image features in place of the placeholder: (1, L + 255, H)."""
        embeddings = self.llm.get_input_embeddings()
        if IMAGE_PLACEHOLDER not in ids:
            return embeddings(torch.tensor([list(ids)], device=self.device))
        at = list(ids).index(IMAGE_PLACEHOLDER)
        before = embeddings(torch.tensor(ids[:at], dtype=torch.long, device=self.device))
        after = embeddings(torch.tensor(ids[at + 1:], dtype=torch.long, device=self.device))
        return torch.cat([before, image_features[0].to(before.dtype), after])[None]

    def decoder_hidden(self, inputs_embeds: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        """(1, L, H) embeddings -> (1, L, H) last-layer hidden states after the final norm."""
        output = self.llm.model(inputs_embeds=inputs_embeds, past_key_values=cache, use_cache=cache is not None)
        return output.last_hidden_state

    def next_token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (..., V) fp32."""
        return self.llm.lm_head(hidden.to(self.llm.lm_head.weight.dtype)).float()

    def sam_image_embedding(self, pixels: torch.Tensor) -> torch.Tensor:
        """(1, 3, h, w) RGB 0..255 -> (1, 256, 64, 64) SAM image embedding."""
        encoder = self.visual_model.image_encoder
        padded = self.visual_model.preprocess(pixels.to(self.device, torch.float32))  # normalize, pad to 1024
        return encoder(padded.to(encoder.patch_embed.proj.weight.dtype))

    def decode_masks(
        self, seg_hidden: torch.Tensor, image_embedding: torch.Tensor,
        input_size: tuple[int, int], original_size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, H) [SEG] hidden states -> (n, H0, W0) fp32 mask logits and (n,) IoU predictions."""
        sam = self.visual_model
        prompts = self.text_hidden_fcs[0](seg_hidden.to(self.device, torch.float32))[:, None]  # (n, 1, 256)
        count, grid = prompts.shape[0], sam.prompt_encoder.image_embedding_size
        dense = sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(count, -1, *grid)
        low_res, iou = sam.mask_decoder(
            image_embeddings=image_embedding.float(),  # (1, 256, 64, 64), repeated per prompt inside
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=prompts,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )  # (n, 1, 256, 256), (n, 1)
        return sam.postprocess_masks(low_res, input_size, original_size)[:, 0], iou[:, 0]


def checkpoint_key(name: str) -> str:
    """Parameter name -> key in a released checkpoint."""
    return name[len("llm."):] if name.startswith("llm.") else "model." + name


def parameter_name(key: str) -> str | None:
    """Key in a released checkpoint -> parameter name (None: ignored key)."""
    if key.endswith("rotary_emb.inv_freq") or key.startswith("model.vision_tower."):
        return None  # transformers 4.31 buffers; CLIP comes from its own files
    for part in ("mm_projector.", "text_hidden_fcs.", "visual_model."):
        if key.startswith("model." + part):
            return key[len("model."):]
    return "llm." + key


def read_clip_config(clip_dir: Path, config: LisaConfig) -> CLIPVisionConfig:
    """The CLIP vision config, truncated to the layers the selected hidden state needs."""
    path = clip_dir / "config.json"
    fix = "set model.vision_tower to a CLIP ViT directory (config.json + weights), e.g. openai/clip-vit-large-patch14"
    raw = read_json(path, fix)
    if raw.get("model_type") == "clip":
        raw = raw.get("vision_config") or {}
    elif raw.get("model_type") != "clip_vision_model":
        raise CheckpointError(f"{path} is a {raw.get('model_type')!r} config, not CLIP. Fix: {fix}")
    vision = CLIPVisionConfig.from_dict(raw)
    layers = vision.num_hidden_layers
    keep = config.vision_select_layer if config.vision_select_layer >= 0 else layers + 1 + config.vision_select_layer
    if not 0 <= keep <= layers or not 0 < vision.hidden_size <= 32_768 or layers > 256:
        raise CheckpointError(f"{path}: {layers} layers / width {vision.hidden_size} cannot give the LISA config's "
                              f"layer {config.vision_select_layer}. Fix: {fix}")
    if vision.hidden_size != config.mm_hidden_size:
        raise CheckpointError(f"{path}: CLIP width {vision.hidden_size} != mm_hidden_size {config.mm_hidden_size} of "
                              f"the LISA config. Fix: {fix}")
    vision.num_hidden_layers = keep
    return vision


def load_lisa_model(checkpoint_dir: Path, clip_dir: Path, config: LisaConfig, placement: Placement,
                    progress: bool = True) -> LisaModel:
    """Builds LISA on the meta device and fills it shard by shard on ``placement.device``.

    Nothing is allocated before a tensor's shape has been checked; peak host
    memory is about one tensor (pickles are memory-mapped).
    """
    clip_config = read_clip_config(clip_dir, config)
    with init_empty_weights(include_buffers=False):
        model = LisaModel(config, clip_config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if placement.precision in quantization.QUANTIZED_PRECISIONS:
        quantization.replace_linears(model.llm.model.layers, placement.precision, placement.compute_dtype)

    loaded: set[str] = set()
    unexpected: list[str] = []

    def load_files(files: Sequence[Path], rename, source: str) -> None:
        for path in tqdm(files, desc=f"Loading {source}", unit="shard", disable=not progress or len(files) < 2):
            for key, tensor in read_tensors(path):
                name = rename(key)
                if name is None:
                    continue
                if name not in expected:
                    unexpected.append(f"{path.name}:{key}")
                    continue
                if tuple(tensor.shape) != expected[name]:
                    raise CheckpointError(
                        f"{path}: {key} has shape {tuple(tensor.shape)} but {source}'s config.json implies "
                        f"{expected[name]}. Fix: the weights and config.json come from different models; "
                        f"re-download the checkpoint (both files from the same revision)")
                _place(model, name, tensor, placement)
                loaded.add(name)

    load_files(find_weight_files(checkpoint_dir).files, parameter_name, checkpoint_dir.name)
    kept_layers = clip_config.num_hidden_layers

    def clip_name(key: str) -> str | None:
        if not key.startswith("vision_model.") or key.endswith("position_ids"):
            return None
        parts = key.split(".")
        if parts[1:3] == ["encoder", "layers"] and int(parts[3]) >= kept_layers:
            return None  # layers after the selected one are never run
        return "vision_tower." + key[len("vision_model."):]

    load_files(find_weight_files(clip_dir).files, clip_name, clip_dir.name)
    missing = sorted(set(expected) - loaded)
    if missing:
        where = clip_dir if all(m.startswith("vision_tower.") for m in missing) else checkpoint_dir
        keys = [m if m.startswith("vision_tower.") else checkpoint_key(m) for m in missing]
        raise CheckpointError(f"{where}: {len(missing)} weights are missing, e.g. {keys[:4]}. Fix: a shard is "
                              f"incomplete or from another model; re-download the checkpoint")
    if unexpected:
        logger.warning("ignored %d unexpected checkpoint tensors, e.g. %s", len(unexpected), unexpected[:4])
    for module in model.modules():  # non-persistent buffers (rotary, pixel mean/std) were built on the CPU
        for name, buffer in module.named_buffers(recurse=False):
            if buffer.device != placement.device:
                module._buffers[name] = buffer.to(placement.device)
    return model.eval().requires_grad_(False)


def _place(model: LisaModel, name: str, tensor: torch.Tensor, placement: Placement) -> None:
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    if leaf == "weight" and quantization.is_quantized_layer(module):
        module.weight = quantization.quantized_weight(module, tensor, placement.compute_dtype, placement.device)
        return
    value = tensor.to(placement.device, placement.dtype_for(name) if tensor.is_floating_point() else tensor.dtype)
    if value.data_ptr() == tensor.data_ptr():
        value = value.clone()  # do not keep the memory-mapped file alive
    if leaf in module._parameters:
        module._parameters[leaf] = nn.Parameter(value, requires_grad=False)
    else:
        module._buffers[leaf] = value
