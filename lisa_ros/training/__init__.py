"""Adapting LISA to a robot's own scenes: training sets, LISA's fine-tuning recipe with PEFT, adapters.

ROS-free like ``lisa_ros.model``; needs the ``finetune`` requirements (peft) only to train.
"""
