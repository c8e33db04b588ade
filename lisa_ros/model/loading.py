"""Loading LISA: checkpoint names, placement (device, dtype per module, quantization), tensor sources.

``load_lisa_model`` builds ``LisaModel`` on the meta device and fills it from a *tensor source*:
``checkpoint_tensors`` (a released checkpoint's shards and CLIP's) by default; benchmarks pass
one making random tensors of the same shapes. Parameter names are the checkpoint's, minus
``model.`` for the LISA parts and under ``llm.`` for LLaMA (``model.layers.*`` ->
``llm.model.layers.*``), so reading a checkpoint is a rename.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import torch
from accelerate import init_empty_weights
from torch import nn
from tqdm.auto import tqdm
from transformers import CLIPVisionConfig

from lisa_ros.model import quantization
from lisa_ros.model.checkpoint import find_weight_files, read_tensors
from lisa_ros.model.checkpoint_config import CheckpointError, LisaConfig, read_json
from lisa_ros.model.modeling import LisaModel

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4")
# Modules kept in fp32 whatever the precision: the [SEG] -> prompt -> mask path.
FP32_PREFIXES = ("text_hidden_fcs.", "visual_model.prompt_encoder.", "visual_model.mask_decoder.")


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where and how the weights live."""

    device: torch.device
    precision: str
    quantization: str = "bitsandbytes"  # the int8/int4 backend (quantization.BACKENDS)

    @property
    def compute_dtype(self) -> torch.dtype:
        if self.precision in ("fp16", "bf16"):
            return torch.float16 if self.precision == "fp16" else torch.bfloat16
        if self.precision in quantization.QUANTIZED_PRECISIONS and self.device.type == "cuda":
            # fp16: the reference's compute dtype for 8-bit and 4-bit; torchao's tinygemm int4 kernel takes bf16
            # only (fp16 would be cast to bf16 and back around every decoder linear).
            return torch.bfloat16 if self.quantization == "torchao" else torch.float16
        return torch.float32

    def dtype_for(self, name: str) -> torch.dtype:
        return torch.float32 if name.startswith(FP32_PREFIXES) else self.compute_dtype

Named = tuple[str, torch.Tensor]  # (parameter name, tensor)
# (model on the meta device, its state before loading: names, shapes and buffers built at construction,
# placement) -> (parameter name, tensor) for every entry of the state; ``_place`` puts each on the device.
TensorSource = Callable[[LisaModel, Mapping[str, torch.Tensor], Placement], Iterable[Named]]


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
                    progress: bool = True, tensors: TensorSource | None = None) -> LisaModel:
    """Builds LISA on the meta device and fills it tensor by tensor on ``placement.device``.

    ``tensors``: where the weights come from; default ``checkpoint_tensors`` (the checkpoint's and
    CLIP's files: nothing is allocated before a tensor's shape has been checked, peak host memory is
    about one tensor since pickles are memory-mapped). Every source's tensors get the same placement
    (dtype per module, fp32 for the [SEG] -> mask path, quantized decoder linears).
    """
    clip_config = read_clip_config(clip_dir, config)
    # Parameters on the meta device, buffers real. Not ``with torch.device("meta")``: that also makes meta the
    # non-persistent buffers computed in __init__ (LLaMA's rotary inv_freq, CLIP's position_ids), which no
    # checkpoint holds, so they could never be filled.
    with init_empty_weights(include_buffers=False):
        model = LisaModel(config, clip_config)
    state = model.state_dict(keep_vars=True)
    if placement.precision in quantization.QUANTIZED_PRECISIONS:
        quantization.replace_linears(model.llm.model.layers, placement.precision, placement.compute_dtype,
                                     placement.quantization, placement.device)
    if tensors is None:
        tensors = checkpoint_tensors(checkpoint_dir, clip_dir, progress)

    loaded: set[str] = set()
    for name, tensor in tensors(model, state, placement):
        _place(model, name, tensor, placement)
        loaded.add(name)
    missing = sorted(set(state) - loaded)
    if missing:
        where = clip_dir if all(m.startswith("vision_tower.") for m in missing) else checkpoint_dir
        keys = [m if m.startswith("vision_tower.") else checkpoint_key(m) for m in missing]
        raise CheckpointError(f"{where}: {len(missing)} weights are missing, e.g. {keys[:4]}. Fix: a shard is "
                              f"incomplete or from another model; re-download the checkpoint")
    for module in model.modules():  # non-persistent buffers (rotary, pixel mean/std) were built on the CPU
        for name, buffer in module.named_buffers(recurse=False):
            if buffer.device != placement.device:
                module._buffers[name] = buffer.to(placement.device)
    return model.eval().requires_grad_(False)


def checkpoint_tensors(checkpoint_dir: Path, clip_dir: Path, progress: bool = True) -> TensorSource:
    """The tensor source reading a released checkpoint's shards, then CLIP's (renamed, shapes checked)."""

    def source(model: LisaModel, state: Mapping[str, torch.Tensor], placement: Placement) -> Iterator[Named]:
        kept_layers = model.vision_tower.config.num_hidden_layers

        def clip_name(key: str) -> str | None:
            if not key.startswith("vision_model.") or key.endswith("position_ids"):
                return None
            parts = key.split(".")
            if parts[1:3] == ["encoder", "layers"] and int(parts[3]) >= kept_layers:
                return None  # layers after the selected one are never run
            return "vision_tower." + key[len("vision_model."):]

        unexpected: list[str] = []
        for directory, rename in ((checkpoint_dir, parameter_name), (clip_dir, clip_name)):
            files = find_weight_files(directory).files
            for path in tqdm(files, desc=f"Loading {directory.name}", unit="shard",
                             disable=not progress or len(files) < 2):
                for key, tensor in read_tensors(path):
                    name = rename(key)
                    if name is None:
                        continue
                    if name not in state:
                        unexpected.append(f"{path.name}:{key}")
                        continue
                    if tuple(tensor.shape) != tuple(state[name].shape):
                        raise CheckpointError(
                            f"{path}: {key} has shape {tuple(tensor.shape)} but {directory.name}'s config.json "
                            f"implies {tuple(state[name].shape)}. Fix: the weights and config.json come from "
                            f"different models; re-download the checkpoint (both files from the same revision)")
                    yield name, tensor
        if unexpected:
            logger.warning("ignored %d unexpected checkpoint tensors, e.g. %s", len(unexpected), unexpected[:4])

    return source


def _place(model: LisaModel, name: str, tensor: torch.Tensor, placement: Placement) -> None:
    """Puts one tensor where ``placement`` says (quantized when its layer is), without keeping the file alive."""
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
