"""``lisa-ros make-shapes-task OUT``: the generated shapes task (``lisa_ros.training.shapes``) as a training set.

Scenes of coloured shapes, instructions that name a shape by its use ("segment the thing a
ball could roll down"), masks and negatives: a task the untuned tiny checkpoint cannot do,
to try ``lisa-ros finetune`` on a CPU in minutes.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT", help="folder to write the training set into (created)")
    parser.add_argument("--train-scenes", type=int, default=240, help="scenes in the train split (default 240)")
    parser.add_argument("--val-scenes", type=int, default=40, help="scenes in the validation split (default 40)")
    parser.add_argument("--negative-rate", type=float, default=0.2,
                        help="share of scenes that also ask for an absent shape (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same files")


def run(args: argparse.Namespace) -> int:
    from lisa_ros.training.shapes import write_shapes_task

    out = write_shapes_task(args.out_dir, args.train_scenes, args.val_scenes, args.negative_rate, args.seed)
    print(f"training set: {out} (train.jsonl, val.jsonl); try: lisa-ros finetune {out} --model CHECKPOINT --out RUN")
    return 0
