"""Benchmark 1: LisaEngine vs the reference LISA code path, same model, same run, same machine.

Reference path (``lisa_ros.model.reference.reference_segment``): as the published
code runs, no KV cache (the whole sequence and CLIP are recomputed for every
generated token), SAM's image encoder after generation. Engine path
(``LisaEngine.segment``): CLIP once, KV-cache decoding, SAM's encoder overlapped
with generation on CUDA (deferred to a [SEG] answer on CPU), per-frame cache.

Both are forced to the same generated token sequence (``forced_ids`` /
``force_answer``) so the work is equal: a short answer (exactly ``--short-tokens``, 8:
"Sure, [SEG]. The ..." + EOS) and an explanatory one (exactly ``--long-tokens``,
64), both with [SEG] third and EOS last. Requests are interleaved
(engine first-instruction, engine second-instruction on the same frame,
reference) so machine load hits all three alike; figures are medians. The JSON is
written after the load and again after each answer length (``"complete": false``
until the end), so a run cut off by a time limit still leaves its figures.

    python -P benchmarks/engine_vs_reference.py                       # tiny checkpoint, CPU
    python -P benchmarks/engine_vs_reference.py --shape mid           # random mid-size model, CPU
    python -P benchmarks/engine_vs_reference.py --shape 7b --precision int4 --device cuda   # GPU targets
    python -P benchmarks/engine_vs_reference.py --shape 7b --precision int4 --device cuda \
        --quantization torchao --compile --no-reference   # the second 4-bit backend, compiled decode step

``--quantization`` / ``--compile`` set the engine options ``model.quantization`` / ``model.compile``
(issue 21; the default is the engine's own) and name the result after them; every answer length
also records decode tokens/s: decoder steps after the prefill per second of the decode phase.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import common  # noqa: E402
import models  # noqa: E402
from lisa_ros.core.engine_options import LISA_OPTIONS  # noqa: E402
from lisa_ros.model.generation import expanded_length  # noqa: E402
from lisa_ros.model.reference import reference_segment  # noqa: E402
from lisa_ros.model.tokenization import build_prompt_ids  # noqa: E402

INSTRUCTION = "Can you segment the cup in this image? Please output segmentation mask."
SECOND_INSTRUCTION = "What object could be used to hold coffee? Please output segmentation mask."
SHORT_ANSWER = "Sure, [SEG]."
EXPLANATION = (" The cup is the white object on the saucer in the middle of the table. It holds coffee, it has a "
               "handle on the right side and a spoon next to it, so it is the object that answers the question. ")


def answers(tokenizer, short_tokens: int, long_tokens: int) -> dict[str, list[int]]:
    """Token sequences both paths are forced to emit: exactly N tokens, [SEG] third, EOS last.

    "Sure, [SEG]." then explanation text, cut at N - 1 tokens, then EOS: the
    short one is "Sure, [SEG]. The ..." (LLaMA's tokenizer spells "Sure, [SEG]."
    + EOS in 6 tokens; the brief's figure is about 8).
    """
    def sequence(count: int) -> list[int]:
        text = SHORT_ANSWER + EXPLANATION
        ids = tokenizer.encode_with_added_tokens(text)
        while len(ids) < count - 1:
            text += EXPLANATION
            ids = tokenizer.encode_with_added_tokens(text)
        return ids[:count - 1] + [tokenizer.eos_id]

    return {"short": sequence(short_tokens), "long": sequence(long_tokens)}


def frame(width: int, height: int, seed: int) -> np.ndarray:
    """A photo-like frame (smooth gradients + noise); content does not change the compute."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) % 256], -1)
    return np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)


def mask_agreement(engine_masks: list[np.ndarray], reference_masks: list[np.ndarray]) -> float | None:
    """IoU of the engine's and the reference's masks (1.0 = identical work and result)."""
    if len(engine_masks) != len(reference_masks) or not engine_masks:
        return None
    inter = sum(int(np.logical_and(a, b).sum()) for a, b in zip(engine_masks, reference_masks, strict=True))
    union = sum(int(np.logical_or(a, b).sum()) for a, b in zip(engine_masks, reference_masks, strict=True))
    return 1.0 if union == 0 else round(inter / union, 4)


