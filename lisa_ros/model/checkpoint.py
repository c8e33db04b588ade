"""Finds, reads and converts LISA checkpoints and the CLIP vision tower.

Released checkpoints are sharded pickles (``pytorch_model-0000N-of-0000M.bin`` +
``pytorch_model.bin.index.json``); ``lisa-ros convert`` adds safetensors shards
(``model.safetensors.index.json``), which are preferred when present. Pickles are
only ever read with ``torch.load(weights_only=True)``. Every failure names the
file and the fix.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lisa_ros.model.checkpoint_config import CONFIG_FILE, CheckpointError, read_json
from lisa_ros.model.tokenization import TOKENIZER_MODEL_FILE

# (index file, single-file name, format), in order of preference.
_WEIGHT_LAYOUTS = (
    ("model.safetensors.index.json", "model.safetensors", "safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin", "bin"),
)
_LISA_PATTERNS = ["*.json", "*.model", "*.safetensors", "*.bin"]
# What loading reads from a checkpoint directory before its weights (``find_weight_files`` names those).
CHECKPOINT_FILES = (CONFIG_FILE, TOKENIZER_MODEL_FILE)


@dataclasses.dataclass(frozen=True)
class WeightFiles:
    files: tuple[Path, ...]
    format: str  # "safetensors" | "bin"


def hub_offline(local_files_only: bool) -> bool:
    return local_files_only or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def resolve_directory(
    name: str, *, what: str, patterns: list[str], revision: str = "", cache_dir: str = "",
    local_files_only: bool = False, fix_offline: str = "",
) -> Path:
    """A local directory as is, else a Hugging Face id through the hub cache (progress bar shown)."""
    local = Path(name).expanduser()
    if local.is_dir():
        return local
    if _looks_like_path(name):
        raise CheckpointError(f"{what} directory {local} does not exist. Fix: check the path")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = hub_offline(local_files_only)
    try:
        return Path(snapshot_download(
            repo_id=name, revision=revision or None, cache_dir=cache_dir or None,
            local_files_only=offline, allow_patterns=patterns,
        ))
    except LocalEntryNotFoundError as error:
        if offline:
            raise CheckpointError(
                f"{what} {name!r} is not in the Hugging Face cache ({cache_dir or 'default cache'}) and offline "
                f"mode is on (local_files_only or HF_HUB_OFFLINE=1). Fix: {fix_offline}"
            ) from error
        raise CheckpointError(f"{what} {name!r} could not be downloaded ({error}). Fix: check the network, "
                              f"or {fix_offline}") from error
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError, HFValidationError) as error:
        raise CheckpointError(f"{what} {name!r} (revision {revision or 'main'}) is not a readable Hugging Face "
                              f"repository or local directory ({type(error).__name__}). Fix: check the name") from error
    except OSError as error:  # network failures surface as OSError subclasses
        raise CheckpointError(f"{what} {name!r} could not be downloaded ({error}). Fix: check the network, "
                              f"or {fix_offline}") from error


def local_checkpoint_problem(path: str) -> str | None:
    """Why ``model.path`` cannot be loaded, from the file system alone (no weights read), else None: checked
    with the other options, so configure names it with every other problem instead of failing at load.

    A path that exists is a local checkpoint: a directory with ``CHECKPOINT_FILES`` and its weights. One that
    looks local (absolute, or starting with '.' or '~') but does not exist is a mistake. Anything else is a
    Hugging Face id, resolved at load (from the local cache when offline).
    """
    local = Path(path).expanduser()
    fix = "point model.path at a complete checkpoint directory (copy it again) or a Hugging Face id"
    if not local.exists():
        if _looks_like_path(path):
            return f"LISA checkpoint directory {local} does not exist. Fix: check the path"
        return None  # a Hugging Face id
    if not local.is_dir():
        return f"LISA checkpoint {local} is a file, not a checkpoint directory. Fix: {fix}"
    missing = [name for name in CHECKPOINT_FILES if not (local / name).is_file()]
    if missing:
        return (f"LISA checkpoint directory {local} lacks {' and '.join(missing)}. Fix: copy "
                f"{' and '.join(missing)} from the released checkpoint, or {fix}")
    try:
        find_weight_files(local)
    except CheckpointError as error:
        return str(error)
    return None


def resolve_checkpoint(path: str, **hub_options) -> Path:
    fix = (f"on a connected machine run `hf download {path}` and copy the cache to this machine, or set "
           f"model.path to a local copy of the checkpoint directory")
    return resolve_directory(path, what="LISA checkpoint", patterns=_LISA_PATTERNS, fix_offline=fix, **hub_options)


def resolve_vision_tower(name: str, checkpoint_dir: Path, **hub_options) -> Path:
    """CLIP: an explicit id/path, or the checkpoint config's, relative paths against the checkpoint."""
    if name.startswith(("./", "../")) and (checkpoint_dir / name).is_dir():
        return (checkpoint_dir / name).resolve()
    fix = (f"on a connected machine run `hf download {name} config.json model.safetensors` and copy the cache, "
           f"or set model.vision_tower to a local directory holding config.json and model.safetensors")
    directory = resolve_directory(name, what="CLIP vision tower", patterns=["config.json", "model.safetensors"],
                                  fix_offline=fix, **hub_options)
    if not (directory / "model.safetensors").is_file() and not (directory / "pytorch_model.bin").is_file():
        directory = resolve_directory(name, what="CLIP vision tower", patterns=["config.json", "pytorch_model.bin"],
                                      fix_offline=fix, **hub_options)
    return directory


