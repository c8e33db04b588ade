"""``lisa-ros doctor``: the preflight to run on the robot before launching lisa_node.

    lisa-ros doctor config/lisa.yaml --image-topic /camera/color/image_raw [--json]

Reads the node's params file (the one the node and the launch file take) with optional overrides and checks what
makes a first start fail on a robot: Python, torch and CUDA, the GPU against the checkpoint and precision, the
bitsandbytes or torchao kernel (a real quantized matmul on the device), the weights (local, in the Hugging Face
cache, or the download configure will make), numpy / OpenCV against the ROS install, the DDS environment and the
camera topic (publisher, type, QoS). Each problem comes with its fix. Exit status 1 when any check FAILs; warnings
do not change it. Checks that need rclpy skip themselves when it cannot be imported.

Each check is a small function returning ``Finding``s; those about GPUs take their numbers as arguments so they
are tested without one.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.machinery
import importlib.metadata
import json
import os
import platform
import re
import shutil
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from lisa_ros.core.engine_options import LISA_OPTIONS

OK, WARN, FAIL, SKIP = "OK", "WARN", "FAIL", "SKIP"
GB = 1e9
# Apt's Python packages on Debian/Ubuntu: the numpy ROS's message modules and cv_bridge were built against.
SYSTEM_DIST_PACKAGES = Path("/usr/lib/python3/dist-packages")
MIN_PYTHON = (3, 10)  # Humble on JetPack 6 / Ubuntu 22.04; Jazzy is 3.12
IMAGE_TYPE = "sensor_msgs/msg/Image"
ENGINE_PROBLEMS = "model options: "  # how NodeConfig words the engine's own option problems
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"

# LLaMA sizes of the released checkpoints' config.json (LLaMA-7B / LLaMA-2-13B plus LISA's added tokens), for
# estimates before the checkpoint is on this machine. The vocabulary is within a few tokens of the real one.
_LLAMA_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
             "vocab_size": 32004}
_LLAMA_13B = {"hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40, "num_attention_heads": 40,
              "vocab_size": 32004}
KNOWN_CHECKPOINTS: dict[str, tuple[dict[str, int], float]] = {  # id -> (LLaMA sizes, download in bytes)
    "xinlai/LISA-7B-v1": (_LLAMA_7B, 16 * GB),
    "xinlai/LISA-7B-v1-explanatory": (_LLAMA_7B, 16 * GB),
    "xinlai/LISA-13B-llama2-v1": (_LLAMA_13B, 29 * GB),
    "xinlai/LISA-13B-llama2-v1-explanatory": (_LLAMA_13B, 29 * GB),
}
RELEASED_VISION_TOWER = "openai/clip-vit-large-patch14"  # what every released checkpoint's config names
KNOWN_DOWNLOADS = {RELEASED_VISION_TOWER: 1.71 * GB}  # config.json + model.safetensors
# Parameters outside the LLM of a released checkpoint: CLIP ViT-L/14's vision tower and SAM ViT-H.
CLIP_VIT_L_PARAMETERS = 303e6
SAM_VIT_H_PARAMETERS = 641e6
# Bytes per weight of the quantized decoder linears: NF4 is 4 bits plus one 8-bit scale per 64 weights (double
# quantization: those scales' own fp32 scale per 256 blocks); LLM.int8 one byte plus per-row fp16 scales.
QUANTIZED_BYTES = {"int4": 0.5 + 1 / 64 + 4 / (64 * 256), "int8": 1.0}
# What a forward needs beyond the weights: activations (SAM ViT-H's encoder at 1024 x 1024 is the largest), the
# KV cache and the allocator's slack, as a share of the weights; plus the CUDA context itself.
ACTIVATION_SHARE = 0.2
CUDA_CONTEXT_BYTES = 0.5 * GB


@dataclasses.dataclass(frozen=True)
class Finding:
    level: str  # OK | WARN | FAIL | SKIP
    check: str
    message: str
    fix: str = ""


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the node would run with: the params file's values with the command line's overrides."""

    parameters: dict[str, Any]  # flattened: "model.path", "qos_overrides./camera/image_raw.subscription.depth"
    image_topic: str

    def model(self, key: str) -> Any:
        value = self.parameters.get(f"model.{key}")
        return LISA_OPTIONS[key][0] if value is None else value

    @property
    def engine(self) -> str:
        return self.parameters.get("engine", "lisa")

    @property
    def compressed(self) -> bool:
        return self.parameters.get("compressed") is True


# ----------------------------------------------------------------------------------------------- parameters

def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def read_params_file(path: Path, node_name: str = "lisa_node") -> dict[str, Any]:
    """The flattened ``ros__parameters`` a node of this name gets from a params file (``/**`` first, then the
    node's own section, as rcl merges them)."""
    tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(tree, dict):
        raise ValueError(f"{path} is not a ROS 2 params file (a mapping of node names to ros__parameters)")
    parameters: dict[str, Any] = {}
    for section, content in tree.items():
        name = str(section).rsplit("/", 1)[-1]
        if str(section) in ("/**", "**") or name == node_name:
            parameters.update(_flatten((content or {}).get("ros__parameters") or {}))
    return parameters


