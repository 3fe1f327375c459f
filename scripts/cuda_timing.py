"""Helpers of scripts/sampler_bench.py, decode_kernel_sweep.py and small_kernels_bench.py (not run on their own):
CUDA-event timing of a GPU call, launched eagerly or replayed from a CUDA graph."""

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


def graph_us(fn, calls: int = 20, repeats: int = 5) -> float:
    """Microseconds per call of ``fn`` replayed from a CUDA graph of ``calls`` calls (the median of ``repeats``)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up: compile, allocate
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    runs = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        runs.append(start.elapsed_time(end) * 1e3 / calls)
    return sorted(runs)[repeats // 2]
