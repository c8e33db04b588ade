"""``lisa-ros``: one entry point, one module per sub-command.

Each module named in COMMANDS provides ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so
``lisa-ros eval`` does not pay for importing torch or rclpy.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "make-tiny-checkpoint": ("lisa_ros.tools.make_tiny_checkpoint",
                             "write a tiny random LISA checkpoint (tests, demo)"),
    "convert": ("lisa_ros.tools.convert_checkpoint", "convert a LISA .bin checkpoint to safetensors"),
    "merge-adapter": ("lisa_ros.tools.merge_adapter",
                      "merge a fine-tuned adapter into its base: a checkpoint in the released layout"),
    "make-sample-bag": ("lisa_ros.tools.make_sample_bag", "write the sample rosbag2 used by the demo"),
    "replay": ("lisa_ros.tools.replay", "replay a rosbag2 through a lisa_node and record its answers"),
    "eval": ("lisa_ros.tools.evaluate", "score predicted masks against ground truth (gIoU, cIoU, report)"),
    "export-labels": ("lisa_ros.tools.export_labels",
                      "a replay's answers as pre-labels to correct: COCO (RLE masks) and LISA's ReasonSeg JSON"),
    "import-labels": ("lisa_ros.tools.import_labels",
                      "corrected labels (COCO, ReasonSeg, replay + ground truth) -> a training set with a split"),
    "figure": ("lisa_ros.tools.figure", "draw a replay's frame, mask, 3D point and tracked mask into one PNG"),
    "params": ("lisa_ros.tools.reference",
               "the node's parameters; --markdown writes the parameter, launch and interface reference pages"),
    "finetune": ("lisa_ros.tools.finetune", "fine-tune LISA on a training set with LoRA (LISA's recipe, PEFT)"),
    "make-shapes-task": ("lisa_ros.tools.make_shapes_task",
                         "write the generated shapes task (a training set for trying finetune on a CPU)"),
    "doctor": ("lisa_ros.tools.doctor", "preflight on the robot: GPU, weights, numpy/OpenCV vs ROS, DDS, camera topic"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="lisa-ros", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text)
        if name == chosen:
            modules[name] = importlib.import_module(module_name)
            modules[name].add_arguments(command_parser)
    args = parser.parse_args(argv)
    return int(modules[args.command].run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
