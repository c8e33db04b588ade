"""``lisa-ros convert CHECKPOINT_DIR``: safetensors shards for a LISA ``.bin`` checkpoint.

Pickles are read with ``torch.load(weights_only=True)``; the result loads faster
and without unpickling, and the engine prefers it when present. By default the
shards are written next to the ``.bin`` files; ``--out`` writes a complete copy.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT_DIR",
                        help="a LISA checkpoint directory, or a Hugging Face id already in the cache")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="output directory (default: CHECKPOINT_DIR itself; required for a Hugging Face id)")
    parser.add_argument("--cache-dir", default="", help="Hugging Face cache directory (default: HF default)")


def run(args: argparse.Namespace) -> int:
    from lisa_ros.core.engine import EngineError
    from lisa_ros.model.checkpoint import convert_to_safetensors, resolve_checkpoint

    try:
        source = Path(args.checkpoint).expanduser()
        if not source.is_dir():
            if args.out is None:
                print("error: --out is required when converting from the Hugging Face cache "
                      "(the cache's snapshot files must not be modified)", file=sys.stderr)
                return 2
            source = resolve_checkpoint(args.checkpoint, cache_dir=args.cache_dir, local_files_only=True)
        written = convert_to_safetensors(source, Path(args.out) if args.out else source)
    except EngineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0
