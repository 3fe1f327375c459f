"""Phase 3 — GPU execution: attention written out, sampling, CUDA-graph choice, online softmax, the report.

3.1, 3.2 and 3.3 run inside the engine: their reference is the engine's own code, imported here. 3.4 and
3.5 are answered below."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

# The engine's own reference code for the exercises it runs at a hook (nanoinfer/workbook/registry.py).
from nanoinfer.attention.torch_backend import naive_attention  # noqa: F401  Exercise 3.1
from nanoinfer.fast.cuda_graphs import pick_cuda_graph  # noqa: F401  Exercise 3.3
from nanoinfer.layers.sampler import gumbel_max_sample  # noqa: F401  Exercise 3.2


def online_softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                             scale: float, tile_size: int = 64) -> torch.Tensor:
    """Exercise 3.4: the same result as ``naive_attention``, visiting keys one tile at a time.

    Keep, per query, the running maximum score m, the running sum of exp(score - m) l, and the running
    weighted sum of values acc. When a tile raises the maximum, rescale l and acc by exp(m_old - m_new).
    Memory is O(Lq * tile) instead of O(Lq * Lk): the idea behind FlashAttention.
    """
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    B, H, Lq, D = q.shape
    m = torch.full((B, H, Lq, 1), float("-inf"), dtype=torch.float32, device=q.device)
    l = torch.zeros((B, H, Lq, 1), dtype=torch.float32, device=q.device)
    acc = torch.zeros((B, H, Lq, D), dtype=torch.float32, device=q.device)
    for start in range(0, k.shape[2], tile_size):
        kt, vt = k[:, :, start : start + tile_size], v[:, :, start : start + tile_size]
        s = torch.matmul(q, kt.transpose(-1, -2)).float() * scale
        s = s.masked_fill(~mask[..., start : start + tile_size], float("-inf"))
        m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
        # Rows that have seen only masked keys keep m = -inf; use 0 there so exp() gives 0, not NaN.
        safe = torch.where(torch.isinf(m_new), 0.0, m_new)
        p = torch.exp(s - safe)
        correction = torch.exp(m - safe)
        l = l * correction + p.sum(dim=-1, keepdim=True)
        acc = acc * correction + torch.matmul(p, vt.float())
        m = m_new
    return (acc / l).to(q.dtype)


def performance_report(timeline: pd.DataFrame, by: str = "config") -> pd.DataFrame:
    """Exercise 3.5: per configuration, decode tokens/s and the p50 / p99 of the time each token waited.

    Each decode step hands one token to each of its ``num_sampled`` sequences after ``seconds``, so the
    per-token latencies are the step times repeated by width: a wide step weighs more than a narrow one.
    """
    rows = {}
    for config, runs in timeline.groupby(by, sort=False):
        decode = runs[runs["phase"] == "decode"]
        if decode.empty:
            raise ValueError(f"configuration {config!r} has no decode step in the timeline")
        waits_ms = np.repeat(decode["seconds"].to_numpy() * 1e3, decode["num_sampled"].to_numpy())
        tokens = int(decode["num_sampled"].sum())
        rows[config] = {"decode_steps": len(decode), "tokens": tokens,
                        "tokens_per_s": tokens / decode["seconds"].sum(),
                        "ms_per_token_p50": np.percentile(waits_ms, 50),
                        "ms_per_token_p99": np.percentile(waits_ms, 99)}
    report = pd.DataFrame.from_dict(rows, orient="index")
    report.index.name = by
    return report