def parse_assignment(text: str) -> tuple[str, Any]:
    """NAME=VALUE with VALUE read as YAML, as ``-p NAME:=VALUE`` is."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), yaml.safe_load(value)


# ----------------------------------------------------------------------------------------- python, torch, GPU

def check_python(version: tuple[int, ...]) -> Finding:
    text = ".".join(map(str, version[:3]))
    if tuple(version[:2]) < MIN_PYTHON:
        return Finding(FAIL, "python", f"Python {text}; lisa_ros needs >= {'.'.join(map(str, MIN_PYTHON))}",
                       "use the Python of ROS 2 Humble (3.10) or Jazzy (3.12) for the venv")
    return Finding(OK, "python", f"Python {text} ({sys.executable})")


def check_torch() -> Finding:
    try:
        import torch
    except ImportError as error:
        return Finding(FAIL, "torch", f"torch cannot be imported ({error})",
                       "scripts/setup.sh (keeps a torch already installed below the venv, e.g. NVIDIA's on Jetson)")
    cuda = torch.version.cuda or "none (CPU build)"
    return Finding(OK, "torch", f"torch {torch.__version__}, CUDA {cuda}, at {Path(torch.__file__).parent}")


def check_cuda(device: str, cuda_available: bool, device_count: int, torch_version: str) -> Finding:
    if not device.startswith("cuda"):
        extra = f"; {device_count} CUDA device(s) unused" if cuda_available else ""
        return Finding(OK, "cuda", f"model.device is {device!r}{extra}")
    if not cuda_available:
        return Finding(FAIL, "cuda", f"model.device is {device!r} but torch {torch_version} sees no CUDA device",
                       "install a CUDA build of torch (Jetson: NVIDIA's wheel for your JetPack) and check nvidia-smi, "
                       "or run on the CPU: model.device cpu with model.precision fp32 (slow; tiny checkpoints only)")
    index = int(device.partition(":")[2] or 0)
    if index >= device_count:
        return Finding(FAIL, "cuda", f"model.device is {device!r} but only {device_count} GPU(s) are visible",
                       f"use cuda:0 .. cuda:{device_count - 1} (check CUDA_VISIBLE_DEVICES)")
    return Finding(OK, "cuda", f"{device} available ({device_count} GPU(s))")


def check_compute_capability(capability: tuple[int, int], arch_list: Sequence[str], precision: str,
                             gpu_name: str) -> list[Finding]:
    """Whether this torch build has kernels for the GPU (a cubin of the same major and a lower or equal minor, or
    PTX of an older one), and whether bf16 runs natively (sm_80 and newer)."""
    major, minor = capability
    sm = f"sm_{major}{minor}"

    def number(arch: str) -> tuple[int, int]:  # sm_86 -> (8, 6), sm_90a -> (9, 0), sm_120 -> (12, 0)
        digits = re.match(r"\D*_(\d+)", arch).group(1)
        return int(digits[:-1]), int(digits[-1])

    cubins = [number(a) for a in arch_list if a.startswith("sm_")]
    ptx = [number(a) for a in arch_list if a.startswith("compute_")]
    runs = any(m == major and n <= minor for m, n in cubins) or any((m, n) <= capability for m, n in ptx)
    findings = []
    if arch_list and not runs:
        findings.append(Finding(FAIL, "gpu", f"{gpu_name} is {sm}; this torch has kernels for {', '.join(arch_list)} "
                                             f"only ('no kernel image is available' at the first op)",
                                f"install a torch built for {sm} (Jetson Orin sm_87: NVIDIA's JetPack wheel or "
                                f"container)"))
    else:
        findings.append(Finding(OK, "gpu", f"{gpu_name}, compute capability {major}.{minor}"))
    if precision == "bf16" and capability < (8, 0):
        findings.append(Finding(WARN, "gpu", f"bf16 on {sm}: no native bf16 before sm_80 (emulated, slow)",
                                "use model.precision fp16 or int4 on this GPU"))
    return findings


# ------------------------------------------------------------------------------------------ memory estimate

@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    total_bytes: float
    explanation: str


def llama_parameter_counts(config: Mapping[str, Any]) -> tuple[int, int]:
    """(decoder-layer linear weights, every other LLM parameter incl. LISA's projector and [SEG] head) from a
    config.json's sizes: only the first are quantized."""
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    heads = config.get("num_attention_heads", 32)
    kv_width = hidden // heads * (config.get("num_key_value_heads") or heads)
    per_layer = 2 * hidden * hidden + 2 * hidden * kv_width + 3 * hidden * config["intermediate_size"]
    embeddings = config["vocab_size"] * hidden * (1 if config.get("tie_word_embeddings") else 2)
    out_dim = config.get("out_dim", 256)
    lisa_heads = (config.get("mm_hidden_size", 1024) + 1) * hidden + (hidden + 1) * hidden + (hidden + 1) * out_dim
    return layers * per_layer, embeddings + (2 * layers + 1) * hidden + lisa_heads


def estimate_memory(config: Mapping[str, Any], precision: str, device_type: str,
                    tiny: bool = False) -> MemoryEstimate:
    """The memory the model takes on ``device_type`` in ``precision``: its weights at their placed dtypes (decoder
    linears quantized for int8/int4, the rest in the compute dtype), plus ACTIVATION_SHARE of that and, on a GPU,
    the CUDA context. Released checkpoints add CLIP ViT-L/14 and SAM ViT-H; a tiny one's are a few MB."""
    linears, others = llama_parameter_counts(config)
    if precision in QUANTIZED_BYTES:
        compute = 2 if device_type == "cuda" else 4  # fp16 compute on a GPU, fp32 on the CPU (as the loader does)
        linear_bytes = QUANTIZED_BYTES[precision]
    else:
        compute = linear_bytes = {"fp32": 4, "fp16": 2, "bf16": 2}[precision]
    vision = 0 if tiny else CLIP_VIT_L_PARAMETERS + SAM_VIT_H_PARAMETERS
    weights = linears * linear_bytes + (others + vision) * compute
    context = CUDA_CONTEXT_BYTES if device_type == "cuda" else 0
    total = weights * (1 + ACTIVATION_SHARE) + context
    text = (f"{_count(linears)} decoder weights x {linear_bytes:.2f} bytes + {_count(others + vision)} other "
            f"weights{'' if tiny else ' (incl. CLIP ViT-L, SAM ViT-H)'} x {compute} bytes = {_size(weights)}, "
            f"+{ACTIVATION_SHARE:.0%} activations/KV cache{f' + {_size(context)} CUDA context' if context else ''}")
    return MemoryEstimate(total, text)


def _count(number: float) -> str:
    if number < 1e6:
        return f"{number:,.0f}"
    return f"{number / 1e9:.2f} G" if number >= 1e9 else f"{number / 1e6:.1f} M"


def _size(size: float) -> str:
    return f"{size / GB:.1f} GB" if size >= 0.1 * GB else f"{size / 1e6:.1f} MB"


def check_memory(free_bytes: float, total_bytes: float, estimate: MemoryEstimate, where: str,
                 precision: str) -> Finding:
    need = f"needs about {_size(estimate.total_bytes)} ({estimate.explanation})"
    have = f"{where}: {free_bytes / GB:.1f} GB free of {total_bytes / GB:.1f} GB"
    if free_bytes >= estimate.total_bytes:
        return Finding(OK, "memory", f"{have}; the model {need}")
    if total_bytes >= estimate.total_bytes:
        fix = "other processes hold the memory (nvidia-smi / top shows them): stop them"
    elif precision != "int4":
        fix = "use model.precision int4 (or int8), or a larger GPU"
    else:
        fix = "use a GPU with more memory (or the 7B checkpoint instead of 13B)"
    return Finding(FAIL, "memory", f"{have}; the model {need}", fix)


def available_host_memory() -> tuple[float, float]:
    """(MemAvailable, MemTotal) in bytes from /proc/meminfo."""
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        values[key] = float(rest.split()[0]) * 1024
    return values["MemAvailable"], values["MemTotal"]


# -------------------------------------------------------------------------------------------- bitsandbytes

def quantized_matmul_error(precision: str, device: str, backend: str = "bitsandbytes") -> float:
    """Runs one ``backend`` layer of ``precision`` forward on ``device``, built and filled by the loader's own
    functions; returns its relative error against the float matmul (raises whatever the kernel raises)."""
    import torch
    from torch import nn

    from lisa_ros.model import quantization
    from lisa_ros.model.loading import Placement

    target = torch.device(device)
    dtype = Placement(target, precision, backend).compute_dtype
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(64, 128, generator=generator)
    inputs = torch.randn(4, 128, generator=generator).to(device, dtype)
    layers = nn.Sequential(nn.Linear(128, 64, bias=False, device="meta"))
    quantization.replace_linears(layers, precision, dtype, backend, target)
    layer = layers[0]
    layer.weight = quantization.quantized_weight(layer, weight, dtype, target)
    with torch.no_grad():
        out = layer.eval()(inputs).float().cpu()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    expected = inputs.float().cpu() @ weight.T.to(dtype).float()
    return float((out - expected).norm() / expected.norm())


def check_bitsandbytes(precision: str, device: str, machine: str,
                       run: Callable[[str, str], float] = quantized_matmul_error) -> Finding:
    """A real quantized matmul on the device, not an import: on Jetson the PyPI wheel imports and then fails at the
    first 4-bit kernel."""
    if precision not in QUANTIZED_BYTES:
        return Finding(SKIP, "bitsandbytes", f"precision {precision}: bitsandbytes not used")
    try:
        version = importlib.metadata.version("bitsandbytes")
        error = run(precision, device)
    except importlib.metadata.PackageNotFoundError:
        return Finding(FAIL, "bitsandbytes", f"precision {precision} needs bitsandbytes, which is not installed",
                       "pip install bitsandbytes (Jetson: build it from source), or use model.precision fp16 / bf16")
    except Exception as error:  # the kernel's failure, whatever it is, is the finding
        fix = "use model.precision fp16 / bf16, or install a bitsandbytes built for this GPU"
        if machine == "aarch64":
            fix = ("on Jetson (Orin is sm_87) the PyPI aarch64 wheel is built for servers and fails at the first "
                   "4-bit kernel (bitsandbytes #1930): build bitsandbytes from source with "
                   "-DCOMPUTE_CAPABILITY=87, set model.quantization torchao (no build), or use model.precision fp16")
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return Finding(FAIL, "bitsandbytes", f"bitsandbytes {version} {precision} matmul on {device} failed: {message}",
                       fix)
    if not error < 0.2:
        return Finding(FAIL, "bitsandbytes", f"bitsandbytes {version} {precision} matmul on {device} ran but is wrong "
                                             f"(relative error {error:.2f})",
                       "use model.precision fp16 / bf16, or another bitsandbytes build for this device")
    return Finding(OK, "bitsandbytes", f"bitsandbytes {version}: one {precision} matmul ran on {device} "
                                       f"(relative error {error:.3f})")


def check_torchao(precision: str, device: str,
                  run: Callable[[str, str, str], float] = quantized_matmul_error) -> Finding:
    """model.quantization torchao: one torchao layer quantized and run on the device as the loader does it."""
    if precision not in QUANTIZED_BYTES:
        return Finding(SKIP, "torchao", f"precision {precision}: torchao not used")
    try:
        version = importlib.metadata.version("torchao")
        error = run(precision, device, "torchao")
    except importlib.metadata.PackageNotFoundError:
        return Finding(FAIL, "torchao", "model.quantization torchao needs torchao, which is not installed",
                       "pip install -r requirements/torchao.txt, or set model.quantization bitsandbytes")
    except Exception as error:  # the refusal (a GPU older than sm_80) or the kernel's failure is the finding
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return Finding(FAIL, "torchao", f"torchao {version} {precision} matmul on {device} failed: {message}",
                       "set model.quantization bitsandbytes, or use model.precision fp16")
    if not error < 0.2:
        return Finding(FAIL, "torchao", f"torchao {version} {precision} matmul on {device} ran but is wrong "
                                        f"(relative error {error:.2f})", "set model.quantization bitsandbytes")
    return Finding(OK, "torchao", f"torchao {version}: one {precision} matmul ran on {device} "
                                  f"(relative error {error:.3f})")


# ------------------------------------------------------------------------------------------------ weights

def hub_cache_dir(settings: Settings) -> Path:
    from huggingface_hub import constants

    return Path(settings.model("cache_dir") or constants.HF_HUB_CACHE).expanduser()


def cached_snapshot(repo_id: str, cache_dir: Path, revision: str, files: Sequence[str]) -> Path | None:
    """The cache's snapshot folder of ``repo_id`` when every one of ``files`` is in it (offline lookup)."""
    from huggingface_hub import try_to_load_from_cache

    found = [try_to_load_from_cache(repo_id, name, cache_dir=str(cache_dir), revision=revision or None)
             for name in files]
    if all(isinstance(path, str) for path in found):
        return Path(found[0]).parent
    return None


def _download_finding(what: str, option: str, name: str, size: float | None, cache_dir: Path,
                      offline: bool) -> Finding:
    if offline:
        return Finding(FAIL, "weights", f"{what} {name!r} is not in the Hugging Face cache {cache_dir} and offline "
                                        f"mode is on (HF_HUB_OFFLINE or model.local_files_only): configure will fail",
                       f"on a connected machine run `hf download {name}` and copy the cache here, or set "
                       f"{option} to a local copy")
    size_text = f"about {size / GB:.1f} GB" if size else "an unknown size"
    existing = next(p for p in [cache_dir, *cache_dir.parents] if p.exists())
    free = shutil.disk_usage(existing).free
    if size and free < size:
        return Finding(FAIL, "weights", f"{what} {name!r}: configure will download {size_text} into {cache_dir}, "
                                        f"but only {free / GB:.1f} GB are free there",
                       "free disk space, or point model.cache_dir (HF_HUB_CACHE) at a larger disk")
    return Finding(WARN, "weights", f"{what} {name!r} is not cached: configure will download {size_text} into "
                                    f"{cache_dir} ({free / GB:.0f} GB free)",
                   f"to start faster or offline: `hf download {name}` beforehand")


def check_checkpoint(settings: Settings, offline: bool) -> tuple[Finding, Path | None]:
    """The checkpoint (model.path): a complete local folder, a complete Hugging Face cache entry, or the download
    configure will make. Returns the folder, when there is one, for the other checks."""
    from lisa_ros.model.checkpoint import CHECKPOINT_FILES, local_checkpoint_problem

    path = settings.model("path")
    local = Path(path).expanduser()
    problem = local_checkpoint_problem(path)  # configure's own check; None for a Hugging Face id
    if problem:
        message, _, fix = problem.partition(" Fix: ")
        return Finding(FAIL, "weights", message, fix), local if local.is_dir() else None
    if local.exists():
        return Finding(OK, "weights", f"checkpoint {local} is complete (config, tokenizer, weights)"), local
    cache_dir = hub_cache_dir(settings)
    snapshot = cached_snapshot(path, cache_dir, settings.model("revision"), CHECKPOINT_FILES)
    if snapshot is not None and local_checkpoint_problem(str(snapshot)) is None:
        return Finding(OK, "weights", f"{path} is complete in the Hugging Face cache ({snapshot})"), snapshot
    size = KNOWN_CHECKPOINTS.get(path, (None, None))[1]
    return _download_finding("LISA checkpoint", "model.path", path, size, cache_dir, offline), snapshot


@dataclasses.dataclass(frozen=True)
class CheckpointSizes:
    sizes: dict[str, Any]  # config.json's LLaMA and LISA sizes (llama_parameter_counts reads them)
    tiny: bool  # one of the project's tiny checkpoints (its CLIP and SAM are a few MB)
    vision_tower: str  # the CLIP its config names


def checkpoint_sizes(settings: Settings, checkpoint: Path | None) -> tuple[CheckpointSizes | None, Finding | None]:
    """The checkpoint's sizes from its config.json, read and checked as loading does (a bad one is a finding), else
    the released checkpoint's known ones; (None, None) when neither is known."""
    from lisa_ros.model.checkpoint_config import CONFIG_FILE, CheckpointError, load_lisa_config

    if checkpoint is not None and (checkpoint / CONFIG_FILE).is_file():
        try:
            config = load_lisa_config(checkpoint)
        except CheckpointError as error:
            message, _, fix = str(error).partition(" Fix: ")
            return None, Finding(FAIL, "weights", message, fix)
        llama = config.llama
        sizes = {key: getattr(llama, key) for key in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                      "num_attention_heads", "num_key_value_heads", "vocab_size",
                                                      "tie_word_embeddings")}
        sizes.update(mm_hidden_size=config.mm_hidden_size, out_dim=config.out_dim)
        return CheckpointSizes(sizes, config.is_tiny, config.vision_tower), None
    known = KNOWN_CHECKPOINTS.get(settings.model("path"))
    return (CheckpointSizes(dict(known[0]), False, RELEASED_VISION_TOWER) if known else None), None


