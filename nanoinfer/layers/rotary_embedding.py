"""Rotary position embedding: a table of cos/sin per position, applied to queries and keys."""

from __future__ import annotations

import math

import torch
from torch import nn

from nanoinfer.workbook.registry import learner_code


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [tokens, heads, head_dim] by its positions' angles (Exercise 5.2): dimension i of the first
    half pairs with dimension i of the second (Hugging Face's "rotate half" layout), and each pair (a, b)
    becomes (a cos - b sin, b cos + a sin). cos, sin: [tokens, head_dim // 2], shared by every layer."""
    cos, sin = cos.unsqueeze(-2).to(x.dtype), sin.unsqueeze(-2).to(x.dtype)
    a, b = x.chunk(2, dim=-1)
    return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)


def rope_inverse_frequencies(head_dim: int, base: float, scaling: dict | None = None) -> torch.Tensor:
    """One rotation speed per pair of dimensions: ``base ** (-2i / head_dim)``."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if rope_type == "default":
        return inv_freq
    if rope_type == "llama3":
        return _llama3_frequencies(inv_freq, scaling)
    raise NotImplementedError(f"rope_type {rope_type!r} is not supported (supported: default, llama3)")


def _llama3_frequencies(inv_freq: torch.Tensor, s: dict) -> torch.Tensor:
    """Llama 3.1+ long-context scaling: slow rotations are stretched by ``factor``, fast ones kept,
    and the band in between is blended linearly."""
    factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
    old_len = s["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    blend = (old_len / wavelen - low) / (high - low)
    blended = (1 - blend) * scaled / factor + blend * scaled
    in_band = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(in_band, blended, scaled)


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, max_position: int, base: float, scaling: dict | None = None) -> None:
        super().__init__()
        inv_freq = rope_inverse_frequencies(head_dim, base, scaling)
        angles = torch.outer(torch.arange(max_position, dtype=torch.float32), inv_freq)
        # float32 table, [max_position, head_dim]: cos in the first half, sin in the second.
        self.register_buffer("cos_sin", torch.cat((angles.cos(), angles.sin()), dim=-1), persistent=False)
        self.op = learner_code("5.2", apply_rotary)  # (nanoinfer/fast may swap in a fused kernel)

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, step_cache: dict | None = None):
        """q: [tokens, heads, head_dim], k: [tokens, kv_heads, head_dim]. ``step_cache`` (a dict that lives
        for one forward pass, whose positions do not change) keeps the cos/sin lookup for the other layers
        that share this module; ``op`` must not modify cos and sin, which every layer reuses."""
        key = ("rotary", id(self))
        cos_sin = step_cache.get(key) if step_cache is not None else None
        if cos_sin is None:
            cos_sin = self.cos_sin[positions].chunk(2, dim=-1)
            if step_cache is not None:
                step_cache[key] = cos_sin
        cos, sin = cos_sin
        return self.op(q, cos, sin), self.op(k, cos, sin)
