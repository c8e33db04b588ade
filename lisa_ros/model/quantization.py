"""4-bit and 8-bit layers for the LLaMA decoder, from the backend ``model.quantization`` names.

- ``bitsandbytes`` (the default, the reference's): NF4 with double quantization / LLM.int8.
- ``torchao``: int4 weight-only in tinygemm's format (asymmetric, a bf16 scale and zero per
  ``group_size`` input columns) / int8 weight-only (a scale per output row). The kernels are PyTorch's
  own (``aten._weight_int4pack_mm`` on CUDA sm_80+, ``_weight_int4pack_mm_for_cpu`` on the CPU), so
  torchao's pure-Python aarch64 wheel runs on a Jetson Orin, where bitsandbytes' PyPI wheel fails.
  docs/model.md ("4-bit backends") says why this backend and what it costs.

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

from lisa_ros.core.engine import EngineError

logger = logging.getLogger(__name__)

QUANTIZED_PRECISIONS = ("int8", "int4")
BACKENDS = ("bitsandbytes", "torchao")
# On CPUs with avx512_bf16, bitsandbytes repacks a 4-bit weight on its first eval forward
# in blocks of 32 output rows (and pairs of input columns), and reshapes its scales to one
# per NF4_BLOCKSIZE input columns; other widths fail there (a bare AssertionError, or a
# reshape error). Such layers keep the unpacked kernels every other CPU uses.
PACKED_BLOCK_ROWS = 32
NF4_BLOCKSIZE = 64  # bitsandbytes' default, set explicitly: the packed path depends on it
# torchao int4: input columns per scale/zero, the first that divides the layer's width. 64 is what
# torchao's published LLaMA figures use (int4wo-64); 32 takes widths like the mid benchmark shape's 1376.
# LLaMA-7B/13B widths (4096, 11008, 5120, 13824) all take 64.
TORCHAO_GROUP_SIZES = (64, 32)
TORCHAO_MIN_CAPABILITY = (8, 0)  # bf16 and tinygemm's tensor-core kernels: Ampere on (Orin is 8.7, H100 9.0)


def _bnb():
    import bitsandbytes

    # One warning per int8 matmul otherwise.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    return bitsandbytes


def _torchao():
    """torchao, imported only for ``model.quantization: torchao``: the bitsandbytes path runs without it installed
    (transformers imports it too when it is installed, so the point is not needing it, not import time)."""
    try:
        import torchao.quantization
    except ImportError as error:
        raise EngineError(f"model.quantization is 'torchao' but torchao cannot be imported ({error}). Fix: pip "
                          f"install -r requirements/torchao.txt, or set model.quantization to bitsandbytes") from error
    return torchao


class TorchaoLinear(nn.Linear):
    """A decoder linear that torchao quantizes when its weight arrives (:func:`quantized_weight`).

    ``torchao_config``: the layer's torchao config (group size from its width; CPU or CUDA packing).
    """

    torchao_config: object


def replace_linears(root: nn.Module, precision: str, compute_dtype: torch.dtype, backend: str,
                    device: torch.device) -> int:
    """Swaps every ``nn.Linear`` under ``root`` for an empty (meta) quantized layer of ``backend``.

    Weights arrive later through :func:`quantized_weight`. Returns the count. Raises EngineError (with the fix)
    before any weight is read when the backend cannot run ``precision`` on ``device``.
    """
    if precision not in QUANTIZED_PRECISIONS:
        raise ValueError(f"precision {precision!r} is not quantized")
    if backend not in BACKENDS:
        raise ValueError(f"quantization backend {backend!r}: known {BACKENDS}")
    make = _bnb_layer if backend == "bitsandbytes" else _torchao_layer_maker(device)
    count = 0
    for parent_name, parent in list(root.named_modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear:
                continue
            setattr(parent, name, make(child, precision, compute_dtype, f"{parent_name}.{name}"))
            count += 1
    return count


def _bnb_layer(child: nn.Linear, precision: str, compute_dtype: torch.dtype, name: str) -> nn.Module:
    bnb = _bnb()
    bias = child.bias is not None
    if precision == "int8":
        return bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=bias, has_fp16_weights=False,
                                   threshold=6.0, device="meta")
    layer = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=bias, compute_dtype=compute_dtype,
                              compress_statistics=True, quant_type="nf4", device="meta")
    if not packable(layer):
        layer.support_avx512bf16_for_cpu = False  # bitsandbytes 0.50's switch for the packed CPU path
        logger.debug("%s (%d x %d) keeps bitsandbytes' unpacked 4-bit CPU kernels", name, layer.out_features,
                     layer.in_features)
    return layer


def _torchao_layer_maker(device: torch.device):
    """(nn.Linear, precision, compute dtype, name) -> an empty TorchaoLinear; checks the device once, up front."""
    torchao = _torchao()
    if device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        if capability < TORCHAO_MIN_CAPABILITY:
            raise EngineError(
                f"model.quantization torchao computes in bf16 and runs int4 with tinygemm's tensor-core kernels, "
                f"which need compute capability 8.0 or newer (Ampere, Jetson Orin, Hopper); "
                f"{torch.cuda.get_device_name(device)} is {capability[0]}.{capability[1]}. Fix: set "
                f"model.quantization to bitsandbytes")

    def make(child: nn.Linear, precision: str, compute_dtype: torch.dtype, name: str) -> TorchaoLinear:
        layer = TorchaoLinear(child.in_features, child.out_features, bias=child.bias is not None, device="meta")
        layer.torchao_config = _torchao_config(torchao, precision, device, child.in_features, name)
        return layer

    return make


def _torchao_config(torchao, precision: str, device: torch.device, in_features: int, name: str):
    quantization = torchao.quantization
    # set_inductor_config=False: torchao would otherwise change torch._inductor's global settings at load.
    if precision == "int8":
        return quantization.Int8WeightOnlyConfig(set_inductor_config=False)
    group_size = next((g for g in TORCHAO_GROUP_SIZES if in_features % g == 0), None)
    if group_size is None:
        raise EngineError(f"decoder layer {name} has {in_features} input columns; torchao's int4 groups need a "
                          f"multiple of {TORCHAO_GROUP_SIZES[-1]}. Fix: set model.quantization to bitsandbytes")
    if device.type == "cuda":
        return quantization.Int4WeightOnlyConfig(group_size=group_size, int4_packing_format="tile_packed_to_4d",
                                                 set_inductor_config=False)
    # The CPU's tinygemm packing differs from CUDA's (pytorch/ao#1117); torchao 0.18 has it as a prototype.
    from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

    return PrototypeInt4WeightOnlyConfig(group_size=group_size, set_inductor_config=False)


def packable(layer: nn.Linear) -> bool:
    """Whether bitsandbytes' avx512_bf16 CPU repacking accepts this layer's shape."""
    return layer.out_features % PACKED_BLOCK_ROWS == 0 and layer.in_features % NF4_BLOCKSIZE == 0


def is_quantized_layer(module: nn.Module) -> bool:
    """Never imports bitsandbytes: a model with no quantized layer must not pay for (or warn about) it."""
    if isinstance(module, TorchaoLinear):
        return True
    bnb = sys.modules.get("bitsandbytes")
    if bnb is None or not isinstance(module, nn.Linear):
        return False  # no bitsandbytes layer can exist before bitsandbytes is imported
    return isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))


def quantized_weight(module: nn.Module, weight: torch.Tensor, compute_dtype: torch.dtype,
                     device: torch.device) -> nn.Parameter:
    """Quantizes ``weight`` (out, in) for ``module`` on ``device``; memory: one float copy of this weight, freed.

    bitsandbytes quantizes on ``.to``; torchao quantizes the weight once it is on ``device`` (CUDA's packing
    runs on the GPU).
    """
    if isinstance(module, TorchaoLinear):
        module.weight = nn.Parameter(weight.to(device, compute_dtype), requires_grad=False)
        _torchao().quantization.quantize_(module, module.torchao_config)
        return module.weight
    bnb = _bnb()
    weight = weight.to(compute_dtype)
    if isinstance(module, bnb.nn.Linear4bit):
        param = bnb.nn.Params4bit(weight, requires_grad=False, compress_statistics=True, quant_type="nf4",
                                  blocksize=NF4_BLOCKSIZE, module=module)
    else:
        param = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    return param.to(device)