def checkpoint_identity(directory: Path) -> str:
    """12 hex digits that tell checkpoints apart without reading their weights: a hash of the resolved path,
    config.json's bytes and each weight file's name, size and last 64 KiB (a .bin's zip directory holds its
    tensors' CRCs). Folders of one name elsewhere, or rewritten with other weights, differ; the same files
    give the same digits."""
    directory = directory.resolve()
    return _files_digest(directory, hashlib.sha256(str(directory).encode()))


def weights_identity(directory: Path) -> str:
    """``checkpoint_identity`` without the path: the same files give the same digits on any machine (an adapter
    trained on a workstation names its base this way, and the robot's copy of that base matches)."""
    return _files_digest(directory.resolve(), hashlib.sha256())


def _files_digest(directory: Path, digest) -> str:
    config = directory / CONFIG_FILE
    digest.update(config.read_bytes() if config.is_file() else b"")
    for path in sorted(p for p in directory.iterdir() if p.suffix in (".bin", ".safetensors") and p.is_file()):
        size = path.stat().st_size
        with path.open("rb") as handle:
            handle.seek(max(0, size - (1 << 16)))
            digest.update(f"\0{path.name}\0{size}\0".encode() + handle.read())
    return digest.hexdigest()[:12]


def find_weight_files(directory: Path) -> WeightFiles:
    fix_missing = "re-download the checkpoint (`hf download <id>`), or re-run `lisa-ros convert`"
    for index_name, single_name, kind in _WEIGHT_LAYOUTS:
        index_path = directory / index_name
        if index_path.is_file():
            weight_map = read_json(index_path, fix_missing).get("weight_map")
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise CheckpointError(f"{index_path} has no valid weight_map. Fix: {fix_missing}")
            files = []
            for name in sorted(set(weight_map.values())):
                if Path(name).name != name:
                    raise CheckpointError(f"{index_path} names {name!r}, outside the checkpoint. Fix: {fix_missing}")
                if not (directory / name).is_file():
                    raise CheckpointError(f"{directory / name} is missing (listed in {index_path}). Fix: "
                                          f"{fix_missing}")
                files.append(directory / name)
            return WeightFiles(tuple(files), kind)
        if (directory / single_name).is_file():
            return WeightFiles((directory / single_name,), kind)
    raise CheckpointError(f"{directory} holds no weights (pytorch_model.bin.index.json or "
                          f"model.safetensors.index.json). Fix: {fix_missing}")


def read_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(key, CPU tensor) pairs of one weight file, never executing pickled code.

    safetensors tensors are read one at a time; pickles are memory-mapped, so a
    shard is not copied into RAM before its tensors are checked and placed.
    """
    fix = f"delete {path.name} and download it again (or re-run `lisa-ros convert`)"
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                for key in handle.keys():
                    yield key, handle.get_tensor(key)
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{path} is corrupted or truncated ({error}). Fix: {fix}") from error
        return
    state = _load_pickle(path, fix)
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path} holds a non-tensor entry {key!r}. Fix: {fix}")
        yield key, value


def _load_pickle(path: Path, fix: str) -> dict:
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) pickle
    except pickle.UnpicklingError as error:
        if "weights_only" in str(error).lower() or "weights only" in str(error).lower():
            raise CheckpointError(f"{path} contains pickled objects other than tensors; refusing to load it "
                                  f"(weights_only). Fix: {fix} from the official repository") from error
        raise CheckpointError(f"{path} is corrupted or truncated ({error}). Fix: {fix}") from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is corrupted or truncated ({str(error).splitlines()[0]}). Fix: {fix}") from error
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict. Fix: {fix}")
    return state


def convert_to_safetensors(source: Path, out_dir: Path) -> list[Path]:
    """Writes ``model-0000N-of-0000M.safetensors`` + index next to (or a copy of) the checkpoint.

    Shards keep the released split and dtypes (bf16 LLM, fp32 SAM); one shard is
    in memory at a time. Non-weight files are copied when ``out_dir`` differs.
    """
    weights = find_weight_files(source)
    if weights.format == "safetensors":
        raise CheckpointError(f"{source} already holds safetensors weights. Fix: nothing to convert")
    out_dir.mkdir(parents=True, exist_ok=True)
    if out_dir.resolve() != source.resolve():
        for item in source.iterdir():
            if item.is_file() and item.suffix != ".bin" and item.name != "pytorch_model.bin.index.json":
                shutil.copy2(item, out_dir / item.name)
    return write_safetensors_shards([read_tensors(shard) for shard in weights.files], out_dir)


def write_safetensors_shards(shards: Sequence[Iterable[tuple[str, torch.Tensor]]], out_dir: Path) -> list[Path]:
    """Writes each shard's (key, tensor) pairs to ``model-0000N-of-0000M.safetensors`` + the index, one shard in
    memory at a time (a shard is iterated only when it is written), each renamed into place once complete."""
    total = len(shards)
    weight_map: dict[str, str] = {}
    total_size = 0
    written = []
    for number, shard in enumerate(shards, start=1):
        name = f"model-{number:05d}-of-{total:05d}.safetensors"
        tensors, seen = {}, set()
        for key, tensor in shard:
            # safetensors refuses shared storage; pickles may share it between tensors.
            pointer = tensor.untyped_storage().data_ptr()
            tensor = tensor.clone() if pointer in seen else tensor.contiguous()
            seen.add(pointer)
            tensors[key] = tensor
            weight_map[key] = name
            total_size += tensor.numel() * tensor.element_size()
        temporary = out_dir / (name + ".partial")
        save_file(tensors, str(temporary), metadata={"format": "pt"})
        temporary.replace(out_dir / name)
        written.append(out_dir / name)
        del tensors
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return written + [out_dir / "model.safetensors.index.json"]
