"""What semantic mode's category filter does with the tiny checkpoint: P(yes) per seed of make-tiny-checkpoint.

The tiny checkpoint is trained only to answer "Sure, [SEG]." (lisa_ros/model/tiny.py), never to answer "Is there
a {category} in the image?": its P(yes) = sigmoid(logit Yes - logit No) (model/semantic.py
presence_probabilities) is whatever its weights give. This measures it for several seeds, the demo's categories
and a few others, on several frames, and counts what the default filter_threshold (0.5) would keep.

    python -P benchmarks/tiny_filter.py --seeds 0 1 2 3 4 --out benchmarks/results/tiny_filter_p_yes.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import common  # noqa: E402
from engine_vs_reference import frame  # noqa: E402
from lisa_ros.core.node_config import PARAMETERS  # noqa: E402
from lisa_ros.model import semantic  # noqa: E402
from lisa_ros.model.engine import LisaEngine, LisaOptions  # noqa: E402
from lisa_ros.model.tiny import write_tiny_checkpoint  # noqa: E402

DEMO_CATEGORIES = ("cup", "ball", "book", "table")  # data/sample_labels/categories.txt
OTHER_CATEGORIES = ("floor", "wall", "door", "person", "chair", "bottle", "dog", "fire extinguisher")


def measure_seed(seed: int, frames: int) -> dict:
    categories = DEMO_CATEGORIES + OTHER_CATEGORIES
    threshold = PARAMETERS["semantic.filter_threshold"][0]
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = write_tiny_checkpoint(folder, layout="7b", seed=seed)  # what make-tiny-checkpoint writes
        engine = LisaEngine(LisaOptions(path=str(checkpoint.lisa_dir), precision="fp32", device="cpu",
                                        local_files_only=True))
        engine.load()
        rows = []
        for index in range(frames):
            encoded = engine.frame_cache.encode(frame(160, 120, seed=index), ("frame", index), {})
            rows.append(semantic.presence_probabilities(engine, encoded, categories, max_batch_tokens=2048))
        engine.unload()
    p_yes = np.array(rows)  # (frames, categories)
    return {
        "seed": seed,
        "p_yes_min": round(float(p_yes.min()), 4), "p_yes_median": round(float(np.median(p_yes)), 4),
        "p_yes_max": round(float(p_yes.max()), 4),
        "spread_across_categories_max": round(float((p_yes.max(1) - p_yes.min(1)).max()), 4),
        "kept_at_default_threshold": f"{int((p_yes >= threshold).sum())}/{p_yes.size}",
        "p_yes_demo_categories_frame0": {c: round(float(p), 4) for c, p in zip(DEMO_CATEGORIES, p_yes[0])},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = {"command": common.command_line(), "default_filter_threshold": PARAMETERS["semantic.filter_threshold"][0],
              "categories": list(DEMO_CATEGORIES + OTHER_CATEGORIES), "frames": args.frames, "seeds": []}
    for seed in args.seeds:
        result["seeds"].append(measure_seed(seed, args.frames))
        print(json.dumps(result["seeds"][-1]), flush=True)
        if args.out:
            args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
