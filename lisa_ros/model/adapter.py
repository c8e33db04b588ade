"""LoRA adapters of LISA (written by ``lisa-ros finetune``), merged into the base's tensors as they load.

An adapter directory holds PEFT's own ``save_pretrained`` of LoRA on the LLM (``adapter_config.json`` +
``adapter_model.safetensors``), the modules trained in full keyed like a released checkpoint
(``trained_modules.safetensors``) and ``lisa_ros_adapter.json`` (which base it was trained on).
Deploying merges it BEFORE placement and quantization, as LISA's own deploy script merges LoRA into the
16-bit weights and then quantizes: W' = W + scale * B @ A in fp32 for each LoRA pair (scale = alpha / r,
or alpha / sqrt(r) with rsLoRA), and the trained modules replace the base's tensors. PEFT is not needed
here: the robot reads the files itself, lazily (``safe_open``), never unpickling anything.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from lisa_ros.model.checkpoint import (
    find_weight_files,
    read_tensors,
    weights_identity,
    write_safetensors_shards,
)
from lisa_ros.model.checkpoint_config import CONFIG_FILE, CheckpointError, read_json
from lisa_ros.model.loading import Named, Placement, TensorSource, checkpoint_key
from lisa_ros.model.modeling import LisaModel

CONFIG = "adapter_config.json"
LORA_WEIGHTS = "adapter_model.safetensors"
TRAINED_WEIGHTS = "trained_modules.safetensors"
DESCRIPTION = "lisa_ros_adapter.json"
ADAPTER_FILES = (CONFIG, LORA_WEIGHTS, TRAINED_WEIGHTS, DESCRIPTION)
FORMAT = "lisa_ros.adapter/1"

# LLaMA decoder linears LoRA may target (name -> the block holding it); LISA's recipe uses q_proj and v_proj.
LLM_LINEARS = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
               "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
# Released-checkpoint keys of the modules LISA's recipe trains in full: exact keys, then key prefixes.
TRAINED_IN_FULL_KEYS = ("lm_head.weight", "model.embed_tokens.weight")
TRAINED_IN_FULL_PREFIXES = ("model.text_hidden_fcs.", "model.visual_model.mask_decoder.")
# PEFT LoRA settings whose adapters are not W + scale * B @ A on the released base: refused when set.
_UNMERGEABLE = {
    "use_dora": "DoRA (weight-decomposed LoRA)", "use_qalora": "QA-LoRA", "lora_bias": "LoRA with a bias",
    "alora_invocation_tokens": "activated LoRA (aLoRA)", "layer_replication": "layer replication",
    "rank_pattern": "per-module ranks (rank_pattern)", "alpha_pattern": "per-module alphas (alpha_pattern)",
    "modules_to_save": "modules_to_save (modules trained in full belong in trained_modules.safetensors)",
    "trainable_token_indices": "trainable tokens", "target_parameters": "LoRA on parameters (target_parameters)",
    "fan_in_fan_out": "fan_in_fan_out (transposed Conv1D weights)", "megatron_config": "Megatron layers",
    "use_bdlora": "block-diagonal LoRA", "loftq_config": "LoftQ", "corda_config": "CorDA",
    "lora_ga_config": "LoRA-GA", "astra_config": "ASTRA", "velora_config": "VeLoRA",
    "monteclora_config": "MonteCLoRA", "arrow_config": "Arrow routing", "kasa_config": "KaSA",
}
# Initialisations that leave the base weights as released (PiSSA, OLoRA, CorDA, LoftQ ... rewrite them).
_BASE_PRESERVING_INITS = (True, False, "gaussian", "eva")
_MAX_RANK = 65_536
_PEFT_KEY = re.compile(r"base_model\.model\.(model\.layers\.\d+\.(self_attn|mlp)\.(\w+))\.lora_([AB])\.weight")


class AdapterError(CheckpointError):
    """An adapter file is missing, malformed, of an unsupported kind or made for another base."""


@dataclasses.dataclass(frozen=True)
class LoraPair:
    a_key: str                   # lora_A in adapter_model.safetensors: (r, in_features)
    b_key: str                   # lora_B: (out_features, r)
    shape: tuple[int, int]       # the base weight it updates: (out_features, in_features)


@dataclasses.dataclass(frozen=True)
class Adapter:
    directory: Path
    name: str                        # the directory's name: what results' model_id and diagnostics show
    base: str                        # the model_id it was trained on (lisa_ros_adapter.json)
    base_identity: str               # weights_identity of that base
    scale: float                     # lora_alpha / r (rsLoRA: lora_alpha / sqrt(r))
    lora: dict[str, LoraPair]        # released-checkpoint key of the updated weight -> its pair
    trained: dict[str, tuple[int, ...]]  # released-checkpoint key -> shape, in trained_modules.safetensors

    @functools.cached_property
    def identity(self) -> str:
        """12 hex digits of the adapter's files (names and every byte): a copy elsewhere has the same digits."""
        digest = hashlib.sha256()
        for name in ADAPTER_FILES:
            with (self.directory / name).open("rb") as handle:
                digest.update(f"\0{name}\0".encode() + hashlib.file_digest(handle, "sha256").digest())
        return digest.hexdigest()[:12]

    def check_base(self, base_dir: Path) -> None:
        """Refuses a base other than the one the adapter was trained on (its LoRA deltas would be noise there).

        ``weights_identity`` hashes the base's files, not where they are: a copy of the base on the robot
        (another cache folder, another machine) is accepted."""
        found = weights_identity(base_dir)
        if found != self.base_identity:
            raise AdapterError(
                f"adapter {self.directory} was trained on {self.base!r} (identity {self.base_identity}) but the "
                f"base checkpoint {base_dir} has identity {found}. Fix: set model.path to the checkpoint the adapter "
                f"was fine-tuned from, or fine-tune an adapter on {base_dir} (`lisa-ros finetune`).")

    def check_shapes(self, shapes: Mapping[str, tuple[int, ...]], base: str) -> None:
        """Every weight the adapter changes exists in ``shapes`` (released-checkpoint key -> shape) with its
        shape: checked before any tensor is read, so a mismatch never half-loads a model."""
        for key in [*self.lora, *self.trained]:
            self.check_shape(key, shapes.get(key), base)

    def check_shape(self, key: str, found: tuple[int, ...] | None, base: str) -> None:
        """``found``: the shape of ``key`` in ``base`` (None: it has no such weight)."""
        expected = self.lora[key].shape if key in self.lora else self.trained[key]
        where = (f"{self.directory / LORA_WEIGHTS} ({self.lora[key].a_key})" if key in self.lora
                 else str(self.directory / TRAINED_WEIGHTS))
        if found is None:
            raise AdapterError(f"{where}: {key} names no weight of {base}. Fix: use an adapter made for this base "
                               f"(see {DESCRIPTION}'s base)")
        if tuple(found) != tuple(expected):
            raise AdapterError(f"{where}: {key} has shape {tuple(found)} in {base} but the adapter gives "
                               f"{tuple(expected)}. Fix: use an adapter made for this base (see {DESCRIPTION}'s base)")

    @contextlib.contextmanager
    def open(self) -> Iterator[Adapting]:
        """The adapter's tensor files, open (lazily read) while the base's tensors stream through."""
        with _open_safetensors(self.directory / LORA_WEIGHTS) as lora, \
                _open_safetensors(self.directory / TRAINED_WEIGHTS) as trained:
            yield Adapting(self, lora, trained)


