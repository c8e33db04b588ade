"""segment_anything's model blocks, and the SAM sizes a LISA checkpoint can carry.

``import segment_anything`` runs the package ``__init__``, which imports the
predictor and hence torchvision (unusable with this torch build). Only
``segment_anything.modeling`` is needed and it is pure torch, so the package is
registered as a bare namespace and the sub-package imported directly.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
import types
from functools import cache, partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def sam_modeling() -> types.ModuleType:
    """Returns ``segment_anything.modeling`` without running the package ``__init__``."""
    if "segment_anything" not in sys.modules:
        spec = importlib.util.find_spec("segment_anything")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("segment_anything is not installed: pip install segment-anything==1.0")
        package = types.ModuleType("segment_anything")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["segment_anything"] = package
    return importlib.import_module("segment_anything.modeling")


@dataclasses.dataclass(frozen=True)
class SamConfig:
    """SAM sizes. Defaults are ViT-H, the only size the reference builds."""

    encoder_embed_dim: int = 1280
    encoder_depth: int = 32
    encoder_num_heads: int = 16
    encoder_global_attn_indexes: tuple[int, ...] = (7, 15, 23, 31)
    window_size: int = 14
    image_size: int = 1024
    patch_size: int = 16
    prompt_embed_dim: int = 256
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 256

    @classmethod
    def from_tiny_dict(cls, values: dict[str, Any], prompt_embed_dim: int) -> SamConfig:
        """The ``lisa_ros_tiny_sam`` block of a tiny config (this project's extension)."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"prompt_embed_dim"}
        unknown = set(values) - fields
        if unknown:
            raise ValueError(f"unknown lisa_ros_tiny_sam fields {sorted(unknown)}; known: {sorted(fields)}")
        kwargs = dict(values)
        if "encoder_global_attn_indexes" in kwargs:
            kwargs["encoder_global_attn_indexes"] = tuple(kwargs["encoder_global_attn_indexes"])
        config = cls(prompt_embed_dim=prompt_embed_dim, **kwargs)
        config.validate()
        return config

    def validate(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            values = value if isinstance(value, tuple) else (value,)
            if not all(isinstance(v, int) and 0 <= v <= 65536 for v in values):
                raise ValueError(f"SAM {field.name}={value!r} must be non-negative integers <= 65536")
        if self.image_size % self.patch_size or self.encoder_embed_dim % self.encoder_num_heads:
            raise ValueError("SAM image_size must be a multiple of patch_size, embed dim of heads")
        if any(i >= self.encoder_depth for i in self.encoder_global_attn_indexes):
            raise ValueError("SAM encoder_global_attn_indexes must be < encoder_depth")

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid (64 for ViT-H at 1024)."""
        return self.image_size // self.patch_size


def _sdpa_attention_forward(self, x: torch.Tensor) -> torch.Tensor:
    """segment_anything's image-encoder attention, computed by ``scaled_dot_product_attention``.

    Same maths as ``image_encoder.Attention.forward`` (the decomposed relative
    positions become an additive mask) without materialising the (heads, N, N)
    softmax chain by hand: N = 4096 in ViT-H's global layers. (B, H, W, C) -> (B, H, W, C).
    """
    batch, height, width, _ = x.shape
    tokens = height * width
    qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
    bias = None
    if self.use_rel_pos:
        encoder = sam_modeling().image_encoder
        rel_h = encoder.get_rel_pos(height, height, self.rel_pos_h)  # (H, H, head_dim)
        rel_w = encoder.get_rel_pos(width, width, self.rel_pos_w)    # (W, W, head_dim)
        r_q = q.reshape(batch, self.num_heads, height, width, -1)
        bias_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, rel_h)
        bias_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, rel_w)
        bias = (bias_h[..., :, None] + bias_w[..., None, :]).reshape(batch, self.num_heads, tokens, tokens)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)  # (B, heads, N, head_dim)
    return self.proj(out.permute(0, 2, 1, 3).reshape(batch, height, width, -1))


@cache
def sdpa_attention_class() -> type[nn.Module]:
    """``image_encoder.Attention`` with the SDPA forward: same parameters, so checkpoints load unchanged."""
    attention = sam_modeling().image_encoder.Attention
    return type("SdpaAttention", (attention,), {"forward": _sdpa_attention_forward, "__module__": __name__})


def use_sdpa_attention(encoder: nn.Module) -> None:
    """Switches every block of a segment_anything ``ImageEncoderViT`` to the SDPA forward."""
    sdpa = sdpa_attention_class()
    for block in encoder.blocks:
        block.attn.__class__ = sdpa


def build_sam(config: SamConfig, *, sdpa: bool = True) -> nn.Module:
    """segment_anything's ``Sam``: image_encoder, prompt_encoder, mask_decoder.

    Parameter names match the checkpoint's ``model.visual_model.*`` keys.
    ``sdpa=False`` keeps segment_anything's own (eager) encoder attention.
    """
    modeling = sam_modeling()
    grid = config.embedding_size
    sam = modeling.Sam(
        image_encoder=modeling.ImageEncoderViT(
            depth=config.encoder_depth,
            embed_dim=config.encoder_embed_dim,
            img_size=config.image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=config.encoder_num_heads,
            patch_size=config.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=config.encoder_global_attn_indexes,
            window_size=config.window_size,
            out_chans=config.prompt_embed_dim,
        ),
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=16,
        ),
        mask_decoder=modeling.MaskDecoder(
            num_multimask_outputs=3,
            transformer=modeling.TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                mlp_dim=config.decoder_mlp_dim,
                num_heads=config.decoder_num_heads,
            ),
            transformer_dim=config.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
    )
    if sdpa:
        use_sdpa_attention(sam.image_encoder)
    return sam
