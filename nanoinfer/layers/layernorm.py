"""RMSNorm, fused with the residual add before it."""

from __future__ import annotations

import torch
from torch import nn

from nanoinfer.workbook.registry import learner_code


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float,
             residual: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``weight * x / rms(x)``, the mean of squares in float32 as Hugging Face takes it (Exercise 5.1).
    With ``residual``: normalise ``x + residual`` and return the sum too, as the next residual; fused, the
    hidden state is read and written once instead of twice."""
    if residual is not None:
        x = residual = x + residual
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    out = weight * h.to(x.dtype)
    return out if residual is None else (out, residual)


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.op = learner_code("5.1", rms_norm)  # (nanoinfer/fast may swap in a fused kernel for the reference)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        """``norm(x)``, or with ``residual``: ``(norm(x + residual), x + residual)``."""
        return self.op(x, self.weight, self.eps, residual)