def check_vision_tower(settings: Settings, checkpoint: Path | None, named: str, offline: bool) -> Finding:
    """CLIP: model.vision_tower, else the one the checkpoint's config names (``named``; relative to the
    checkpoint's folder when it starts with ./ or ../)."""
    name = settings.model("vision_tower") or named
    if not name:
        return Finding(SKIP, "weights", "CLIP vision tower: unknown until the checkpoint's config.json is here")
    folder = (checkpoint / name) if name.startswith(("./", "../")) and checkpoint is not None else Path(name)
    folder = folder.expanduser()
    if folder.is_dir():
        weights = [w for w in ("model.safetensors", "pytorch_model.bin") if (folder / w).is_file()]
        if not (folder / "config.json").is_file() or not weights:
            return Finding(FAIL, "weights", f"CLIP vision tower {folder} lacks config.json or its weights "
                                            f"(model.safetensors / pytorch_model.bin)",
                           "copy the CLIP folder again, or set model.vision_tower to a complete one")
        return Finding(OK, "weights", f"CLIP vision tower {folder.resolve()} is complete")
    cache_dir = hub_cache_dir(settings)
    for weights in ("model.safetensors", "pytorch_model.bin"):
        snapshot = cached_snapshot(name, cache_dir, settings.model("revision"), ["config.json", weights])
        if snapshot is not None:
            return Finding(OK, "weights", f"CLIP vision tower {name} is in the Hugging Face cache ({snapshot})")
    return _download_finding("CLIP vision tower", "model.vision_tower", name, KNOWN_DOWNLOADS.get(name), cache_dir,
                             offline)


