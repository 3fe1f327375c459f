"""Three small kernels of every step on a GPU, timed inside CUDA graphs (20 calls, the median of 5 replays): the MLP's
SiLU-and-mul (torch.compile's kernel of the reference op against fast/silu_and_mul_triton.py) at 1-16,384 rows of
Qwen3-0.6B's 3,072 columns; the residual add and RMSNorm (torch.compile's kernel of the reference op against
fast/rms_norm_triton.py) at 16-16,384 rows of its 1,024 columns, alone and, as a decode step runs it, after each of 28
cuBLAS matmuls (the o projection's [rows, 2,048] x [2,048, 1,024], each with its own weights); and the Triton
sampler's seeded draw at 1-256 rows of its 151,936-entry vocabulary. Writes a record with card, date, command,
commit.

    python scripts/small_kernels_bench.py --out notebooks/reference_results/h200_small_kernels.json
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

from cuda_timing import graph_us  # (scripts/ is on the path when a script runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--commit", default=None, help="the commit measured (default: git's HEAD)")
    args = p.parse_args()
    import torch.nn.functional as F

    from nanoinfer.fast.sampler_triton import seeded_gumbel_max_triton
    from nanoinfer.layers.activation import silu_and_mul
    from nanoinfer.layers.layernorm import rms_norm

    silu = {}
    try:
        from nanoinfer.fast.silu_and_mul_triton import silu_and_mul as triton_silu_and_mul
    except ImportError:  # (a tree from before the kernel)
        triton_silu_and_mul = None
    compiled = torch.compile(silu_and_mul, dynamic=True)  # as nanoinfer/fast applied it before
    for rows in (1, 16, 136, 256, 2048, 16384):
        x = torch.randn(rows, 2 * 3072, device="cuda", dtype=torch.bfloat16)
        silu[rows] = {"compiled_us": graph_us(lambda: compiled(x))}
        if triton_silu_and_mul is not None:
            assert torch.allclose(triton_silu_and_mul(x).float(), silu_and_mul(x.clone()).float(), rtol=2e-2, atol=2e-2)
            silu[rows]["triton_us"] = graph_us(lambda: triton_silu_and_mul(x))
        print("silu", rows, {k: round(v, 2) for k, v in silu[rows].items()}, flush=True)
    norm = {}
    try:
        from nanoinfer.fast.rms_norm_triton import rms_norm as triton_rms_norm
    except ImportError:  # (a tree from before the kernel)
        triton_rms_norm = None
    kernels = {"compiled": torch.compile(rms_norm, dynamic=True), "triton": triton_rms_norm}
    o_weights = [torch.randn(1024, 2048, device="cuda", dtype=torch.bfloat16) / 2048**0.5 for _ in range(28)]
    for rows in (16, 64, 136, 256, 16384):
        x, residual = (torch.randn(rows, 1024, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        attended = torch.randn(rows, 2048, device="cuda", dtype=torch.bfloat16)
        weight = (torch.rand(1024, device="cuda") + 0.5).to(torch.bfloat16)
        norm[rows] = {}
        for name, kernel in kernels.items():
            if kernel is None:
                continue
            torch.testing.assert_close(kernel(x, weight, 1e-6, residual)[0].float(),
                                       rms_norm(x, weight, 1e-6, residual)[0].float(), rtol=2e-2, atol=2e-2)
            norm[rows][f"{name}_us"] = graph_us(lambda: kernel(x, weight, 1e-6, residual))
            if rows <= 256:  # o projection then norm, 28 layers' weights in turn: the pair's time per layer
                layer = itertools.cycle(o_weights)
                norm[rows][f"after a matmul, {name}_us"] = graph_us(
                    lambda: kernel(F.linear(attended, next(layer)), weight, 1e-6, residual), calls=28)
        if rows <= 256:
            layer = itertools.cycle(o_weights)
            norm[rows]["the matmul alone_us"] = graph_us(lambda: F.linear(attended, next(layer)), calls=28)
        print("add + rms_norm", rows, {k: round(v, 2) for k, v in norm[rows].items()}, flush=True)
    draw = {}
    for rows in (1, 16, 136, 256):
        logits = torch.randn(rows, 151936, device="cuda", dtype=torch.bfloat16) * 3
        temperatures = torch.full((rows,), 0.6, device="cuda")
        seeds = torch.randint(0, 2**62, (rows,), device="cuda")
        draw[rows] = graph_us(lambda: seeded_gumbel_max_triton(logits, temperatures, seeds))
        print("seeded draw", rows, round(draw[rows], 2), flush=True)
    commit = args.commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                           cwd=Path(__file__).parent).stdout.strip() or "unknown"
    record = {"card": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d"),
              "command": "python scripts/small_kernels_bench.py " + " ".join(sys.argv[1:]), "commit": commit,
              "torch": torch.__version__, "silu_and_mul_us (bf16, rows x 3,072)": silu,
              "add_rms_norm_us (bf16, rows x 1,024)": norm,
              "seeded_draw_us (bf16, rows x 151,936, temperature 0.6)": draw}
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
