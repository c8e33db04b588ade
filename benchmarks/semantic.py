"""Semantic mode: one batched request for N categories vs N single-instruction requests, same frame, same run.

Per repeat, on a fresh frame each (so CLIP and SAM's encoder are paid every time):

- ``single``: one ``LisaEngine.segment`` forced to "Sure, [SEG]." (LISA's short answer);
- ``separate``: N such calls on one frame, one per category (the first pays CLIP and
  SAM, the rest reuse them and the prompt prefix): N forced-answer ``engine.segment``
  calls, not N ``~/segment`` requests (those let LISA write its own answer);
- ``batched``: ``SemanticSegmenter.segment`` with the filter off: N masks from one
  packed forced pass, SAM's decoder in batches, the label image;
- ``filtered``: the same with the filter on and a threshold that keeps about
  ``--keep`` of the categories (random weights answer "Yes"/"No" at random, so
  absence is simulated by the threshold, chosen from a warm-up run's P(yes)): what
  the filter saves when most categories are absent.

Descriptions come from a fixed table (what a user file gives): writing them is a
one-off cost per category, cached on disk, measured apart (``describe_one_ms``).
Requests are interleaved so machine load hits all paths alike; figures are medians.

    python -P benchmarks/semantic.py                       # mid shape, random weights, CPU
    python -P benchmarks/semantic.py --shape tiny --sizes 5 20
    python -P benchmarks/semantic.py --shape 7b --precision int4 --device cuda
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import common  # noqa: E402
import models  # noqa: E402
from engine_vs_reference import frame  # noqa: E402
from lisa_ros.core import semantic as core  # noqa: E402
from lisa_ros.core.semantic import SemanticOptions  # noqa: E402
from lisa_ros.model import semantic  # noqa: E402

NAMES = ("floor", "wall", "ceiling", "door", "glass door", "window", "stairs", "carpet", "person", "chair", "table",
         "sofa", "bed", "cabinet", "shelf", "box", "cable", "plant", "lamp", "screen", "keyboard", "cup", "bottle",
         "bag", "backpack", "trash can", "sink", "toilet", "mirror", "curtain", "pillar", "railing", "elevator",
         "forklift", "pallet", "cart", "bicycle", "dog", "cat", "ball", "fire extinguisher", "sign", "clock",
         "painting", "radiator", "pipe", "vent", "ladder", "bucket", "mat")
DESCRIPTION = "a flat, grey or brown object of medium size with a smooth, hard surface of wood, metal or plastic"


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="mid", choices=("tiny",) + models.RANDOM_SHAPES)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 20, 50])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=float, default=0.2, help="share of categories the filter keeps")
    parser.add_argument("--plain", action="store_true",
                        help="no descriptions: 'Please segment the {category}.' (shorter prompts)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0 = torch's default); 1 is steadier on a shared machine")
    parser.add_argument("--note", default="")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if max(args.sizes) > len(NAMES):
        parser.error(f"at most {len(NAMES)} categories")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    start_machine, start_uptime = common.machine(args.device), uptime()
    engine = models.load_engine(args.shape, args.precision, args.device, frame_cache_size=4)
    image = frame(args.width, args.height, 0)
    workdir = Path(tempfile.mkdtemp(prefix="lisa-semantic-bench-"))
    user_file = workdir / "descriptions.yaml"
    description = "" if args.plain else DESCRIPTION
    user_file.write_text("" if args.plain else "".join(f"{name}: '{DESCRIPTION}'\n" for name in NAMES))
    options = dict(descriptions_file=str(user_file), description_cache=str(workdir / "cache.json"),
                   generate_descriptions=False)
    unfiltered = semantic.SemanticSegmenter(engine, SemanticOptions(filter_threshold=0.0, **options))

    def single(key, name):
        return engine.segment(image, core.segment_instruction(name, description), frame_key=key,
                              conversation_id=name, force_answer=core.FORCED_ANSWER)

    def single_each(key, names):
        return [single(key, name) for name in names]

    tokenizer, im_start_end = engine.tokenizer, engine.model.config.use_im_start_end
    prefix = semantic.prefix_ids(tokenizer, im_start_end)
    tokens = {  # prompt tokens after the shared prefix, with this tokenizer (LLaMA's spells English shorter)
        "prefix_positions": len(prefix) - 1 + (engine.model.vision_tower.config.image_size
                                               // engine.model.vision_tower.config.patch_size) ** 2,
        "segment_prompt_mean": float(np.mean([len(semantic.suffix_ids(
            tokenizer, core.segment_instruction(n, description), prefix, im_start_end)) for n in NAMES])),
        "filter_prompt_mean": float(np.mean([len(semantic.suffix_ids(
            tokenizer, core.PRESENCE_QUESTION.format(category=n), prefix, im_start_end)) for n in NAMES])),
    }

    counter = iter(range(10 ** 9))
    fresh = lambda: ("bench", next(counter))  # noqa: E731  a new frame every call: CLIP and SAM paid
    single(fresh(), "floor")  # warm-up: allocator, kernels
    unfiltered.segment(image, list(NAMES[:5]), frame_key=fresh())

    thresholds, filtered = {}, {}
    for size in args.sizes:  # the threshold that keeps about --keep of the categories on this frame
        presence = semantic.presence_probabilities(engine, engine.frame_cache.encode(image, fresh(), {}), NAMES[:size],
                                                   max_batch_tokens=2048)
        keep = max(1, round(args.keep * size))
        thresholds[size] = float(np.sort(presence)[::-1][keep - 1])
        filtered[size] = semantic.SemanticSegmenter(engine, SemanticOptions(filter_threshold=thresholds[size],
                                                                            **options))

    times: dict[str, list[float]] = {"single": []}
    phases: dict[str, list[dict]] = {}
    kept: dict[int, list[int]] = {size: [] for size in args.sizes}
    for _ in range(args.repeats):
        _, ms = common.timed(single, fresh(), "floor", sync=sync)
        times["single"].append(ms)
        for size in args.sizes:
            names = list(NAMES[:size])
            key = fresh()
            _, ms = common.timed(single_each, key, names, sync=sync)
            times.setdefault(f"separate_{size}", []).append(ms)
            result, ms = common.timed(unfiltered.segment, image, names, frame_key=fresh(), sync=sync)
            times.setdefault(f"batched_{size}", []).append(ms)
            phases.setdefault(f"batched_{size}", []).append(result.timings_ms)
            result, ms = common.timed(filtered[size].segment, image, names, frame_key=fresh(), sync=sync)
            times.setdefault(f"filtered_{size}", []).append(ms)
            phases.setdefault(f"filtered_{size}", []).append(result.timings_ms)
            kept[size].append(size - len(result.filtered_out))

    describe_ms = []
    for name in NAMES[:3]:
        _, ms = common.timed(semantic.generate_descriptions, engine, [name], max_new_tokens=48, sync=sync)
        describe_ms.append(ms)

    median = {name: common.median(values) for name, values in times.items()}
    rows, per_size = [], {}
    for size in args.sizes:
        figures = {
            "single_ms": median["single"], "separate_ms": median[f"separate_{size}"],
            "batched_ms": median[f"batched_{size}"], "filtered_ms": median[f"filtered_{size}"],
            "batched_over_single": round(median[f"batched_{size}"] / median["single"], 2),
            "separate_over_batched": round(median[f"separate_{size}"] / median[f"batched_{size}"], 2),
            "filter_saves_share": round(1 - median[f"filtered_{size}"] / median[f"batched_{size}"], 3),
            "filter_threshold": round(thresholds[size], 4), "kept_by_filter": kept[size],
            "batched_phases_ms": {k: common.median(p[k] for p in phases[f"batched_{size}"] if k in p)
                                  for k in phases[f"batched_{size}"][0]},
            "filtered_phases_ms": {k: common.median(p[k] for p in phases[f"filtered_{size}"] if k in p)
                                   for k in phases[f"filtered_{size}"][0]},
        }
        per_size[size] = figures
        rows.append([size, figures["single_ms"], figures["separate_ms"], figures["batched_ms"],
                     figures["batched_over_single"], figures["separate_over_batched"],
                     f"{figures['filtered_ms']:.0f} ({int(np.median(kept[size]))} kept)",
                     f"{100 * figures['filter_saves_share']:.0f}%"])
    payload = {
        "shape": args.shape, "precision": args.precision, "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "frame": f"{args.width}x{args.height}", "repeats": args.repeats, "keep": args.keep,
        "descriptions": "none" if args.plain else DESCRIPTION, "prompt_tokens": tokens,
        "results": per_size, "ms": {name: common.summary(values) for name, values in times.items()},
        "describe_one_category_ms": common.summary(describe_ms),
        "target": "batched with 20 categories < 3x one single-instruction request",
        "machine_start": start_machine, "uptime_start": start_uptime,
        "machine_end": common.machine(args.device), "uptime_end": uptime(), "note": args.note,
    }
    suffix = "cuda" if device.type == "cuda" else "cpu"
    name = f"semantic_{args.shape}_{args.precision}_{suffix}" + ("_plain" if args.plain else "")
    path = common.write_result(name, payload, args.out)
    print(common.markdown_table(
        ["N", "single ms", "N separate ms", "batched ms", "batched / single", "separate / batched",
         f"filter on, ~{int(100 * args.keep)}% present: ms", "filter saves"], rows))
    print(f"load: {start_uptime} -> {payload['uptime_end']}")
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
