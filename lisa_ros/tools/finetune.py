"""``lisa-ros finetune DATASET --model BASE --out OUT``: LISA's fine-tuning recipe (LoRA with PEFT) on a training set.

DATASET is a folder written by ``lisa-ros import-labels`` (or ``lisa-ros make-shapes-task``).
OUT receives ``adapter/`` (the best validation gIoU: deploy it with the node's ``model.adapter``),
``last/``, ``resume/``, ``log.csv`` and ``tensorboard/``. Ctrl-C stops after the current step,
saved; ``--resume`` continues. Defaults are the released training code's; see ``--help``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

DEFAULTS_NOTE = "LISA's released recipe"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", metavar="DATASET", help="training-set folder (dataset.json, train.jsonl, val.jsonl)")
    parser.add_argument("--model", required=True, help="base LISA checkpoint: a directory or a Hugging Face id")
    parser.add_argument("--out", required=True, help="output folder (created; --resume to continue a run in it)")
    parser.add_argument("--vision-tower", default="", help="CLIP directory or id (default: the checkpoint config's)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "int4"), default="fp32",
                        help="fp32 (default; CPU), bf16, or int4 = QLoRA: the base's decoder layers in "
                             "bitsandbytes 4-bit, adapters and trained modules in fp32")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute LLM activations "
                        "in the backward pass (less memory, ~30%% slower)")
    recipe = parser.add_argument_group(f"recipe (defaults: {DEFAULTS_NOTE})")
    recipe.add_argument("--epochs", type=int, default=10)
    recipe.add_argument("--batch-size", type=int, default=2, help="samples per micro-batch (default 2)")
    recipe.add_argument("--grad-accumulation", type=int, default=10, help="micro-batches per optimizer step")
    recipe.add_argument("--lr", type=float, default=3e-4)
    recipe.add_argument("--warmup-steps", type=int, default=None,
                        help="linear warm-up steps (default: min(100, a tenth of all steps)), then linear decay to 0")
    recipe.add_argument("--weight-decay", type=float, default=0.0)
    recipe.add_argument("--clip-grad", type=float, default=1.0, help="gradient norm clipping")
    recipe.add_argument("--lora-r", type=int, default=8)
    recipe.add_argument("--lora-alpha", type=int, default=16)
    recipe.add_argument("--lora-dropout", type=float, default=0.05)
    recipe.add_argument("--ce-weight", type=float, default=1.0)
    recipe.add_argument("--bce-weight", type=float, default=2.0)
    recipe.add_argument("--dice-weight", type=float, default=0.5)
    recipe.add_argument("--seed", type=int, default=0)
    run_group = parser.add_argument_group("run")
    run_group.add_argument("--resume", action="store_true", help="continue the run saved in OUT/resume")
    run_group.add_argument("--max-new-tokens", type=int, default=32, help="validation answers' length limit")
    run_group.add_argument("--feature-cache-mb", type=int, default=4096,
                           help="host memory for the frozen encoders' features (default 4096 MB)")
    run_group.add_argument("--save-every", type=int, default=100,
                           help="optimizer steps between resume points (also each epoch end and on Ctrl-C)")
    run_group.add_argument("--no-progress", action="store_true", help="no progress bars")
    run_group.add_argument("--merge", action="store_true",
                           help="also write OUT/merged: the best adapter merged into the base (released layout)")
    run_group.add_argument("--local-files-only", action="store_true", help="never download the base")
    run_group.add_argument("--revision", default=None)
    run_group.add_argument("--cache-dir", default=None)


def run(args: argparse.Namespace) -> int:
    from lisa_ros.model.checkpoint_config import CheckpointError
    from lisa_ros.training.dataset import DatasetError
    from lisa_ros.training.trainer import INTERRUPTED, Recipe, RunOptions, Trainer, merged_output

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    recipe = Recipe(epochs=args.epochs, batch_size=args.batch_size, grad_accumulation=args.grad_accumulation,
                    lr=args.lr, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
                    clip_grad=args.clip_grad, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
                    lora_dropout=args.lora_dropout, ce_weight=args.ce_weight, bce_weight=args.bce_weight,
                    dice_weight=args.dice_weight, seed=args.seed)
    options = RunOptions(model=args.model, vision_tower=args.vision_tower, device=args.device,
                         precision=args.precision, gradient_checkpointing=args.gradient_checkpointing,
                         max_new_tokens=args.max_new_tokens, feature_cache_mb=args.feature_cache_mb,
                         save_every=args.save_every, progress=not args.no_progress, revision=args.revision,
                         cache_dir=args.cache_dir, local_files_only=args.local_files_only)
    out = Path(args.out)
    try:
        trainer = Trainer(Path(args.dataset), out, recipe, options, resume=args.resume)
        status = trainer.train()
    except (DatasetError, CheckpointError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if status == INTERRUPTED:
        print(f"interrupted after step {trainer.step}, saved: continue with the same command and --resume",
              file=sys.stderr)
        return status
    best = f" (validation gIoU {trainer.best['gIoU']:.4f}, epoch {trainer.best['epoch']})" if trainer.best else ""
    print(f"adapter: {out / 'adapter'}{best}; last: {out / 'last'}; log: {out / 'log.csv'}")
    base = next((entry for entry in trainer.history if entry["epoch"] == 0), None)
    if trainer.best and base and trainer.best["gIoU"] < base["gIoU"]:
        print(f"warning: the adapter scores below the base on the validation split (gIoU {trainer.best['gIoU']:.4f} "
              f"against {base['gIoU']:.4f}): do not deploy it. Fix: more or better labels, more epochs, another "
              f"--lr", file=sys.stderr)
    if args.merge:
        print(f"merged checkpoint: {merged_output(out, trainer.base.checkpoint_dir)}")
    return 0
