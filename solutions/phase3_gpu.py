"""Phase 3 — GPU execution: attention written out, sampling, CUDA-graph choice, online softmax."""

from __future__ import annotations

import bisect

import torch


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                    scale: float) -> torch.Tensor:
    """Exercise 3.1: attention that builds the whole score matrix in memory.

    q: [B, H, Lq, D]; k, v: [B, Hkv, Lk, D] with H a multiple of Hkv (grouped-query attention: query
    head h uses key/value head h // (H // Hkv)); mask: [B, 1, Lq, Lk], True where a query may attend.
    Returns [B, H, Lq, D]. The [B, H, Lq, Lk] score matrix is what FlashAttention never materialises.
    """
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.matmul(torch.softmax(scores.float(), dim=-1).to(q.dtype), v)


def gumbel_max_sample(logits: torch.Tensor, temperatures: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Exercise 3.2: draw one token per row with the Gumbel-max trick, given exponential noise.

    logits: [B, V] float32; temperatures: [B] (0 = greedy); noise: [B, V] drawn from Exp(1).
    argmax(p_i / E_i) with E_i ~ Exp(1) picks token i with probability p_i (it equals argmax of
    log p_i + Gumbel noise), so no cumulative sum or sort is needed; it runs as one fused kernel.
    """
    greedy = temperatures == 0
    scaled = logits / torch.where(greedy, 1.0, temperatures).unsqueeze(1)
    probs = torch.softmax(scaled, dim=-1)
    sampled = (probs / noise).argmax(dim=-1)
    return torch.where(greedy, logits.argmax(dim=-1), sampled)


def pick_cuda_graph(batch_size: int, captured_sizes: list[int]) -> tuple[int, int]:
    """Exercise 3.3: the captured decode graph to replay for ``batch_size`` sequences.

    ``captured_sizes`` is sorted ascending. Return (graph size, padding slots wasted): the smallest
    captured size that holds the batch. Raise ValueError if the batch is larger than every graph.
    """
    i = bisect.bisect_left(captured_sizes, batch_size)
    if i == len(captured_sizes):
        raise ValueError(f"batch of {batch_size} exceeds the largest captured graph ({captured_sizes[-1]})")
    return captured_sizes[i], captured_sizes[i] - batch_size


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
