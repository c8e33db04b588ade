"""``lisa-ros merge-adapter BASE ADAPTER OUT``: a checkpoint with a fine-tuned adapter merged in.

The alternative to ``model.adapter``: OUT is in the released layout (config, tokenizer files, safetensors
shards + index), so ``model.path: OUT`` loads it at any precision with nothing else to configure, and it
can be shared or converted like the base. The adapter must have been trained on BASE.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("base", metavar="BASE",
                        help="the LISA checkpoint the adapter was fine-tuned from: a directory, or a Hugging Face id "
                             "already in the cache")
    parser.add_argument("adapter", metavar="ADAPTER", help="the adapter directory `lisa-ros finetune` wrote")
    parser.add_argument("out", metavar="OUT", help="the merged checkpoint's directory (must not exist)")
    parser.add_argument("--cache-dir", default="", help="Hugging Face cache directory (default: HF default)")


def run(args: argparse.Namespace) -> int:
    from lisa_ros.core.engine import EngineError
    from lisa_ros.model.adapter import write_merged_checkpoint
    from lisa_ros.model.checkpoint import resolve_checkpoint

    try:
        base = resolve_checkpoint(args.base, cache_dir=args.cache_dir, local_files_only=True)
        written = write_merged_checkpoint(base, Path(args.adapter).expanduser(), Path(args.out).expanduser())
    except EngineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0
