"""Second instruction on a frame: prefill with the prompt prefix's KV cache vs the whole prompt.

With history off, every prompt on a frame starts with the same ids: BOS, the
system prompt, ``USER: <im_start>``, the 256 image features, ``<im_end>`` (about
290 of ~306 positions). ``LisaEngine`` keeps that prefix's KV cache for the
latest frame (``generation.PromptPrefix``) and prefills only what follows. This
script measures that prefill in isolation on one model, both ways (full prompt
vs. the cached prefix copied, then only the instruction's ~15 tokens), the
one-off cost of building the prefix, and the largest difference of the resulting
last hidden state (the one that predicts the first answer token).

    python -P benchmarks/prefix_cache.py [--shape mid] [--device cpu]
    python -P benchmarks/prefix_cache.py --shape 7b --precision int4 --device cuda
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from transformers.cache_utils import DynamicCache  # noqa: E402

import common  # noqa: E402
import models  # noqa: E402
from engine_vs_reference import INSTRUCTION, SECOND_INSTRUCTION, frame  # noqa: E402
from lisa_ros.model.preprocess import clip_pixels  # noqa: E402
from lisa_ros.model.tokenization import build_prompt_ids  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="mid", choices=("tiny",) + models.RANDOM_SHAPES)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--note", default="")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    engine = models.load_engine(args.shape, args.precision, args.device)
    model, tokenizer = engine.model, engine.tokenizer
    prompt = build_prompt_ids(tokenizer, SECOND_INSTRUCTION, use_im_start_end=model.config.use_im_start_end)
    first = build_prompt_ids(tokenizer, INSTRUCTION, use_im_start_end=model.config.use_im_start_end)
    split = prompt.index(tokenizer.im_end_id) + 1
    if first[:split] != prompt[:split]:
        raise RuntimeError("the prompt prefix differs between instructions")
    embeddings = model.llm.get_input_embeddings()
    with torch.inference_mode():
        features = model.clip_features(clip_pixels(frame(640, 480, 0), model.vision_tower.config.image_size))

        def full():
            cache = DynamicCache(config=model.llm.config)
            return model.decoder_hidden(model.embed(prompt, features), cache)[:, -1]

        def build_prefix():
            cache = DynamicCache(config=model.llm.config)
            model.decoder_hidden(model.embed(prompt[:split], features), cache)
            return cache

        prefix = build_prefix()

        def cached():
            cache = copy.deepcopy(prefix)  # the next instruction must not see this one's keys
            suffix = embeddings(torch.tensor([prompt[split:]], device=model.device))
            return model.decoder_hidden(suffix, cache)[:, -1]

        results = {}
        for name, fn in (("full_prefill", full), ("prefix_build_once_per_frame", build_prefix),
                         ("cached_prefix_prefill", cached)):
            fn()
            times = []
            for _ in range(args.repeats):
                out, ms = common.timed(fn, sync=sync)
                times.append(ms)
            results[name] = common.summary(times)
        difference = (full().float() - cached().float()).abs().max().item()
        scale = full().float().abs().max().item()
    row = {
        "shape": args.shape, "precision": args.precision, "device": args.device,
        "prompt_positions": len(prompt) - 1 + features.shape[1], "prefix_positions": split - 1 + features.shape[1],
        "suffix_tokens": len(prompt) - split, "ms": results,
        "speedup_second_instruction_prefill": round(results["full_prefill"]["median"]
                                                    / results["cached_prefix_prefill"]["median"], 2),
        "max_abs_difference_last_hidden": difference, "max_abs_last_hidden": scale,
        "machine": common.machine(args.device), "note": args.note,
    }
    suffix = "cuda" if device.type == "cuda" else "cpu"
    path = common.write_result(f"prefix_cache_{args.shape}_{args.precision}_{suffix}", row, args.out)
    print(common.markdown_table(
        ["model", "prompt positions", "full prefill ms", "cached-prefix prefill ms", "speedup",
         "prefix build ms (once per frame)", "max abs diff"],
        [[f"{args.shape} {args.precision} {args.device}", row["prompt_positions"], results["full_prefill"]["median"],
          results["cached_prefix_prefill"]["median"], row["speedup_second_instruction_prefill"],
          results["prefix_build_once_per_frame"]["median"], f"{difference:.1e} (of {scale:.1e})"]]))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
