"""SAM image encoder attention: segment_anything's eager attention vs torch SDPA (SDPA is what the engine runs).

``segment_anything.modeling.image_encoder.Attention`` materialises
``softmax(q k^T * scale + rel_pos)`` itself (matmul, add, softmax, matmul: four
passes over a (heads, N, N) tensor; N = 4096 in ViT-H's 4 global layers, 196 in
its 28 windowed ones). ``lisa_ros.model.sam`` (what the engine runs) computes the
same thing with ``torch.nn.functional.scaled_dot_product_attention`` and the
decomposed relative-position term as an additive mask. This script measures one
ViT-H-sized block (global and windowed), or the whole ViT-H encoder with
``--encoder``, both ways in the same run, and the largest difference of the outputs. With
``--compile``, a third way: the SDPA encoder through ``torch.compile`` (the first call, which
compiles, is timed apart as ``compile_s``).

    python -P benchmarks/sam_attention.py                              # CPU, fp32, blocks
    python -P benchmarks/sam_attention.py --device cuda --dtype fp16 --encoder --compile
    python -P benchmarks/sam_attention.py --sam tiny --encoder         # the tiny checkpoint's SAM: a dry run
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402
from lisa_ros.model.sam import SamConfig, build_sam, use_sdpa_attention  # noqa: E402
from lisa_ros.model.tiny import TINY_SAM  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def bench(fn, encoder, repeats: int, sync) -> tuple[torch.Tensor, list[float], float]:
    """(output, milliseconds of each repeat, milliseconds of the warm-up call: a compile for a compiled encoder)."""
    out, first_ms = common.timed(fn, encoder, sync=sync)
    times = []
    for _ in range(repeats):
        out, ms = common.timed(fn, encoder, sync=sync)
        times.append(ms)
    return out, times, first_ms


def difference(reference: torch.Tensor, other: torch.Tensor) -> float:
    return (reference.float() - other.float()).abs().max().item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    parser.add_argument("--encoder", action="store_true", help="the whole image encoder, not single blocks")
    parser.add_argument("--sam", default="vit_h", choices=("vit_h", "tiny"),
                        help="vit_h (released checkpoints) or the tiny checkpoint's SAM (a dry run, --encoder only)")
    parser.add_argument("--compile", action="store_true",
                        help="also time the SDPA encoder through torch.compile (first call, the compile, apart)")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend (the CPU dry run: aot_eager, which traces without code generation)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--note", default="")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.sam == "tiny" and not args.encoder:
        parser.error("--sam tiny needs --encoder (the single-block cases have ViT-H's sizes)")
    if args.compile and not args.encoder:
        parser.error("--compile needs --encoder (a compiled encoder's blocks, called one by one, run uncompiled)")
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
            eager_out, eager, _ = bench(fn, eager_encoder, args.repeats, sync)
            sdpa_out, sdpa, _ = bench(fn, sdpa_encoder, args.repeats, sync)
            scale = eager_out.float().abs().max().item()
            rows[name] = row = {"eager_ms": common.summary(eager), "sdpa_ms": common.summary(sdpa),
                                "speedup": round(common.median(eager) / common.median(sdpa), 2),
                                "max_abs_difference": difference(eager_out, sdpa_out), "max_abs_output": scale}
            print(f"{name}: eager {common.median(eager):.1f} ms, sdpa {common.median(sdpa):.1f} ms, "
                  f"max |diff| {row['max_abs_difference']:.2e} (outputs up to {scale:.2e})", flush=True)
            common.write_result(f"sam_attention_{suffix}_{args.dtype}", result, args.out)  # before the compile
            if args.compile:
                compiled_encoder = torch.compile(sdpa_encoder, backend=args.compile_backend)
                compiled_out, compiled, compile_ms = bench(fn, compiled_encoder, args.repeats, sync)
                row.update(compiled_ms=common.summary(compiled), compile_s=round(compile_ms / 1000, 1),
                           compile_backend=args.compile_backend,
                           compiled_speedup=round(common.median(eager) / common.median(compiled), 2),
                           compiled_max_abs_difference=difference(eager_out, compiled_out))
                print(f"{name}: compiled {common.median(compiled):.1f} ms (compile {compile_ms / 1000:.1f} s), "
                      f"max |diff| {row['compiled_max_abs_difference']:.2e}", flush=True)
    path = common.write_result(f"sam_attention_{suffix}_{args.dtype}", result, args.out)
    print(common.markdown_table(["case", "eager ms", "SDPA ms", "speedup", "compiled ms", "compiled speedup",
                                 "max abs diff"],
                                [[k, v["eager_ms"]["median"], v["sdpa_ms"]["median"], v["speedup"],
                                  v.get("compiled_ms", {}).get("median"), v.get("compiled_speedup"),
                                  f"{v['max_abs_difference']:.1e}"] for k, v in rows.items()]))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
