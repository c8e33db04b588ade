"""Benchmark 2: LISA-7B / 13B-shaped models with random weights: latency per phase, end to end, peak GPU memory.

Compute does not depend on weight values. ``benchmarks/models.py`` builds the
released shapes (LLaMA-7B / LLaMA-2-13B dims, CLIP ViT-L/14 at 224, SAM ViT-H at
1024) directly on the device through ``LisaEngine.load`` (weights generated
instead of read; same dtype placement and bitsandbytes quantization as a loaded
checkpoint). Per shape and precision, on a 640x480 frame:

- isolated phases (synchronised, median of ``--repeats``): preprocess (CLIP +
  SAM resizing on the CPU), CLIP (+ projector), prefill, per-token decode
  (KV cache), SAM image encoder, mask decode ([SEG] head + SAM decoder +
  upsampling + threshold + copy to the host);
- end to end through ``LisaEngine.segment`` for 8- and 64-token answers (forced,
  as in benchmark 1), on a new frame and a second instruction on the same frame;
- GPU memory: weights after load, and peak allocated during the requests.

One command on any CUDA machine (about 10 minutes on an H100 for everything)::

    python -P benchmarks/full_size.py                           # 7b+13b x fp16,bf16,int8,int4 on cuda
    python -P benchmarks/full_size.py --smoke                   # CPU, small random shapes: checks the script runs
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
import traceback
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402
import models  # noqa: E402
from engine_vs_reference import INSTRUCTION, SECOND_INSTRUCTION, answers, frame  # noqa: E402
from lisa_ros.model.generation import expanded_length, generate  # noqa: E402
from lisa_ros.model.preprocess import clip_pixels, sam_pixels  # noqa: E402
from lisa_ros.model.tokenization import build_prompt_ids  # noqa: E402


def decode_masks(model, seg_hidden, embedding, sam_input_size, image_size) -> tuple[list, list[float]]:
    """The masks and scores of the [SEG] states, on the host (what the engine hands back)."""
    logits, iou = model.decode_masks(seg_hidden, embedding, sam_input_size, image_size)
    return [m.cpu().numpy() for m in (logits > 0)], [float(s) for s in iou.cpu()]


def measure(shape: str, precision: str, device_name: str, repeats: int, short_tokens: int, long_tokens: int,
            width: int, height: int) -> dict:
    device = torch.device(device_name)
    is_cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if is_cuda else None
    mb = 2 ** 20
    if is_cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base_mb = torch.cuda.memory_allocated(device) / mb
    tick = time.perf_counter()
    engine = models.load_engine(shape, precision, device_name)
    load_s = time.perf_counter() - tick
    model, tokenizer = engine.model, engine.tokenizer
    row: dict = {"shape": shape, "precision": precision, "device": device_name, "load_s": round(load_s, 1),
                 "parameters_millions": models.parameter_count(model),
                 "decoder_weight_dtypes": models.weight_dtypes(model)}
    if is_cuda:
        row["gpu_weights_mb"] = round(torch.cuda.memory_allocated(device) / mb - base_mb, 1)
        row["gpu_load_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / mb - base_mb, 1)
        torch.cuda.reset_peak_memory_stats(device)
    sequences = answers(tokenizer, short_tokens, long_tokens)
    image = frame(width, height, 1)
    prompt = build_prompt_ids(tokenizer, INSTRUCTION, use_im_start_end=model.config.use_im_start_end)
    clip_size, sam_size = model.vision_tower.config.image_size, model.config.sam.image_size
    row["prompt_tokens_with_image"] = expanded_length(prompt, (clip_size // model.vision_tower.config.patch_size) ** 2)

    with torch.inference_mode():
        phases: dict[str, list[float]] = {k: [] for k in (
            "preprocess", "clip", "prefill", "decode_per_token", "sam_encoder", "mask_decode")}
        for repeat in range(repeats + 1):  # the first round warms up
            (clip_input, sam_input), ms_pre = common.timed(
                lambda: (clip_pixels(image, clip_size), sam_pixels(image, sam_size)))
            features, ms_clip = common.timed(model.clip_features, clip_input, sync=sync)
            generation, _ = common.timed(generate, model, prompt, features, eos_id=tokenizer.eos_id,
                                         seg_id=tokenizer.seg_id, max_new_tokens=len(sequences["long"]),
                                         forced_ids=sequences["long"], sync=sync)
            embedding, ms_sam = common.timed(model.sam_image_embedding, sam_input, sync=sync)
            _, ms_mask = common.timed(decode_masks, model, generation.seg_hidden, embedding,
                                      tuple(sam_input.shape[-2:]), image.shape[:2], sync=sync)
            if repeat:
                steps = max(1, len(generation.token_ids) - 1)  # the first token comes from the prefill
                for key, value in (("preprocess", ms_pre), ("clip", ms_clip), ("prefill", generation.prefill_ms),
                                   ("decode_per_token", generation.decode_ms / steps), ("sam_encoder", ms_sam),
                                   ("mask_decode", ms_mask)):
                    phases[key].append(value)
        row["phases_ms"] = {k: common.median(v) for k, v in phases.items()}

        end_to_end = {}
        for name, ids in sequences.items():
            first, second = [], []
            for repeat in range(repeats + 1):
                key = ("e2e", name, repeat, time.monotonic_ns())
                out1, ms1 = common.timed(engine.segment, image, INSTRUCTION, frame_key=key, force_answer=ids,
                                         sync=sync)
                out2, ms2 = common.timed(engine.segment, image, SECOND_INSTRUCTION, frame_key=key, force_answer=ids,
                                         sync=sync)
                if repeat:
                    first.append(ms1)
                    second.append(ms2)
            end_to_end[name] = {"tokens": len(ids), "new_frame_ms": common.summary(first),
                                "same_frame_ms": common.summary(second),
                                "engine_phases_ms": {k: round(v, 2) for k, v in out1.timings_ms.items()}}
        row["end_to_end"] = end_to_end
    if is_cuda:
        row["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / mb - base_mb, 1)
        row["gpu_peak_reserved_mb"] = round(torch.cuda.max_memory_reserved(device) / mb, 1)
    engine.unload()
    del engine, model, generation, embedding, features
    gc.collect()
    if is_cuda:
        torch.cuda.empty_cache()
    return row


def table(rows: list[dict]) -> str:
    out = []
    for row in rows:
        if "error" in row:
            out.append([row["shape"], row["precision"], f"error: {row['error'][:60]}"] + [None] * 12)
            continue
        p, e = row["phases_ms"], row["end_to_end"]
        out.append([row["shape"], row["precision"], p["preprocess"], p["clip"], p["prefill"], p["decode_per_token"],
                    p["sam_encoder"], p["mask_decode"], e["short"]["new_frame_ms"]["median"],
                    e["long"]["new_frame_ms"]["median"], e["short"]["same_frame_ms"]["median"],
                    row.get("gpu_weights_mb"), row.get("gpu_peak_mb"), row["prompt_tokens_with_image"],
                    row["load_s"]])
    return common.markdown_table(
        ["shape", "precision", "preprocess ms", "CLIP ms", "prefill ms", "decode ms/token", "SAM encoder ms",
         "mask decode ms", "e2e 8 tok ms", "e2e 64 tok ms", "same frame 8 tok ms", "GPU weights MB",
         "GPU peak MB", "prompt tokens", "load s"], out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["7b", "13b"], choices=models.RANDOM_SHAPES)
    parser.add_argument("--precisions", nargs="+", default=["fp16", "bf16", "int8", "int4"],
                        choices=("fp32", "fp16", "bf16", "int8", "int4"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--short-tokens", type=int, default=8)
    parser.add_argument("--long-tokens", type=int, default=64)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--smoke", action="store_true",
                        help="CPU, tiny-random shape, fp32+int8+int4, 1 repeat, 16-token answers: the script runs")
    parser.add_argument("--note", default="")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.smoke:
        args.shapes, args.device, args.repeats, args.long_tokens = ["tiny-random"], "cpu", 1, 16
        if args.precisions == parser.get_default("precisions"):
            args.precisions = ["fp32", "int8", "int4"]
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA is not available: run this on a CUDA machine, or use --smoke / --device cpu", file=sys.stderr)
        return 2
    before = common.machine(args.device)
    rows = []
    for shape in args.shapes:
        for precision in args.precisions:
            print(f"== {shape} {precision} on {args.device}", flush=True)
            try:
                rows.append(measure(shape, precision, args.device, args.repeats, args.short_tokens,
                                    args.long_tokens, args.width, args.height))
            except Exception as error:  # noqa: BLE001 (an OOM on a small GPU must not lose the other rows)
                traceback.print_exc()
                rows.append({"shape": shape, "precision": precision, "device": args.device,
                             "error": f"{type(error).__name__}: {error}"})
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            print(table(rows[-1:]), flush=True)
    result = {"rows": rows, "frame": f"{args.width}x{args.height}", "repeats": args.repeats,
              "machine_start": before, "machine_end": common.machine(args.device), "note": args.note}
    suffix = "smoke" if args.smoke else ("cuda" if args.device.startswith("cuda") else "cpu")
    path = common.write_result(f"full_size_{suffix}", result, args.out)
    print(f"\n{common.machine_line(before)}\n")
    print(table(rows))
    print(f"\nwritten {path}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
