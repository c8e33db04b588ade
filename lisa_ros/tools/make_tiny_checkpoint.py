"""``lisa-ros make-tiny-checkpoint OUT_DIR``: a tiny LISA checkpoint in the released layout.

Writes ``OUT_DIR/lisa-tiny-<layout>/`` and ``OUT_DIR/clip-vit-tiny/``; use them with
``model.path: OUT_DIR/lisa-tiny-7b`` (the config points at the CLIP directory).
The answers look like LISA's; the masks are meaningless.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to write into (created)")
    parser.add_argument("--layout", choices=("7b", "13b"), default="7b",
                        help="added-token layout: 7b ([SEG] last) or 13b ([SEG] first)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same checkpoint)")
    parser.add_argument("--safetensors", action="store_true",
                        help="also write safetensors shards (as `lisa-ros convert` does)")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="steps teaching the tiny LLM LISA-style answers (0: leave it random)")
    parser.add_argument("--legacy", choices=("default", "true", "false", "absent"), default="default",
                        help="tokenizer_config.json's legacy flag (text after an added token with or without "
                             "the dummy prefix); default: the layout's (7b true, 13b false); absent: no key "
                             "(transformers 4.31 then used true)")


def run(args: argparse.Namespace) -> int:
    from lisa_ros.model.tiny import write_tiny_checkpoint

    extra = {} if args.train_steps is None else {"train_steps": args.train_steps}
    result = write_tiny_checkpoint(args.out_dir, layout=args.layout, seed=args.seed, safetensors=args.safetensors,
                                   legacy=args.legacy, **extra)
    print(f"LISA checkpoint: {result.lisa_dir}")
    print(f"CLIP vision tower: {result.clip_dir}")
    print(f"engine options: path={result.lisa_dir} device=cpu precision=fp32")
    return 0
