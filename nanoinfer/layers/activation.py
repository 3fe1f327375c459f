"""Gated MLP activations: the gate and up projections come out of one matmul, side by side, and the
activated gate multiplies up. SwiGLU (Llama, Qwen3) activates with SiLU; GeGLU (Gemma) with GELU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate).mul_(up)  # in place: one temporary fewer


class SiluAndMul(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.op = silu_and_mul  # (nanoinfer/fast may swap in a fused kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def gelu_tanh_and_mul(x: torch.Tensor) -> torch.Tensor:
    gate, up = x.chunk(2, dim=-1)
    return F.gelu(gate, approximate="tanh").mul_(up)  # (Gemma's "gelu_pytorch_tanh")


class GeluTanhAndMul(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu_tanh_and_mul(x)
