"""Every engine's options, declared once: name -> (default, description), importable without torch.

The node declares ``model.<name>`` for each option of the engine it runs, ``LisaOptions`` and ``PlumbingEngine`` take
their fields and defaults from here, and a test holds ``config/lisa.yaml`` and the
docs/model.md's options table to them: a new option is added here and nowhere else.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

LISA_OPTIONS: dict[str, tuple[Any, str]] = {
    "path": ("xinlai/LISA-7B-v1", "Hugging Face id, or a checkpoint directory (configure checks that its "
                                  "config, tokenizer and weights are there)"),
    "vision_tower": ("", "CLIP id or directory (\"\": the one the checkpoint's config names)"),
    "adapter": ("", "LoRA adapter directory written by `lisa-ros finetune` (\"\": none), merged into the weights "
                    "at load, before quantization (configure checks its files; results' model_id names it)"),
    "precision": ("int4", "fp32 | fp16 | bf16 | int8 | int4 (int4: LISA-7B in < 10 GB of GPU memory)"),
    "quantization": ("bitsandbytes", "bitsandbytes | torchao: the int4/int8 backend (torchao: faster decode, "
                                     "Jetson Orin from PyPI, GPUs sm_80+; docs/model.md 4-bit backends)"),
    "device": ("cuda", "cpu | cuda | cuda:N"),
    "max_new_tokens": (512, "longest answer, in tokens"),
    "clip_preprocess": ("center_crop", "center_crop | pad (pad: the LLM also sees the frame's left/right edges)"),
    "frame_cache_size": (4, "frames whose CLIP features and SAM embedding are kept (0 = none)"),
    "max_history_turns": (4, "conversation memory in turns (0 = stateless, like the reference)"),
    "compile": (False, "compile the single-token decode step once at configure (static KV cache, torch.compile, "
                        "CUDA graph on CUDA): faster batch-1 decoding on a GPU for a configure that takes longer; "
                        "needs a C++ compiler on the CPU, triton on CUDA"),
    "local_files_only": (False, "never touch the network (offline robots)"),
    "revision": ("", "Hugging Face hub revision (\"\": the default branch)"),
    "cache_dir": ("", "Hugging Face hub cache (\"\": the default)"),
}

# The deterministic stand-in engine's options: a slow engine and fault injection, for tests only.
PLUMBING_OPTIONS: dict[str, tuple[Any, str]] = {
    "delay_s": (0.0, "s each segment() takes"),
    "raise_on": ("", "a word; an instruction containing it makes segment() raise EngineError"),
    "hang_on": ("", "a word; an instruction containing it makes segment() hang for hang_s"),
    "oom_on": ("", "a word; an instruction containing it makes segment() raise EngineOutOfMemory"),
    "hang_s": (30.0, "s a hang lasts (cancel() and unload() end it early)"),
    "load_error": ("", "if set, load() fails with this message"),
    "load_delay_s": (0.0, "s load() takes (cancel() ends it early with an EngineError)"),
    "mask_score": (1.0, "every mask's score (LISA's: SAM's IoU prediction); below min_mask_score to test refusals"),
}

ENGINE_OPTIONS: dict[str, dict[str, tuple[Any, str]]] = {"lisa": LISA_OPTIONS, "plumbing": PLUMBING_OPTIONS}

# Every engine's option names (LISA's first): what a params file may hold as model.<key>.
MODEL_OPTION_KEYS: tuple[str, ...] = tuple(dict.fromkeys(key for options in ENGINE_OPTIONS.values()
                                                         for key in options))


def option_keys(engine_type: str) -> tuple[str, ...]:
    """One engine's option names (every engine's for an unknown type, so nothing set is lost unread)."""
    return tuple(ENGINE_OPTIONS.get(engine_type, dict.fromkeys(MODEL_OPTION_KEYS)))


def option_default(key: str, engine_type: str) -> Any:
    """``engine_type``'s default for option ``key`` (the first owner's for an unknown engine type)."""
    owner = ENGINE_OPTIONS.get(engine_type) or next(o for o in ENGINE_OPTIONS.values() if key in o)
    return owner[key][0]


def option_description(key: str) -> str:
    """The description of ``model.<key>`` (the engines it belongs to, then what it does)."""
    owners = [engine for engine, options in ENGINE_OPTIONS.items() if key in options]
    return f"{'/'.join(owners)} engine option: {ENGINE_OPTIONS[owners[0]][key][1]}"


def undeclared_parameter_reason(name: str, engine_type: str, declared: Iterable[str]) -> str:
    """Why ``name`` cannot be set on a node running ``engine_type``, and what can be set instead."""
    declared = sorted(declared)
    if name.startswith("model."):
        own = ", ".join(f"model.{key}" for key in option_keys(engine_type))
        owners = [engine for engine, options in ENGINE_OPTIONS.items() if name.removeprefix("model.") in options]
        if owners:
            return (f"{name} is an option of engine {' / '.join(owners)}, not of engine {engine_type!r}: set engine "
                    f"first (while unconfigured), or set one of {engine_type!r}'s options: {own}")
        return f"{name} is not an option of engine {engine_type!r}; its options are {own}"
    close = difflib.get_close_matches(name, declared, n=3)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return (f"{name} is not a lisa_node parameter; {hint}`ros2 param list <node>` lists them (docs/"
            "parameters.md)")
