"""Phase 5 — model implementation. Your code for Exercises 5.1, 5.2 and 5.5.

Check your work with ``make check EX=5.1`` (or ``python -m nanoinfer.check 5.1``).
Phase 5 has no notebook yet.
"""

from __future__ import annotations

import torch


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Exercise 5.1: RMSNorm, optionally fused with the residual add in front of it.

    Without ``residual``: return ``weight * x / sqrt(mean(x**2, last dim) + eps)``, a tensor.
    With ``residual``: let ``h = x + residual``; return the tuple ``(rms_norm(h), h)``: the second item is
    the next layer's residual. Compute the mean of squares in float32, cast the normalised values back to
    x's dtype, then multiply by ``weight`` (Hugging Face's order, so results match it bit for bit).
    """
    raise NotImplementedError("Exercise 5.1: write rms_norm(x, weight, eps, residual)")


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Exercise 5.2: rotate query or key vectors by the angles of their positions.

    x: [tokens, heads, head_dim]; cos, sin: [tokens, head_dim // 2] (float32; cast them to x's dtype).
    Dimension i of the first half pairs with dimension i of the second half ("rotate half", as in Hugging
    Face's Llama): the pair (a, b) becomes (a cos - b sin, b cos + a sin). Return a tensor shaped like x.
    Leave cos and sin unchanged: the engine looks them up once per step and every layer reuses them.
    """
    raise NotImplementedError("Exercise 5.2: write apply_rotary(x, cos, sin)")


def unpermute_qk(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Exercise 5.5: put back the row order that llama.cpp changed in GGUF q and k projections.

    weight: [num_heads * head_dim, hidden]. Within each head, GGUF row 2j holds the original row j and row
    2j + 1 the original row j + head_dim / 2 (llama.cpp rotates adjacent pairs, Hugging Face rotates i with
    i + head_dim / 2). Return the weight in Hugging Face's order, same shape. Hint: reshape, transpose,
    reshape.
    """
    raise NotImplementedError("Exercise 5.5: write unpermute_qk(weight, num_heads)")