@dataclasses.dataclass
class Adapting:
    """An adapter whose files are open: ``adapt`` turns a base tensor into the adapted one."""

    adapter: Adapter
    lora_file: Any
    trained_file: Any
    applied: set[str] = dataclasses.field(default_factory=set)

    def adapt(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        """The base tensor under released-checkpoint ``key``: merged with its LoRA pair (fp32), replaced by the
        trained module's, or as it was."""
        adapter = self.adapter
        if key in adapter.lora:
            pair = adapter.lora[key]
            a = self.lora_file.get_tensor(pair.a_key).float()  # (r, in_features)
            b = self.lora_file.get_tensor(pair.b_key).float()  # (out_features, r)
            tensor = tensor.float() + adapter.scale * (b @ a)   # (out_features, in_features)
        elif key in adapter.trained:
            tensor = self.trained_file.get_tensor(key)
        else:
            return tensor
        self.applied.add(key)
        return tensor

    def check_all_applied(self, base: str) -> None:
        """The adapter's every weight met its base tensor (a source could stop short of the state)."""
        missing = sorted((set(self.adapter.lora) | set(self.adapter.trained)) - self.applied)
        if missing:
            raise AdapterError(f"{self.adapter.directory}: {len(missing)} adapted weights never came from {base}, "
                               f"e.g. {missing[:4]}. Fix: the base checkpoint is incomplete; re-download it")


def adapter_name(directory: str | Path) -> str:
    """The adapter's name in results and diagnostics: the ``name`` ``lisa-ros finetune`` wrote (its run's
    folder, e.g. ``kitchen-v1``: the adapter itself is always ``RUN/adapter``), else its directory's."""
    directory = Path(directory).expanduser().resolve()
    try:
        name = json.loads((directory / DESCRIPTION).read_text(encoding="utf-8")).get("name")
    except (OSError, ValueError, AttributeError):
        name = None  # read_adapter reports what is wrong with the file
    return name if isinstance(name, str) and name.strip() else directory.name


def read_adapter(directory: str | Path) -> Adapter:
    """Reads and validates an adapter directory (configs and tensor headers; no tensor is read)."""
    directory = Path(directory).expanduser()
    fix_files = (f"point model.adapter at a directory written by `lisa-ros finetune` (it holds "
                 f"{', '.join(ADAPTER_FILES)})")
    if not directory.is_dir():
        raise AdapterError(f"adapter directory {directory} does not exist. Fix: {fix_files}")
    missing = [name for name in ADAPTER_FILES if not (directory / name).is_file()]
    if missing:
        raise AdapterError(f"adapter directory {directory} lacks {', '.join(missing)}. Fix: {fix_files}")
    description = read_json(directory / DESCRIPTION, fix_files)
    if description.get("format") != FORMAT:
        raise AdapterError(f"{directory / DESCRIPTION}: format {description.get('format')!r} is not {FORMAT!r}. "
                           f"Fix: {fix_files}")
    for field in ("base", "base_identity"):
        if not isinstance(description.get(field), str) or not description[field]:
            raise AdapterError(f"{directory / DESCRIPTION}: {field!r} must be a non-empty string. Fix: {fix_files}")
    rank, scale, targets = _read_lora_config(directory / CONFIG)
    return Adapter(directory=directory, name=adapter_name(directory), base=description["base"],
                   base_identity=description["base_identity"], scale=scale,
                   lora=_read_lora_pairs(directory / LORA_WEIGHTS, rank, targets),
                   trained=_read_trained(directory / TRAINED_WEIGHTS))


def adapter_problem(directory: str) -> str | None:
    """Why ``model.adapter`` cannot be used, from its files alone (configure names it with the other options)."""
    try:
        read_adapter(directory)
    except AdapterError as error:
        return str(error)
    return None


def _read_lora_config(path: Path) -> tuple[int, float, set[str]]:
    """(rank, merge scale, target module names) of PEFT's adapter_config.json, refusing what cannot merge exactly."""
    fix = "fine-tune with `lisa-ros finetune` (plain LoRA on the LLM's linear layers)"
    config = read_json(path, fix)
    if config.get("peft_type") != "LORA":
        raise AdapterError(f"{path}: peft_type {config.get('peft_type')!r} is not 'LORA'; only LoRA adapters merge "
                           f"into LISA's weights. Fix: {fix}")
    unmergeable = [f"{what} ({field}={config[field]!r})" for field, what in _UNMERGEABLE.items() if config.get(field)]
    if config.get("bias", "none") != "none":
        unmergeable.append(f"trained biases (bias={config['bias']!r})")
    if config.get("init_lora_weights", True) not in _BASE_PRESERVING_INITS:
        unmergeable.append(f"an initialisation that rewrites the base weights "
                           f"(init_lora_weights={config['init_lora_weights']!r})")
    if unmergeable:
        raise AdapterError(f"{path}: {'; '.join(unmergeable)}: not plain LoRA, which is all lisa_ros merges exactly "
                           f"into the released weights. Fix: {fix}")
    rank, alpha, rslora = config.get("r"), config.get("lora_alpha"), config.get("use_rslora", False)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 < rank <= _MAX_RANK:
        raise AdapterError(f"{path}: r={rank!r} must be an integer in [1, {_MAX_RANK}]. Fix: {fix}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < math.inf:
        raise AdapterError(f"{path}: lora_alpha={alpha!r} must be a positive number. Fix: {fix}")
    if not isinstance(rslora, bool):
        raise AdapterError(f"{path}: use_rslora={rslora!r} must be true or false. Fix: {fix}")
    targets = config.get("target_modules")
    if not isinstance(targets, list) or not targets or not set(targets) <= set(LLM_LINEARS):
        raise AdapterError(f"{path}: target_modules={targets!r} must list LLaMA decoder linears among "
                           f"{sorted(LLM_LINEARS)} (LISA's recipe: q_proj, v_proj). Fix: {fix}")
    return rank, alpha / (math.sqrt(rank) if rslora else rank), set(targets)


@contextlib.contextmanager
def _open_safetensors(path: Path) -> Iterator[Any]:
    """safe_open, its failures named (only the opening's: safetensors checks the header against the file's size)."""
    with contextlib.ExitStack() as stack:
        try:
            handle = stack.enter_context(safe_open(str(path), framework="pt", device="cpu"))
        except (SafetensorError, OSError) as error:
            raise AdapterError(f"{path} is corrupted or truncated ({error}). Fix: copy the adapter again") from error
        yield handle


def _float_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """key -> shape of every tensor in a safetensors file, from its header; refuses non-float tensors."""
    shapes = {}
    with _open_safetensors(path) as handle:
        for key in handle.keys():
            slice_ = handle.get_slice(key)
            if slice_.get_dtype() not in ("F32", "BF16", "F16"):
                raise AdapterError(f"{path}: {key} is {slice_.get_dtype()}, not fp32/bf16/fp16. Fix: copy the "
                                   f"adapter again, or fine-tune it again")
            shapes[key] = tuple(slice_.get_shape())
    return shapes


def _read_lora_pairs(path: Path, rank: int, targets: set[str]) -> dict[str, LoraPair]:
    """PEFT's keys (``base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight``) as pairs per weight."""
    fix = "fine-tune the adapter again (PEFT's save_pretrained of LoRA on the LLM, `lisa-ros finetune`)"
    halves: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = {}
    for key, shape in _float_shapes(path).items():
        match = _PEFT_KEY.fullmatch(key)
        if match is None or match[3] not in targets or LLM_LINEARS[match[3]] != match[2]:
            raise AdapterError(f"{path}: {key} is not a LoRA weight of a target_modules linear of the LLM "
                               f"({sorted(targets)}). Fix: {fix}")
        halves.setdefault(match[1] + ".weight", {})[match[4]] = (key, shape)
    pairs = {}
    for weight, half in sorted(halves.items()):
        if set(half) != {"A", "B"}:
            raise AdapterError(f"{path}: {weight} has lora_{next(iter(half))} but not its other half. Fix: {fix}")
        (a_key, a_shape), (b_key, b_shape) = half["A"], half["B"]
        if len(a_shape) != 2 or len(b_shape) != 2 or a_shape[0] != rank or b_shape[1] != rank:
            raise AdapterError(f"{path}: {a_key} {a_shape} and {b_key} {b_shape} are not (r, in) and (out, r) with "
                               f"r={rank} of adapter_config.json. Fix: {fix}")
        pairs[weight] = LoraPair(a_key, b_key, (b_shape[0], a_shape[1]))
    if not pairs:
        raise AdapterError(f"{path} holds no LoRA weights. Fix: {fix}")
    return pairs


def _read_trained(path: Path) -> dict[str, tuple[int, ...]]:
    allowed = (f"{', '.join(TRAINED_IN_FULL_KEYS)} or keys under "
               f"{', '.join(p + '*' for p in TRAINED_IN_FULL_PREFIXES)}")
    shapes = _float_shapes(path)
    for key in shapes:
        if key not in TRAINED_IN_FULL_KEYS and not key.startswith(TRAINED_IN_FULL_PREFIXES):
            raise AdapterError(f"{path}: {key} is not a module LISA's recipe trains in full ({allowed}, keyed like "
                               f"a released checkpoint). Fix: fine-tune the adapter again with `lisa-ros finetune`")
    return shapes


def adapted_tensors(source: TensorSource, adapter: Adapter) -> TensorSource:
    """``source`` with each LoRA-updated weight merged (fp32, before the loader's cast or quantization) and the
    trained modules in place of the base's; shapes are checked against the model's state before anything loads."""

    def adapted(model: LisaModel, state: Mapping[str, torch.Tensor], placement: Placement) -> Iterator[Named]:
        adapter.check_shapes({checkpoint_key(name): tuple(t.shape) for name, t in state.items()}, "the base model")
        with adapter.open() as adapting:
            for name, tensor in source(model, state, placement):
                yield name, adapting.adapt(checkpoint_key(name), tensor)
            adapting.check_all_applied("the base checkpoint")

    return adapted


def write_merged_checkpoint(base_dir: Path, adapter_dir: Path, out_dir: Path) -> list[Path]:
    """The base with the adapter merged, in the released layout (config, tokenizer files, safetensors shards +
    index) that the loader reads unchanged, without the adapter. Merged weights keep the base's dtypes (bf16 LLM).

    ``out_dir`` must not exist: it is written as ``<out_dir>.partial`` and renamed once complete.
    """
    adapter = read_adapter(adapter_dir)
    adapter.check_base(base_dir)
    if out_dir.exists():
        raise AdapterError(f"{out_dir} already exists. Fix: name a new output directory")
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted merge
    weights = find_weight_files(base_dir)
    index_names = {"model.safetensors.index.json", "pytorch_model.bin.index.json"}
    try:
        partial.mkdir(parents=True)
        for item in base_dir.iterdir():
            if item.is_file() and item.suffix not in (".bin", ".safetensors") and item.name not in index_names:
                shutil.copy2(item, partial / item.name)
        config = read_json(base_dir / CONFIG_FILE, "re-download the base checkpoint")
        for field in ("vision_tower", "mm_vision_tower"):
            if isinstance(config.get(field), str) and config[field].startswith(("./", "../")):
                relative = os.path.relpath((base_dir / config[field]).resolve(), out_dir.resolve())
                config[field] = relative if relative.startswith("..") else f"./{relative}"
        config["lisa_ros_merged_adapter"] = {"name": adapter.name, "identity": adapter.identity,
                                             "base": adapter.base, "base_identity": adapter.base_identity}
        (partial / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        with adapter.open() as adapting:
            def merged(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
                for key, tensor in read_tensors(path):
                    if key in adapter.lora or key in adapter.trained:
                        adapter.check_shape(key, tuple(tensor.shape), str(base_dir))
                        tensor = adapting.adapt(key, tensor).to(tensor.dtype)
                    yield key, tensor

            written = write_safetensors_shards([merged(path) for path in weights.files], partial)
            adapting.check_all_applied(str(base_dir))
        partial.rename(out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return [out_dir / path.name for path in written]