# ----------------------------------------------------------------------------------- numpy, OpenCV and ROS

def distribution_version(folder: Path, name: str) -> str | None:
    """The version of distribution ``name`` installed in ``folder`` (a dist-info or egg-info there), else None."""
    for distribution in importlib.metadata.distributions(path=[str(folder)]):
        if (distribution.metadata["Name"] or "").lower() == name:
            return distribution.version
    return None


def check_numpy(running: str, running_at: str, system: str | None, system_folder: Path | None) -> Finding:
    """numpy 2 in this interpreter breaks ROS's message modules and cv_bridge when they were built against the
    system's numpy 1 (the apt ROS on Ubuntu 24.04 / 22.04). ``system_folder`` None: no system ROS (ROS_DISTRO
    unset) to compare with."""
    if system_folder is None:
        return Finding(OK, "numpy", f"numpy {running} ({running_at}); ROS_DISTRO unset: no system ROS to compare with")
    if system is None:
        return Finding(OK, "numpy", f"numpy {running} ({running_at}); no system numpy in {system_folder}")
    if int(running.split(".")[0]) >= 2 > int(system.split(".")[0]):
        return Finding(FAIL, "numpy", f"numpy {running} ({running_at}) is imported, but ROS's message modules and "
                                      f"cv_bridge were built against the system's numpy {system} ({system_folder})",
                       "pip install 'numpy<2' in this venv, or make the venv with --system-site-packages and no pip "
                       "numpy (scripts/setup.sh does both)")
    return Finding(OK, "numpy", f"numpy {running} ({running_at}); system numpy {system}")


