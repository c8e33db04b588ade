"""Benchmark: fine-tuning the tiny checkpoint on the shapes task, held-out gIoU before and after (CPU).

The proof of issue 20's item 5: the un-tuned tiny model (LLM trained only on LISA's answer
style, CLIP and SAM random) cannot do the task (``lisa_ros.training.shapes``: find the shape a
use describes); `lisa-ros finetune`'s trainer, LISA's recipe with PEFT, on a few hundred
examples, can. Free-run validation: greedy answers, no [SEG] = empty mask, negatives score 1
when refused. The CLIP and SAM encoders stay frozen and random, as the recipe freezes them.

    python -P benchmarks/finetune_shapes.py [--train-scenes 240] [--epochs 4] [--lr 3e-3] ...
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402
import models  # noqa: E402
from lisa_ros.training.shapes import write_shapes_task  # noqa: E402
from lisa_ros.training.trainer import Recipe, RunOptions, Trainer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-scenes", type=int, default=240)
    parser.add_argument("--val-scenes", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3,
                        help="default 3e-3: the tiny SAM decoder starts random, not pretrained like LISA's (3e-4)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--grad-accumulation", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = common.machine()
    work = common.CACHE / "finetune_shapes"
    shutil.rmtree(work, ignore_errors=True)
    dataset = write_shapes_task(work / "dataset", args.train_scenes, args.val_scenes, seed=args.seed)
    recipe = Recipe(epochs=args.epochs, batch_size=args.batch_size, grad_accumulation=args.grad_accumulation,
                    lr=args.lr, seed=args.seed)
    tick = time.perf_counter()
    trainer = Trainer(dataset, work / "out", recipe, RunOptions(model=str(models.tiny_checkpoint()), progress=False))
    setup_s = time.perf_counter() - tick
    tick = time.perf_counter()
    status = trainer.train()
    train_s = time.perf_counter() - tick
    before = trainer.history[0]
    after = trainer.best or trainer.history[-1]
    ratio = after["gIoU"] / before["gIoU"] if before["gIoU"] else float("inf")
    payload = {
        "benchmark": "finetune_shapes", "command": common.command_line(), "note": args.note, "status": status,
        "checkpoint": "lisa-tiny-7b (lisa_ros.model.tiny, seed 0): CLIP and SAM random and frozen",
        "task": {"train_samples": len(trainer.train_samples), "val_samples": len(trainer.val_samples),
                 "train_scenes": args.train_scenes, "val_scenes": args.val_scenes},
        "recipe": {**{k: getattr(recipe, k) for k in ("epochs", "batch_size", "grad_accumulation", "lr", "lora_r",
                                                      "lora_alpha", "lora_dropout")},
                   "warmup_steps": trainer.warmup_steps, "optimizer_steps": trainer.total_steps},
        "before": before, "after": after, "history": trainer.history,
        "gIoU_ratio": round(ratio, 2), "target_met": after["gIoU"] >= 0.5 and ratio >= 3,
        "setup_s": round(setup_s, 1), "train_s": round(train_s, 1),
        "final_losses": (work / "out" / "log.csv").read_text().splitlines()[-1],
        "machine": started, "machine_end": common.machine(),
    }
    path = common.write_result("finetune_shapes_cpu", payload)
    print(common.markdown_table(("", "gIoU", "cIoU"), [("before", before["gIoU"], before["cIoU"]),
                                                        (f"after (epoch {after['epoch']})", after["gIoU"],
                                                         after["cIoU"])]))
    print(f"train {train_s:.0f} s, {trainer.total_steps} steps; {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
