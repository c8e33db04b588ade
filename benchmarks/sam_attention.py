"""SAM image encoder attention: segment_anything's eager attention vs torch SDPA (SDPA is what the engine runs).

``segment_anything.modeling.image_encoder.Attention`` materialises
``softmax(q k^T * scale + rel_pos)`` itself (matmul, add, softmax, matmul: four
passes over a (heads, N, N) tensor; N = 4096 in ViT-H's 4 global layers, 196 in
its 28 windowed ones). ``lisa_ros.model.sam`` (what the engine runs) computes the
same thing with ``torch.nn.functional.scaled_dot_product_attention`` and the
decomposed relative-position term as an additive mask. This script measures one
ViT-H-sized block (global and windowed), or the whole ViT-H encoder with
``--encoder``, both ways in the same run, and the largest difference of the outputs.
``--compile`` adds the SDPA version through ``torch.compile`` (its first call, the compile, timed
apart). In block mode the ViT-H encoder's cost is estimated from the blocks (4 global and 28
windowed; patch embedding and neck left out), as a whole ViT-H encoder takes ~30 s per call on a
small CPU.

    python -P benchmarks/sam_attention.py                              # CPU, fp32, blocks
    python -P benchmarks/sam_attention.py --dtype bf16 --compile       # CPU, bf16, blocks, + compiled
    python -P benchmarks/sam_attention.py --device cuda --dtype fp16 --encoder --compile   # benchmarks/gpu_quick.sh
    python -P benchmarks/sam_attention.py --sam tiny --encoder         # the tiny checkpoint's SAM: a dry run
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402
from lisa_ros.model.sam import SamConfig, build_sam, use_sdpa_attention  # noqa: E402
from lisa_ros.model.tiny import TINY_SAM  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def bench(fn, encoder, repeats: int, sync) -> tuple[torch.Tensor, list[float]]:
    out, _ = common.timed(fn, encoder, sync=sync)  # warm-up
    times = []
    for _ in range(repeats):
        out, ms = common.timed(fn, encoder, sync=sync)
        times.append(ms)
    return out, times


def encoder_estimate(rows: dict) -> dict:
    """ViT-H's 32 blocks from the measured two: 4 global, 28 windowed (medians, ms)."""
    config = SamConfig()
    global_count = len(config.encoder_global_attn_indexes)
    windowed_count = config.encoder_depth - global_count
    estimate = {}
    for column in ("eager_ms", "sdpa_ms", "compiled_ms"):
        if column in rows["global_block_64x64"]:
            estimate[column] = {"median": round(global_count * rows["global_block_64x64"][column]["median"]
                                                + windowed_count * rows["windowed_block_14x14"][column]["median"], 1)}
    return estimate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    parser.add_argument("--encoder", action="store_true", help="the whole image encoder, not single blocks")
    parser.add_argument("--sam", default="vit_h", choices=("vit_h", "tiny"),
                        help="vit_h (released checkpoints) or the tiny checkpoint's SAM (a dry run, --encoder only)")
    parser.add_argument("--compile", action="store_true", help="also the SDPA version through torch.compile")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile's backend (gpu_quick's CPU dry run: aot_eager, tracing without code "
                             "generation)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--note", default="")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.sam == "tiny" and not args.encoder:
        parser.error("--sam tiny needs --encoder (the single-block cases have ViT-H's sizes)")
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    torch.manual_seed(0)
    config = SamConfig() if args.sam == "vit_h" else SamConfig.from_tiny_dict(TINY_SAM, prompt_embed_dim=32)
    eager_encoder = build_sam(config, sdpa=False).image_encoder.to(device, dtype).eval()
    for block in eager_encoder.blocks:  # random relative positions (zero-initialised otherwise)
        torch.nn.init.normal_(block.attn.rel_pos_h, std=0.02)
        torch.nn.init.normal_(block.attn.rel_pos_w, std=0.02)
    sdpa_encoder = copy.deepcopy(eager_encoder)
    use_sdpa_attention(sdpa_encoder)
    cases = {}
    with torch.inference_mode():
        if args.encoder:
            x = torch.randn(1, 3, 1024, 1024, device=device, dtype=dtype)
            cases[f"{args.sam}_encoder_1024"] = lambda encoder: encoder(x)
        else:
            tokens = torch.randn(1, 64, 64, 1280, device=device, dtype=dtype) * 0.5
            global_index = SamConfig().encoder_global_attn_indexes[0]
            cases["global_block_64x64"] = lambda encoder: encoder.blocks[global_index](tokens)
            cases["windowed_block_14x14"] = lambda encoder: encoder.blocks[0](tokens)
        suffix = "cuda" if device.type == "cuda" else "cpu"
        rows = {}
        result = {"device": args.device, "dtype": args.dtype, "sam": args.sam, "repeats": args.repeats, "rows": rows,
                  "machine": common.machine(args.device), "note": args.note}
        for name, fn in cases.items():
            eager_out, eager = bench(fn, eager_encoder, args.repeats, sync)
            sdpa_out, sdpa = bench(fn, sdpa_encoder, args.repeats, sync)
            difference = (eager_out.float() - sdpa_out.float()).abs().max().item()
            scale = eager_out.float().abs().max().item()
            rows[name] = {"eager_ms": common.summary(eager), "sdpa_ms": common.summary(sdpa),
                          "speedup": round(common.median(eager) / common.median(sdpa), 2),
                          "max_abs_difference": difference, "max_abs_output": scale}
            print(f"{name}: eager {common.median(eager):.1f} ms, sdpa {common.median(sdpa):.1f} ms, "
                  f"max |diff| {difference:.2e} (outputs up to {scale:.2e})", flush=True)
            if args.compile:
                common.write_result(f"sam_attention_{suffix}_{args.dtype}", result, args.out)  # a compile may overrun
                compiled_fn = torch.compile(fn, backend=args.compile_backend)
                tick = time.perf_counter()
                common.timed(compiled_fn, sdpa_encoder, sync=sync)  # the compile
                compile_s = time.perf_counter() - tick
                compiled_out, compiled = bench(compiled_fn, sdpa_encoder, args.repeats, sync)
                rows[name].update(
                    compiled_ms=common.summary(compiled), compile_s=round(compile_s, 1),
                    compile_backend=args.compile_backend,
                    speedup_compiled_vs_sdpa=round(common.median(sdpa) / common.median(compiled), 2),
                    max_abs_difference_compiled=(eager_out.float() - compiled_out.float()).abs().max().item())
                print(f"{name}: compiled {common.median(compiled):.1f} ms (compile {compile_s:.1f} s)", flush=True)
        if not args.encoder:
            rows["vit_h_encoder_estimate"] = encoder_estimate(rows)
    path = common.write_result(f"sam_attention_{suffix}_{args.dtype}", result, args.out)
    print(common.markdown_table(["case", "eager ms", "SDPA ms", "speedup", "compiled ms", "max abs diff"],
                                [[k, v["eager_ms"]["median"], v["sdpa_ms"]["median"], v.get("speedup"),
                                  v.get("compiled_ms", {}).get("median"), f"{v.get('max_abs_difference', 0):.1e}"]
                                 for k, v in rows.items()]))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
