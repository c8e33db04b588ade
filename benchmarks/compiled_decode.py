"""Decode ms/token, eager vs the compiled step (``model.compile``), and the seconds configure spends compiling.

One engine is loaded with ``model.compile: true`` (its load compiles and warms up the step: the figure a
configure pays); ``generate`` then decodes the same forced answer (ordinary tokens with a ``[SEG]`` every
eighth, so the compared ``[SEG]`` states cover the whole answer) after the same prefill, alternately eager
(``DynamicCache``, Python per layer) and through the compiled step, ``--repeats`` times each. Reported:
decode ms per token (prefill excluded), the speedup, and the largest difference of the ``[SEG]`` states.

    python -P benchmarks/compiled_decode.py --shape tiny
    python -P benchmarks/compiled_decode.py --shape mid
    python -P benchmarks/compiled_decode.py --shape 7b --precision fp16 --device cuda
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402
import models  # noqa: E402
from engine_vs_reference import INSTRUCTION, frame  # noqa: E402
from lisa_ros.model.generation import generate  # noqa: E402
from lisa_ros.model.preprocess import clip_pixels  # noqa: E402
from lisa_ros.model.tokenization import build_prompt_ids  # noqa: E402

SEG_EVERY = 8


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="tiny", choices=("tiny",) + models.RANDOM_SHAPES)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tokens", type=int, default=32, help="answer length decoded per run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--note", default="")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    engine = models.load_engine(args.shape, args.precision, args.device, compile=True)
    load_s = time.perf_counter() - start
    model, tokenizer, step = engine.model, engine.tokenizer, engine._decode_step
    prompt = build_prompt_ids(tokenizer, INSTRUCTION, use_im_start_end=model.config.use_im_start_end)
    ordinary = tokenizer.encode_text("the cup on the table next to the window")
    forced = [tokenizer.seg_id if (i + 1) % SEG_EVERY == 0 else ordinary[i % len(ordinary)]
              for i in range(args.tokens)]
    with torch.inference_mode():
        features = model.clip_features(clip_pixels(frame(640, 480, 0), model.vision_tower.config.image_size))
    common_args = dict(eos_id=tokenizer.eos_id, seg_id=tokenizer.seg_id, max_new_tokens=args.tokens,
                       forced_ids=forced)
    per_token: dict[str, list[float]] = {"eager": [], "compiled": []}
    outputs = {}
    for _ in range(args.repeats + 1):  # the first round warms both paths up and is not counted
        for name, decode_step in (("eager", None), ("compiled", step)):
            outputs[name] = generate(model, prompt, features, decode_step=decode_step, **common_args)
            per_token[name].append(outputs[name].decode_ms / args.tokens)
    ms = {name: common.summary(times[1:]) for name, times in per_token.items()}
    difference = (outputs["eager"].seg_hidden - outputs["compiled"].seg_hidden).abs().max().item()
    scale = outputs["eager"].seg_hidden.abs().max().item()
    row = {
        "shape": args.shape, "precision": args.precision, "device": args.device, "answer_tokens": args.tokens,
        "prompt_positions": len(prompt) - 1 + features.shape[1], "static_cache_positions": step.capacity,
        "decode_ms_per_token": ms,
        "speedup": round(ms["eager"]["median"] / ms["compiled"]["median"], 2),
        "decode_compile_s": engine.load_stats()["decode_compile_s"], "load_s_with_compile": round(load_s, 2),
        "same_tokens": outputs["eager"].token_ids == outputs["compiled"].token_ids,
        "max_abs_difference_seg_hidden": difference, "max_abs_seg_hidden": scale,
        "machine": common.machine(args.device), "note": args.note,
    }
    suffix = "cuda" if torch.device(args.device).type == "cuda" else "cpu"
    path = common.write_result(f"compiled_decode_{args.shape}_{args.precision}_{suffix}", row, args.out)
    print(common.markdown_table(
        ["model", "eager ms/token", "compiled ms/token", "speedup", "compile s (configure)", "max abs diff [SEG]"],
        [[f"{args.shape} {args.precision} {args.device}", ms["eager"]["median"], ms["compiled"]["median"],
          row["speedup"], row["decode_compile_s"], f"{difference:.1e} (of {scale:.1e})"]]))
    print(f"written {path}")
    engine.unload()
    return 0


if __name__ == "__main__":
    sys.exit(main())