def engine_options(args: argparse.Namespace) -> dict:
    """The engine options the command line sets (none: the engine's defaults, as the node would run)."""
    options = {}
    if args.quantization is not None:
        options["quantization"] = args.quantization
    if args.compile:
        options["compile"] = True
    return options


def decode_tokens_per_s(generated_tokens: int, decode_ms: float) -> float | None:
    """Decoder steps per second after the prefill (the prefill's hidden state gives the first token)."""
    return round((generated_tokens - 1) / (decode_ms / 1000), 1) if decode_ms > 0 and generated_tokens > 1 else None


def result_name(args: argparse.Namespace) -> str:
    """engine_vs_reference_<shape>_<precision>[_<quantization>][_compiled]_<cpu|cuda>."""
    parts = [args.shape, args.precision]
    if args.quantization is not None:
        parts.append(args.quantization)
    if args.compile:
        parts.append("compiled")
    return "_".join(["engine_vs_reference", *parts, "cuda" if args.device.startswith("cuda") else "cpu"])


def run(args: argparse.Namespace, on_update=None) -> dict:
    """The result; ``on_update(partial result)`` after the load and after each answer length."""
    device = torch.device(args.device)
    is_cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if is_cuda else None
    before = common.machine(args.device)
    tick = time.perf_counter()
    if is_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    engine = models.load_engine(args.shape, args.precision, args.device, args.checkpoint, **engine_options(args))
    load_s = time.perf_counter() - tick
    model, tokenizer = engine.model, engine.tokenizer
    weights_mb = torch.cuda.memory_allocated(device) / 2 ** 20 if is_cuda else None
    sequences = answers(tokenizer, args.short_tokens, args.long_tokens)
    if args.answers:
        sequences = {k: v for k, v in sequences.items() if k in args.answers}
    image = frame(args.width, args.height, 0)
    prompt = build_prompt_ids(tokenizer, INSTRUCTION, use_im_start_end=model.config.use_im_start_end)
    image_tokens = (model.vision_tower.config.image_size // model.vision_tower.config.patch_size) ** 2

    # Warm-up: kernels, allocator, bitsandbytes repacking, lazy imports.
    for index in range(args.warmup):
        engine.segment(image, INSTRUCTION, frame_key=("warmup", index), force_answer=sequences[next(iter(sequences))])
        if args.reference:
            reference_segment(model, tokenizer, image, INSTRUCTION, forced_ids=sequences[next(iter(sequences))])
    engine.clear_caches()

    rows = {}
    peak_engine = 0.0
    result = {
        "shape": args.shape, "precision": args.precision, "device": args.device,
        "engine_options": engine_options(args), "reference": args.reference,
        "frame": f"{args.width}x{args.height}", "repeats": args.repeats, "warmup": args.warmup,
        "load_s": round(load_s, 2), "parameters_millions": models.parameter_count(model),
        "decoder_weight_dtypes": models.weight_dtypes(model),
        "gpu_weights_mb": round(weights_mb, 1) if weights_mb is not None else None,
        "gpu_peak_engine_mb": None, "results": rows, "complete": False, "machine_start": before,
        "note": args.note,
    }
    if on_update:
        on_update(result)
    for name, ids in sequences.items():
        first, second, reference, phases_first, phases_second, agreement = [], [], [], [], [], []
        for repeat in range(args.repeats):
            key = (name, repeat, time.monotonic_ns())
            if is_cuda:
                torch.cuda.reset_peak_memory_stats(device)
            out1, ms1 = common.timed(engine.segment, image, INSTRUCTION, frame_key=key, force_answer=ids, sync=sync)
            out2, ms2 = common.timed(engine.segment, image, SECOND_INSTRUCTION, frame_key=key, force_answer=ids,
                                     sync=sync)
            if is_cuda:
                peak_engine = max(peak_engine, torch.cuda.max_memory_allocated(device) / 2 ** 20)
            ms_ref = None
            if args.reference:
                ref, ms_ref = common.timed(reference_segment, model, tokenizer, image, INSTRUCTION, forced_ids=ids,
                                           sync=sync)
                if ref.token_ids != ids[:len(ref.token_ids)]:
                    raise RuntimeError("the reference did not follow the forced answer")
                reference.append(ms_ref)
                agreement.append(mask_agreement(out1.masks, ref.masks))
            first.append(ms1)
            second.append(ms2)
            phases_first.append(out1.timings_ms)
            phases_second.append(out2.timings_ms)
            print(f"  {name} #{repeat}: engine {ms1:.1f} ms, same frame {ms2:.1f} ms, reference "
                  + (f"{ms_ref:.1f} ms" if ms_ref is not None else "not run"), flush=True)
        engine_ms, second_ms = common.summary(first), common.summary(second)
        reference_ms = common.summary(reference) if reference else None
        phases = {k: common.median(p.get(k, 0.0) for p in phases_first) for k in phases_first[0]}
        rows[name] = {
            "generated_tokens": len(ids),
            "prompt_tokens_with_image": expanded_length(prompt, image_tokens),
            "engine_ms": engine_ms,
            "engine_same_frame_ms": second_ms,
            "reference_ms": reference_ms,
            "speedup_vs_reference": round(reference_ms["median"] / engine_ms["median"], 2) if reference_ms else None,
            "same_frame_speedup": round(engine_ms["median"] / second_ms["median"], 2),
            "decode_tokens_per_s": decode_tokens_per_s(len(ids), phases["decode"]),
            "engine_phases_ms": phases,
            "engine_same_frame_phases_ms": {k: common.median(p.get(k, 0.0) for p in phases_second)
                                            for k in phases_second[0]},
            "mask_iou_engine_vs_reference": agreement,
        }
        result["gpu_peak_engine_mb"] = round(peak_engine, 1) if is_cuda else None
        if on_update:
            on_update(result)
    result.update(complete=True, machine_end=common.machine(args.device))
    engine.unload()
    del engine, model
    gc.collect()
    return result


def table(result: dict) -> str:
    rows = []
    for name, row in result["results"].items():
        rows.append([f"{result['shape']} {result['precision']} {result['device']}", name, row["generated_tokens"],
                     (row["reference_ms"] or {}).get("median"), row["engine_ms"]["median"],
                     row["speedup_vs_reference"], row["engine_same_frame_ms"]["median"], row["same_frame_speedup"],
                     row.get("decode_tokens_per_s")])
    return common.markdown_table(
        ["model", "answer", "tokens", "reference ms", "engine ms", "speedup", "same frame ms", "same-frame speedup",
         "decode tokens/s"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="tiny", choices=("tiny",) + models.RANDOM_SHAPES,
                        help="tiny = the trained tiny checkpoint; others = random weights of that shape")
    parser.add_argument("--checkpoint", default=None, help="tiny checkpoint directory (default: written to the cache)")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quantization", default=None,
                        help="engine option model.quantization (the 4-bit backend; default: the engine's)")
    parser.add_argument("--compile", action="store_true", help="engine option model.compile: compiled decode step")
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help="time the engine only (the reference path's figures are in the default run)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--short-tokens", type=int, default=8)
    parser.add_argument("--long-tokens", type=int, default=64)
    parser.add_argument("--answers", nargs="*", choices=("short", "long"), default=None)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--note", default="", help="free text stored with the result (e.g. machine load)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<name>.json)")
    args = parser.parse_args(argv)
    missing = [f"model.{key}" for key in engine_options(args) if key not in LISA_OPTIONS]
    if missing:
        parser.error(f"this lisa_ros has no engine option {' / '.join(missing)} (issue 21's backend and compiled "
                     f"decode step): run a version that has it, or leave out --quantization / --compile")
    if args.threads:
        torch.set_num_threads(args.threads)
    name = result_name(args)
    result = run(args, on_update=lambda partial: common.write_result(name, partial, args.out))
    path = common.write_result(name, result, args.out)
    print(f"\n{common.machine_line(result['machine_start'])}\n")
    print(table(result))
    print(f"\nwritten {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