def message_module_problem() -> str | None:
    """Serializes a message with numpy fields through its C extension (what breaks on a numpy ABI mismatch)."""
    try:
        from rclpy.serialization import deserialize_message, serialize_message
        from sensor_msgs.msg import CameraInfo

        message = CameraInfo(k=[float(i) for i in range(9)])
        if list(deserialize_message(serialize_message(message), CameraInfo).k) != list(message.k):
            return "a CameraInfo did not survive serialization"
    except Exception as error:  # an ImportError or the numpy C-API error, named as it comes
        return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    return None


def cv2_locations(search_path: Sequence[str]) -> list[str]:
    """Every ``cv2`` importable from ``search_path``, in import order (the first one wins)."""
    found = []
    for entry in search_path:
        spec = importlib.machinery.PathFinder.find_spec("cv2", [entry or "."])
        if spec is not None:
            found.append(spec.origin or str(Path(entry) / "cv2"))
    return found


def check_opencv(locations: Sequence[str], distributions: Sequence[str]) -> list[Finding]:
    if not locations:
        return [Finding(FAIL, "opencv", "cv2 cannot be imported",
                        "install OpenCV: apt's python3-opencv under a --system-site-packages venv, or "
                        "pip install opencv-python-headless")]
    findings = [Finding(OK, "opencv", f"cv2 from {locations[0]}")]
    if len(locations) > 1:
        findings.append(Finding(WARN, "opencv", f"{len(locations)} cv2 on sys.path: {locations[0]} shadows "
                                                f"{', '.join(locations[1:])}",
                                "keep one: in a venv over the system ROS, pip uninstall opencv-python-headless and "
                                "use apt's python3-opencv (cv_bridge is built against it)"))
    if len(distributions) > 1:
        findings.append(Finding(WARN, "opencv", f"several OpenCV wheels in one environment: {', '.join(distributions)} "
                                                f"(they overwrite each other's cv2)",
                                "pip uninstall all but one of them, then reinstall that one"))
    return findings


def opencv_distributions() -> list[str]:
    names = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")
    found = []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


# --------------------------------------------------------------------------------------------------- DDS

_LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|::1|localhost|lo)$")


