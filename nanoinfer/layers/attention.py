"""Paged attention for one layer: write this step's keys and values into the KV cache, then attend.
How it is computed is the backend's business (nanoinfer/attention/)."""

from __future__ import annotations

import torch
from torch import nn

from nanoinfer.attention.base import AttentionBackend, AttentionMetadata


class Attention(nn.Module):
    """The ModelRunner binds ``k_cache``, ``v_cache`` (views of the one KV tensor) and ``backend`` to every
    layer when it allocates the cache."""

    def __init__(self, num_heads: int, head_dim: int, scale: float, num_kv_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.num_kv_heads = num_heads, head_dim, num_kv_heads
        self.scale = scale
        self.k_cache: torch.Tensor | None = None
        self.v_cache: torch.Tensor | None = None
        self.backend: AttentionBackend | None = None

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata,
                kv_stored: bool = False) -> torch.Tensor:
        """q: [tokens, heads, head_dim]; k, v: [tokens, kv_heads, head_dim] -> [tokens, heads, head_dim].
        ``kv_stored``: k and v are already in their slots (a fused kernel wrote them)."""
        if not kv_stored:
            self.backend.store_kv(k, v, self.k_cache, self.v_cache, meta)
        return self.backend.forward(q, k, v, self.k_cache, self.v_cache, meta, self.scale)
