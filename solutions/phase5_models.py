"""Phase 5 — model implementation: the small ops every decoder layer runs, a new model family, a fused op, and
GGUF's rotary layout.

5.1, 5.2, 5.3 and 5.5 run inside the engine: their reference is the engine's own code (nanoinfer/workbook/
registry.py names the hooks). 5.4 is an op the engine has no use for (its models have no biased GELU): written
out here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nanoinfer.layers.layernorm import rms_norm  # noqa: F401  Exercise 5.1
from nanoinfer.layers.rotary_embedding import apply_rotary  # noqa: F401  Exercise 5.2
from nanoinfer.models.gemma import GemmaForCausalLM  # noqa: F401  Exercise 5.3
from nanoinfer.tools.convert import unpermute_qk  # noqa: F401  Exercise 5.5


def _bias_gelu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.gelu(x + bias, approximate="tanh")


_compiled_bias_gelu = torch.compile(_bias_gelu, dynamic=True)  # compiled at its first call, then reused


def fused_bias_gelu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return _compiled_bias_gelu(x, bias)


def bias_gelu_bytes(rows: int, width: int, dtype_bytes: int, fused: bool) -> int:
    n = rows * width
    # Fused: read x and bias, write the output. Unfused adds a write and a read of the sum in between.
    return (2 * n + width + (0 if fused else 2 * n)) * dtype_bytes
