"""Benchmark 4: the tiny checkpoint end to end on the CPU: a regression baseline any machine can reproduce.

Loads the trained tiny checkpoint (``lisa_ros.model.tiny``, written once to
``benchmarks/.cache/tiny``; about 1-2 minutes) through ``LisaEngine.load``, the
node's path, at each precision, and runs real requests (the model's own greedy
answers, no forcing; the tiny LLM answers "Sure, [SEG]." etc.) on 640x480 and
1280x720 frames: per-phase timings from ``EngineOutput.timings_ms``, end to end,
a second instruction on the same frame, and the load time.

    python -P benchmarks/tiny_cpu.py [--precisions fp32 bf16 int8 int4] [--repeats 10]
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
from engine_vs_reference import frame  # noqa: E402
from lisa_ros.model.engine import LisaEngine, LisaOptions  # noqa: E402

INSTRUCTIONS = ("Please segment the cup.", "Where is the saucer? Please output segmentation mask.")
SIZES = {"640x480": (640, 480), "1280x720": (1280, 720)}
PHASES = ("preprocess", "clip", "prefill", "decode", "sam_encoder", "mask_decode", "total")


def measure(checkpoint: Path, precision: str, size: str, repeats: int) -> dict:
    tick = time.perf_counter()
    engine = LisaEngine(LisaOptions(path=str(checkpoint), precision=precision, device="cpu", max_history_turns=0,
                                    local_files_only=True))
    engine.load()
    load_s = time.perf_counter() - tick
    width, height = SIZES[size]
    image = frame(width, height, 2)
    engine.segment(image, INSTRUCTIONS[0], frame_key="warmup")
    first, second, phases, phases_second, answers = [], [], [], [], set()
    for repeat in range(repeats):
        key = (size, repeat, time.monotonic_ns())
        out1, ms1 = common.timed(engine.segment, image, INSTRUCTIONS[0], frame_key=key)
        out2, ms2 = common.timed(engine.segment, image, INSTRUCTIONS[1], frame_key=key)
        first.append(ms1)
        second.append(ms2)
        phases.append(out1.timings_ms)
        phases_second.append(out2.timings_ms)
        answers.add(f"{out1.text!r} ({len(out1.masks)} mask)")
    engine.unload()
    return {
        "precision": precision, "frame": size, "repeats": repeats, "load_s": round(load_s, 2),
        "new_frame_ms": common.summary(first), "same_frame_ms": common.summary(second),
        "phases_ms": {k: common.median(p.get(k, 0.0) for p in phases) for k in PHASES},
        "same_frame_phases_ms": {k: common.median(p.get(k, 0.0) for p in phases_second) for k in PHASES},
        "answers": sorted(answers),
    }


def table(rows: list[dict]) -> str:
    return common.markdown_table(
        ["precision", "frame", "preprocess", "CLIP", "prefill", "decode", "SAM encoder", "mask decode",
         "end to end median", "p95", "same frame median", "load s"],
        [[r["precision"], r["frame"], *(r["phases_ms"][k] for k in PHASES[:-1]), r["new_frame_ms"]["median"],
          r["new_frame_ms"]["p95"], r["same_frame_ms"]["median"], r["load_s"]] for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="tiny checkpoint directory (default: the cached one)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "int8", "int4"],
                        choices=("fp32", "bf16", "int8", "int4"))
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--note", default="")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = Path(args.checkpoint) if args.checkpoint else models.tiny_checkpoint()
    before = common.machine()
    rows = []
    for precision in args.precisions:
        for size in args.sizes:
            print(f"== {precision} {size}", flush=True)
            rows.append(measure(checkpoint, precision, size, args.repeats))
            print(table(rows[-1:]), flush=True)
    result = {"checkpoint": "lisa-tiny-7b (lisa_ros.model.tiny, seed 0)", "rows": rows, "machine_start": before,
              "machine_end": common.machine(), "note": args.note}
    path = common.write_result("tiny_cpu", result, args.out)
    print(f"\n{common.machine_line(before)}\n\n{table(rows)}\n\nwritten {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
