"""bitsandbytes layers for the LLaMA decoder (LLM.int8 and NF4 with double quantization).

Only the decoder layers' linear projections are quantized. ``lm_head``, the
embeddings, ``mm_projector``, ``text_hidden_fcs``, CLIP and SAM stay in floating
point: the reference's skip list (``["visual_model"]``) replaced the default one
and quantized ``lm_head``, the projector and the ``[SEG]`` head too.
"""
from __future__ import annotations

import logging
import sys

import torch
from torch import nn

logger = logging.getLogger(__name__)

QUANTIZED_PRECISIONS = ("int8", "int4")
# On CPUs with avx512_bf16, bitsandbytes repacks a 4-bit weight on its first eval forward
# in blocks of 32 output rows (and pairs of input columns), and reshapes its scales to one
# per NF4_BLOCKSIZE input columns; other widths fail there (a bare AssertionError, or a
# reshape error). Such layers keep the unpacked kernels every other CPU uses.
PACKED_BLOCK_ROWS = 32
NF4_BLOCKSIZE = 64  # bitsandbytes' default, set explicitly: the packed path depends on it


def _bnb():
    import bitsandbytes

    # One warning per int8 matmul otherwise.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    return bitsandbytes


def replace_linears(root: nn.Module, precision: str, compute_dtype: torch.dtype) -> int:
    """Swaps every ``nn.Linear`` under ``root`` for an empty (meta) bitsandbytes layer.

    Weights arrive later through :func:`quantized_weight`. Returns the count.
    """
    bnb = _bnb()
    count = 0
    for parent_name, parent in list(root.named_modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear:
                continue
            bias = child.bias is not None
            if precision == "int4":
                layer = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=bias, compute_dtype=compute_dtype,
                                          compress_statistics=True, quant_type="nf4", device="meta")
                if not packable(layer):
                    layer.support_avx512bf16_for_cpu = False  # bitsandbytes 0.50's switch for the packed CPU path
                    logger.debug("%s.%s (%d x %d) keeps bitsandbytes' unpacked 4-bit CPU kernels", parent_name, name,
                                 layer.out_features, layer.in_features)
            elif precision == "int8":
                layer = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=bias, has_fp16_weights=False,
                                            threshold=6.0, device="meta")
            else:
                raise ValueError(f"precision {precision!r} is not quantized")
            setattr(parent, name, layer)
            count += 1
    return count


def packable(layer: nn.Linear) -> bool:
    """Whether bitsandbytes' avx512_bf16 CPU repacking accepts this layer's shape."""
    return layer.out_features % PACKED_BLOCK_ROWS == 0 and layer.in_features % NF4_BLOCKSIZE == 0


def is_quantized_layer(module: nn.Module) -> bool:
    """Never imports bitsandbytes: a model with no quantized layer must not pay for (or warn about) it."""
    bnb = sys.modules.get("bitsandbytes")
    if bnb is None or not isinstance(module, nn.Linear):
        return False  # no bitsandbytes layer can exist before bitsandbytes is imported
    return isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))


def quantized_weight(module: nn.Module, weight: torch.Tensor, compute_dtype: torch.dtype,
                     device: torch.device) -> nn.Parameter:
    """Quantizes ``weight`` (out, in) for ``module`` on ``device`` (quantization happens on ``.to``)."""
    bnb = _bnb()
    weight = weight.to(compute_dtype)
    if isinstance(module, bnb.nn.Linear4bit):
        param = bnb.nn.Params4bit(weight, requires_grad=False, compress_statistics=True, quant_type="nf4",
                                  blocksize=NF4_BLOCKSIZE, module=module)
    else:
        param = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    return param.to(device)
