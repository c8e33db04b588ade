"""LISA reasoning segmentation, ROS-free: checkpoint loading, model, generation, engine.

Modules, in dependency order:
- ``sam``: segment_anything's blocks (imported without torchvision), SAM sizes.
- ``config``: reads and validates a LISA ``config.json``.
- ``checkpoint``: resolves checkpoints (HF id or directory), reads and converts weights.
- ``tokenization``: the ``llava_v1`` prompt, token ids exactly as the reference stack.
- ``preprocess``: CLIP and SAM image preprocessing, mask post-processing.
- ``quantization``: bitsandbytes 8-bit / 4-bit layers for the LLaMA decoder.
- ``modeling``: ``LisaModel`` built from transformers + segment_anything blocks (compute only).
- ``loading``: checkpoint names, placement (dtype, quantization), tensor sources, ``load_lisa_model``.
- ``generation``: greedy decoding with a KV cache.
- ``reference``: the published code's path (no KV cache), the ground truth for parity tests and benchmarks.
- ``engine``: ``LisaEngine``, the ``lisa_ros.core.engine.Engine`` the node uses.
- ``tiny``: tiny checkpoints in the released layout for tests and demos.

Never imports rclpy.
"""
