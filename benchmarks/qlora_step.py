"""QLoRA training steps of ``lisa-ros finetune`` on a random-weight LISA shape: GPU memory and seconds per step.

The base is loaded as ``finetune --precision int4`` loads it (decoder linears in bitsandbytes NF4, computing in
bf16 on CUDA), LoRA and the modules trained in full added by the trainer's own ``add_lora`` (with gradient
checkpointing unless ``--no-gradient-checkpointing``), and ``--steps`` optimizer steps run on a micro-batch of
``--batch`` synthetic samples ("Sure, [SEG]." with a mask) through the trainer's own loss. The JSON is
rewritten after the load and after every step, so a run cut off keeps what it measured.

    python -P benchmarks/qlora_step.py --shape 7b --device cuda          # the figure behind the README estimate
    python -P benchmarks/qlora_step.py --shape tiny-random --device cpu  # the same code on the CPU (tests)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import common  # noqa: E402
import models  # noqa: E402
from engine_vs_reference import INSTRUCTION, frame  # noqa: E402
from lisa_ros.model.checkpoint import resolve_vision_tower  # noqa: E402
from lisa_ros.model.checkpoint_config import load_lisa_config  # noqa: E402
from lisa_ros.model.loading import load_lisa_model  # noqa: E402
from lisa_ros.model.tokenization import LisaTokenizer, build_prompt_ids  # noqa: E402
from lisa_ros.training.dataset import Sample  # noqa: E402
from lisa_ros.training.forward import Example, answer_ids, encode_image, teacher_forced_losses  # noqa: E402
from lisa_ros.training.trainer import Recipe, TrainingPlacement, add_lora, trained_parameters  # noqa: E402


def synthetic_example(model, tokenizer: LisaTokenizer, width: int, height: int, seed: int) -> Example:
    image = frame(width, height, seed)
    mask = np.zeros((height, width), bool)
    mask[height // 4: height // 2, width // 3: width // 2] = True
    sample = Sample(id=f"synthetic-{seed}", image=Path("-"), instruction=INSTRUCTION, masks=(Path("-"),),
                    negative=False, answer="", group="")
    with torch.no_grad():
        encoded = encode_image(model, image)
    prompt = build_prompt_ids(tokenizer, INSTRUCTION, use_im_start_end=model.config.use_im_start_end)
    return Example(sample, encoded, torch.from_numpy(mask[None]), prompt, answer_ids(tokenizer, sample))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="tiny-random", choices=models.RANDOM_SHAPES)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2, help="samples per micro-batch (LISA's: 2)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    parser.add_argument("--note", default="")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    name = f"qlora_step_{args.shape}_{device.type}"
    result = {"shape": args.shape, "precision": "int4 (QLoRA: bitsandbytes NF4 base)", "batch": args.batch,
              "gradient_checkpointing": not args.no_gradient_checkpointing, "image": [args.width, args.height],
              "note": args.note, "machine": common.machine(args.device), "steps": []}

    start = time.perf_counter()
    checkpoint_dir = models.shape_checkpoint(args.shape)
    config = load_lisa_config(checkpoint_dir)
    clip_dir = resolve_vision_tower(config.vision_tower, checkpoint_dir)
    model = load_lisa_model(checkpoint_dir, clip_dir, config, TrainingPlacement(device, "int4"), progress=False,
                            tensors=models.random_tensors())
    tokenizer = LisaTokenizer.from_directory(checkpoint_dir)
    add_lora(model, Recipe(), quantized=True, gradient_checkpointing=not args.no_gradient_checkpointing)
    trainable = [parameter for _, parameter in trained_parameters(model)]
    optimizer = torch.optim.AdamW(trainable, lr=3e-4, betas=(0.9, 0.95), weight_decay=0.0)
    batch = [synthetic_example(model, tokenizer, args.width, args.height, seed) for seed in range(args.batch)]
    sync()
    result["load_s"] = round(time.perf_counter() - start, 2)
    result["trainable_million"] = round(sum(p.numel() for p in trainable) / 1e6, 2)
    if cuda:
        result["gpu_after_load_mb"] = round(torch.cuda.memory_allocated(device) / 2**20)
        torch.cuda.reset_peak_memory_stats(device)
    path = common.write_result(name, result, args.out)

    model.train()
    for _ in range(args.steps):
        tick = time.perf_counter()
        losses = teacher_forced_losses(model, tokenizer.seg_id, batch)
        losses.total.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        step = {"seconds": round(time.perf_counter() - tick, 3), "loss": round(float(losses.total.detach()), 4)}
        if cuda:
            step["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
        result["steps"].append(step)
        result["median_step_s"] = common.median(s["seconds"] for s in result["steps"][1:] or result["steps"])
        common.write_result(name, result, args.out)
    print(f"{args.shape} QLoRA on {device}: load {result['load_s']} s, step {result['median_step_s']} s"
          + (f", GPU peak {result['steps'][-1]['gpu_peak_mb']} MB" if cuda else "") + f" -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
