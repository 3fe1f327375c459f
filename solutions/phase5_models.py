"""Phase 5 — model implementation: the small ops every decoder layer runs, and GGUF's rotary layout."""

from __future__ import annotations

import torch


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Exercise 5.1: RMSNorm, optionally fused with the residual add that precedes it.

    Without ``residual``: return ``weight * x / rms(x)``.
    With ``residual``: first ``x = x + residual``; return ``(normed x, x)`` so that the sum becomes the
    next residual. Fusing the add into the norm reads and writes the hidden state once instead of twice.
    The mean of squares is taken in float32 whatever the input dtype, as Hugging Face does.
    """
    if residual is not None:
        x = x + residual
        residual = x
    dtype = x.dtype
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    out = weight * h.to(dtype)
    return out if residual is None else (out, residual)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Exercise 5.2: rotate query or key vectors by their positions' angles (rotary embedding).

    x: [tokens, heads, head_dim]; cos, sin: [tokens, head_dim // 2]. Dimension ``i`` of the first half
    pairs with dimension ``i`` of the second half (the "rotate half" layout of Hugging Face's Llama):
    each pair (a, b) becomes (a cos - b sin, b cos + a sin). cos and sin are shared by every layer of a
    step, so they are not modified.
    """
    cos = cos.unsqueeze(-2).to(x.dtype)
    sin = sin.unsqueeze(-2).to(x.dtype)
    a, b = x.chunk(2, dim=-1)
    return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)


def unpermute_qk(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Exercise 5.5: undo the row order llama.cpp gives q and k projections in GGUF files.

    llama.cpp rotates adjacent pairs of dimensions (0,1), (2,3), ...; Hugging Face rotates dimension i
    with i + head_dim/2. To use one kernel, llama.cpp's converter interleaves each head's rows: the
    GGUF row 2j holds the original row j and row 2j+1 the original row j + head_dim/2. This puts
    them back. weight: [num_heads * head_dim, hidden].
    """
    rows, cols = weight.shape
    head_dim = rows // num_heads
    return weight.reshape(num_heads, head_dim // 2, 2, cols).transpose(1, 2).reshape(rows, cols)
