"""The decode-step matmuls of one model shape (default qwen3-0.6b) at 2-256 rows: cuBLAS (and the Triton
SiLU-and-mul after the gate/up product) against fast/tile_linear_triton.py's kernel, each block configuration of a
grid, in one run. Each variant is timed as the model runs it: one call per layer, each layer's weights its own
(28 x 12.6 MB of gate/up weights do not fit the L2 cache), recorded in a CUDA graph and replayed (the median of
5 replays), so that dependent launch overlaps consecutive calls as in the engine's graphs. Writes a record with
card, date, command and commit: the best configuration per row count and shape, and its time against cuBLAS's.

    python scripts/tile_linear_bench.py --out notebooks/reference_results/h200_tile_linear.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from cuda_timing import graph_us  # (scripts/ is on the path when a script runs)
from nanoinfer.fast.silu_and_mul_triton import silu_and_mul
from nanoinfer.fast.tile_linear_triton import block_config, tile_linear

SHAPES = {  # name: (output columns N, K, gated), for qwen3-0.6b: hidden 1,024, 16 + 2 x 8 heads of 128, MLP 3,072
    "qkv": (4096, 1024, False), "o": (1024, 2048, False), "gate_up": (3072, 1024, True), "down": (1024, 3072, False)}


def chain_us(fn, weights, x) -> float:
    """Microseconds per call of ``fn(x, w)``, each call with the next of ``weights``, replayed from a CUDA graph."""
    layer = itertools.cycle(weights)
    return graph_us(lambda: fn(x, next(layer)), calls=len(weights))


def configs(M: int):
    block_ms = [b for b in (16, 32, 64, 128) if b <= max(16, 2 * M)]
    return [(bm, bn, bk, warps, stages) for bm, bn, bk, (warps, stages)
            in itertools.product(block_ms, (32, 64, 128), (64, 128), ((4, 3), (4, 4), (8, 3))) if warps == 4 or bm == 128]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True), p.add_argument("--layers", type=int, default=28)
    p.add_argument("--rows", type=int, nargs="+", default=[2, 8, 16, 32, 64, 136, 200, 256])
    p.add_argument("--commit", default=None, help="the commit measured (default: git's HEAD)")
    args = p.parse_args()
    dev, dtype = torch.device("cuda"), torch.bfloat16
    rows = {}
    for name, (N, K, gated) in SHAPES.items():
        weights = [torch.randn(2 * N if gated else N, K, device=dev, dtype=dtype) / K**0.5 for _ in range(args.layers)]
        cublas = (lambda x, w: silu_and_mul(F.linear(x, w))) if gated else F.linear
        for M in tqdm(args.rows, desc=name):
            x = torch.randn(M, K, device=dev, dtype=dtype)
            want = cublas(x, weights[0]).float()
            row = {"cublas_us": chain_us(cublas, weights, x), "default_config": list(block_config(M, N, K, gated))}
            row["default_us"] = chain_us(lambda x, w: tile_linear(x, w, gated=gated), weights, x)
            best = (float("inf"), None)
            for config in configs(M):
                fn = lambda x, w, c=config: tile_linear(x, w, gated=gated, config=c)  # noqa: E731
                try:
                    error = ((fn(x, weights[0]).float() - want).abs().max() / want.abs().max()).item()
                    us = chain_us(fn, weights, x)
                except Exception as e:  # (a tile past the shared memory: that configuration does not run)
                    if "resources" not in str(e).lower() and "shared memory" not in str(e).lower():
                        raise
                    continue
                if error > 2e-2:
                    raise AssertionError(f"{name} M={M} config {config}: relative error {error:.3g}")
                best = min(best, (us, config))
            if best[1] is None:
                raise RuntimeError(f"{name} M={M}: no block configuration of the grid ran")
            row["best_us"], row["best_config"] = best[0], list(best[1])
            rows[f"{name} M={M}"] = row
            print(f"{name:8s} M={M:4d} cuBLAS{'+SiLU' if gated else '     '} {row['cublas_us']:7.2f} us  "
                  f"default {row['default_us']:7.2f}  best {best[0]:7.2f} {best[1]}", flush=True)
    commit = args.commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                           cwd=Path(__file__).parent).stdout.strip() or "unknown"
    record = {"card": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d"),
              "command": "python scripts/tile_linear_bench.py " + " ".join(sys.argv[1:]), "commit": commit,
              "layers": args.layers, "shapes": {k: list(v) for k, v in SHAPES.items()}, "rows": rows}
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