def profile_addresses(path: Path) -> list[str]:
    """Every address or interface a DDS XML profile names (Fast DDS whitelists and locators, Cyclone DDS
    NetworkInterface / NetworkInterfaceAddress)."""
    found = []
    for element in ElementTree.parse(path).iter():
        tag = element.tag.rpartition("}")[2]
        if tag in ("address", "NetworkInterfaceAddress", "interface") and (element.text or "").strip():
            found.extend(part.strip() for part in element.text.split(","))
        if tag == "NetworkInterface":
            found.extend(element.attrib[key] for key in ("address", "name") if key in element.attrib)
    return found


def check_network(env: Mapping[str, str]) -> list[Finding]:
    """RMW, domain, discovery range and the DDS profile, as lisa_node will inherit them from this shell."""
    rmw = env.get("RMW_IMPLEMENTATION") or ""
    findings = [Finding(OK, "dds", f"RMW_IMPLEMENTATION={rmw or 'unset (rmw_fastrtps_cpp, the default)'}")]
    domain = env.get("ROS_DOMAIN_ID", "")
    if domain and not (domain.isdigit() and int(domain) <= 232):
        findings.append(Finding(FAIL, "dds", f"ROS_DOMAIN_ID={domain!r} is not a domain (0..232; 0..101 is safe)",
                                "export ROS_DOMAIN_ID to the camera driver's domain (0 unless it was changed)"))
    else:
        findings.append(Finding(OK, "dds", f"ROS_DOMAIN_ID={domain or 'unset (0)'}: the camera driver must use the "
                                           f"same domain"))
    loopback: list[str] = []
    discovery = env.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "")
    if discovery.upper() in ("LOCALHOST", "OFF"):
        loopback.append(f"ROS_AUTOMATIC_DISCOVERY_RANGE={discovery}")
    if env.get("ROS_LOCALHOST_ONLY") == "1":
        loopback.append("ROS_LOCALHOST_ONLY=1")
        findings.append(Finding(WARN, "dds", "ROS_LOCALHOST_ONLY is deprecated since Jazzy",
                                "use ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (or SUBNET) instead"))
    if "cyclone" in rmw:
        profiles = [p.removeprefix("file://") for p in env.get("CYCLONEDDS_URI", "").split(",")
                    if p.strip() and not p.lstrip().startswith("<")]
    else:
        profiles = list(dict.fromkeys(env[k] for k in ("FASTDDS_DEFAULT_PROFILES_FILE",
                                                       "FASTRTPS_DEFAULT_PROFILES_FILE") if env.get(k)))
    for profile in profiles:
        path = Path(profile.strip()).expanduser()
        if not path.is_file():
            findings.append(Finding(FAIL, "dds", f"the DDS profile {path} does not exist",
                                    "fix the path, or unset the variable to use the RMW's defaults"))
            continue
        try:
            addresses = profile_addresses(path)
        except ElementTree.ParseError as error:
            findings.append(Finding(FAIL, "dds", f"the DDS profile {path} is not valid XML ({error})",
                                    "fix the file, or unset the variable"))
            continue
        if addresses and all(_LOOPBACK.match(a) for a in addresses):
            loopback.append(f"profile {path} (loopback addresses only)")
        else:
            findings.append(Finding(OK, "dds", f"DDS profile {path}"))
    if loopback:
        findings.append(Finding(WARN, "dds", f"discovery stays on this host: {'; '.join(loopback)}. A camera "
                                             f"driver on another machine will not be seen",
                                "fine when the camera runs on this host; otherwise unset these, or use a profile "
                                "that includes the camera's network"))
    else:
        findings.append(Finding(OK, "dds", f"discovery range {discovery or 'SUBNET (default)'}"))
    return findings


# ------------------------------------------------------------------------------------------- camera topic

def check_camera(settings: Settings, wait_s: float) -> list[Finding]:
    """The camera topic as lisa_node will subscribe it: a publisher visible within ``wait_s``, of the right type,
    with a QoS compatible with the node's subscription (IMAGE_QOS plus the params file's qos_overrides)."""
    try:
        import rclpy
        from rclpy.context import Context
        from rclpy.parameter import Parameter
        from rclpy.qos_overriding_options import InvalidQosOverridesError
        from rclpy.signals import SignalHandlerOptions
        from rclpy.subscription import Subscription

        from lisa_ros.node.rclpy_internals import declare_qos_overrides
    except ImportError as error:
        return [Finding(SKIP, "camera", f"rclpy cannot be imported ({error}): camera topic not checked",
                        "source the ROS 2 setup (and this venv) to check the camera topic")]
    try:
        from lisa_ros.node.requests import IMAGE_QOS
    except ImportError as error:
        return [Finding(FAIL, "camera", f"lisa_node cannot be imported ({error})",
                        "build the package (colcon build) and source its install/setup.bash")]
    context = Context()
    rclpy.init(context=context, args=[], signal_handler_options=SignalHandlerOptions.NO)
    overrides = [Parameter(name, value=value) for name, value in settings.parameters.items()
                 if name.startswith("qos_overrides.")]
    node = rclpy.create_node(f"lisa_doctor_{os.getpid()}", context=context, parameter_overrides=overrides,
                             start_parameter_services=False, enable_rosout=False)
    try:
        topics = [(settings.image_topic, IMAGE_TYPE)]
        if settings.compressed:
            topics.append((settings.image_topic + "/compressed", COMPRESSED_TYPE))
        findings, absent = [], []
        deadline = time.monotonic() + wait_s
        for topic, expected_type in topics:
            qos = copy.copy(IMAGE_QOS)
            try:
                declare_qos_overrides(node, Subscription, topic, qos)
            except (InvalidQosOverridesError, ValueError, TypeError) as error:
                findings.append(Finding(FAIL, "camera", f"qos_overrides.{topic}.subscription: {error}",
                                        "fix the qos_overrides entry in the params file"))
                continue
            publishers = node.get_publishers_info_by_topic(topic)
            while not publishers and time.monotonic() < deadline:
                time.sleep(0.1)
                publishers = node.get_publishers_info_by_topic(topic)
            images = [] if publishers else sorted(
                name for name, types in node.get_topic_names_and_types()
                if IMAGE_TYPE in types or COMPRESSED_TYPE in types)
            found = topic_findings(topic, expected_type, publishers, qos, images, wait_s)
            (findings if publishers else absent).extend(found)
        if findings and all(f.level == OK for f in findings):
            # With compressed on, the node subscribes both topics: either one is enough.
            absent = [dataclasses.replace(f, level=WARN) for f in absent]
        return findings + absent
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def _describe_qos(qos) -> str:
    return f"{qos.reliability.name.lower()}, {qos.durability.name.lower()}, {qos.history.name.lower()} {qos.depth}"


