"""Helper of scripts/sampler_bench.py and scripts/decode_kernel_sweep.py (not run on its own): CUDA-event
timing of a GPU call."""

import torch


def best_ms(fn, iters: int = 20, repeats: int = 3) -> float:
    """Milliseconds per call of ``fn``: one warm-up call, then the best of ``repeats`` runs of ``iters``."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(repeats):
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / iters)
    return best