def topic_findings(topic: str, expected_type: str, publishers: Sequence, subscription_qos,
                   visible_images: Sequence[str], wait_s: float) -> list[Finding]:
    """Each publisher of ``topic`` (rclpy TopicEndpointInfo) against what the node subscribes there."""
    from rclpy.qos import LivelinessPolicy, QoSCompatibility, qos_check_compatible

    if subscription_qos.liveliness == LivelinessPolicy.SYSTEM_DEFAULT:
        # Every DDS the RMWs use makes it automatic; left as it is, each check only warns that it is unknown.
        subscription_qos = copy.copy(subscription_qos)
        subscription_qos.liveliness = LivelinessPolicy.AUTOMATIC
    if not publishers:
        images = visible_images
        seen = f"image topics visible: {', '.join(images)}" if images else "no image topic is visible at all"
        return [Finding(FAIL, "camera", f"no publisher on {topic} within {wait_s:g} s ({seen})",
                        "start the camera driver, or remap the node's image (image:=<topic>); a driver on another "
                        "host or domain needs the same ROS_DOMAIN_ID and a discovery range that reaches it")]
    findings = []
    for info in publishers:
        who = f"{info.node_namespace.rstrip('/')}/{info.node_name}"
        if info.topic_type != expected_type:
            fix = ("set compressed: true and remap image to the topic without /compressed"
                   if info.topic_type == COMPRESSED_TYPE else f"remap image to a {expected_type} topic")
            findings.append(Finding(FAIL, "camera", f"{who} publishes {info.topic_type} on {topic}; lisa_node "
                                                    f"subscribes {expected_type} there", fix))
            continue
        verdict, reason = qos_check_compatible(info.qos_profile, subscription_qos)
        text = (f"{who} publishes {topic} ({_describe_qos(info.qos_profile)}); the node subscribes "
                f"{_describe_qos(subscription_qos)}")
        if verdict == QoSCompatibility.ERROR:
            findings.append(Finding(FAIL, "camera", f"{text}: incompatible QoS, no image will arrive ({reason})",
                                    f"remove the qos_overrides for {topic} from the params file (the node's default, "
                                    f"best effort and volatile, matches any publisher), or make the camera publish "
                                    f"what the override asks for"))
        elif verdict == QoSCompatibility.WARNING:
            findings.append(Finding(WARN, "camera", f"{text}: {reason}"))
        else:
            findings.append(Finding(OK, "camera", text))
    return findings


# ---------------------------------------------------------------------------------------------- the run

def run_checks(settings: Settings, wait_s: float = 3.0, env: Mapping[str, str] | None = None) -> list[Finding]:
    env = os.environ if env is None else env
    findings = [check_python(tuple(sys.version_info))]
    findings += model_checks(settings)
    findings += ros_python_checks(env)
    findings += check_network(env)
    findings += check_camera(settings, wait_s)
    return findings


def params_finding(settings: Settings) -> Finding:
    """What configure would say of the parameters (the node's own validation), less model.path's local checkpoint
    problem, which the weights check reports."""
    from lisa_ros.core.node_config import ConfigError, NodeConfig
    from lisa_ros.model.checkpoint import local_checkpoint_problem

    try:
        NodeConfig.from_parameters(settings.parameters)
    except ConfigError as error:
        # The engine's problems come as one "model options: a; b" entry.
        reported = f"option 'path': {local_checkpoint_problem(settings.model('path'))}"
        problems = []
        for problem in error.problems:
            kept = [part for part in problem.removeprefix(ENGINE_PROBLEMS).split("; ") if part != reported]
            if kept:
                problems.append((ENGINE_PROBLEMS if problem.startswith(ENGINE_PROBLEMS) else "") + "; ".join(kept))
        if problems:
            return Finding(FAIL, "params", "configure would fail: " + "; ".join(problems),
                           "fix these parameters in the params file (or the overrides)")
        return Finding(OK, "params", "the parameters pass configure's checks but model.path's (see weights)")
    return Finding(OK, "params", "the parameters pass configure's checks")


def model_checks(settings: Settings) -> list[Finding]:
    findings = [params_finding(settings)]
    if settings.engine != "lisa":
        return findings + [Finding(SKIP, "model", f"engine {settings.engine!r}: no model to check")]
    torch_finding = check_torch()
    findings.append(torch_finding)
    precision, device = settings.model("precision"), settings.model("device")
    from lisa_ros.model.checkpoint import hub_offline

    offline = hub_offline(settings.model("local_files_only") is True)
    weights, checkpoint = check_checkpoint(settings, offline)
    sizes, config_problem = checkpoint_sizes(settings, checkpoint)
    findings += [weights] + ([config_problem] if config_problem else [])
    findings.append(check_vision_tower(settings, checkpoint, sizes.vision_tower if sizes else "", offline))
    if torch_finding.level == FAIL:
        return findings
    import torch

    cuda = check_cuda(device, torch.cuda.is_available(), torch.cuda.device_count(), torch.__version__)
    findings.append(cuda)
    estimate = estimate_memory(sizes.sizes, precision, device.partition(":")[0], sizes.tiny) if sizes else None
    if cuda.level == FAIL:
        need = f": the model needs about {_size(estimate.total_bytes)} ({estimate.explanation})" if estimate else ""
        findings.append(Finding(SKIP, "memory", f"no usable CUDA device (see cuda){need}"))
        findings.append(Finding(SKIP, settings.model("quantization"), "no usable CUDA device (see cuda)"))
        return findings
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        properties = torch.cuda.get_device_properties(index)
        findings += check_compute_capability(torch.cuda.get_device_capability(index), torch.cuda.get_arch_list(),
                                             precision, properties.name)
        free, total = torch.cuda.mem_get_info(index)
        where = f"{device} ({properties.name})"
    else:
        free, total = available_host_memory()
        where = "host memory"
    if estimate is None:
        findings.append(Finding(SKIP, "memory", f"{where}: {free / GB:.1f} GB free; no estimate without the "
                                                f"checkpoint's config.json"))
    else:
        findings.append(check_memory(free, total, estimate, where, precision))
    if settings.model("quantization") == "torchao":
        findings.append(check_torchao(precision, device))
    else:
        findings.append(check_bitsandbytes(precision, device, platform.machine()))
    return findings


def ros_python_checks(env: Mapping[str, str]) -> list[Finding]:
    import numpy

    system_folder = SYSTEM_DIST_PACKAGES if env.get("ROS_DISTRO") else None
    system = distribution_version(system_folder, "numpy") if system_folder else None
    findings = [check_numpy(numpy.__version__, str(Path(numpy.__file__).parent), system, system_folder)]
    try:
        import rclpy  # noqa: F401
    except ImportError as error:
        if env.get("ROS_DISTRO"):
            findings.append(Finding(FAIL, "ros", f"ROS {env['ROS_DISTRO']} is sourced but this Python "
                                                 f"({sys.executable}, {platform.python_version()}) cannot import "
                                                 f"rclpy ({error})",
                                    "make the venv from ROS's own Python (python3 -m venv --system-site-packages) "
                                    "and source the ROS setup before activating it"))
        findings.append(Finding(SKIP, "numpy", f"rclpy cannot be imported ({error}): message modules not checked"))
    else:
        problem = message_module_problem()
        if problem:
            findings.append(Finding(FAIL, "numpy", f"ROS message modules fail with this numpy: {problem}",
                                    "pip install 'numpy<2' in this venv when ROS was built against numpy 1"))
        else:
            findings.append(Finding(OK, "numpy", "ROS message modules work with this numpy (CameraInfo serialized)"))
    return findings + check_opencv(cv2_locations(sys.path), opencv_distributions())


def format_findings(findings: Sequence[Finding]) -> str:
    lines = []
    for finding in findings:
        lines.append(f"{finding.level:<4}  {finding.check:<12} {finding.message}")
        if finding.fix and finding.level in (WARN, FAIL):
            lines.append(f"{'':18} fix: {finding.fix}")
    errors = sum(f.level == FAIL for f in findings)
    warnings = sum(f.level == WARN for f in findings)
    lines.append(f"{errors} error(s), {warnings} warning(s)")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("params_file", nargs="?", type=Path,
                        help="the node's params file (as for --params-file or the launch's config); default: the "
                             "node's defaults")
    parser.add_argument("--model-path", help="override model.path")
    parser.add_argument("--precision", help="override model.precision")
    parser.add_argument("--device", help="override model.device")
    parser.add_argument("--image-topic", default="/image",
                        help="the camera topic the node's image is remapped to (default /image)")
    parser.add_argument("--node-name", default="lisa_node", help="the node's name, for its params file section")
    parser.add_argument("--param", "-p", action="append", type=parse_assignment, default=[], metavar="NAME=VALUE",
                        help="override any parameter (VALUE in YAML), e.g. -p compressed=true")
    parser.add_argument("--wait", type=float, default=3.0, help="s to wait for the camera's publisher (default 3)")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")


def settings_from_args(args: argparse.Namespace) -> Settings:
    parameters = read_params_file(args.params_file, args.node_name) if args.params_file else {}
    for option in ("model_path", "precision", "device"):
        if getattr(args, option) is not None:
            parameters[f"model.{option.removeprefix('model_')}"] = getattr(args, option)
    parameters.update(dict(args.param))
    # Resolved as the node resolves it without a namespace: qos_overrides are keyed by the resolved name.
    return Settings(parameters, "/" + args.image_topic.lstrip("/"))


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except (OSError, ValueError, yaml.YAMLError) as error:
        print(f"lisa-ros doctor: cannot read {args.params_file}: {error}", file=sys.stderr)
        return 2
    findings = run_checks(settings, args.wait)
    errors = sum(f.level == FAIL for f in findings)
    if args.json:
        print(json.dumps({"ok": errors == 0, "errors": errors, "warnings": sum(f.level == WARN for f in findings),
                          "findings": [dataclasses.asdict(f) for f in findings]}, indent=2))
    else:
        print(format_findings(findings))
    return 1 if errors else 0
