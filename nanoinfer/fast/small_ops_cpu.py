"""RMSNorm, rotary and SiLU-and-multiply as C loops on the CPU (small_ops_cpu.c).

What ``torch.compile`` does for these ops on a GPU, done by hand for the CPU, where compiling them did not pay
(its guards and wrapper cost more per call than the fused loop saves). Each function here has the signature of
the torch version it replaces (``C_OPS``, swapped in by nanoinfer/fast) and falls back to it for anything the C
loop does not cover (another dtype, a layout it does not expect).
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import torch

from nanoinfer.fast.cpu_build import build_and_load, float32_cpu
from nanoinfer.layers import activation, layernorm, rotary_embedding

SOURCE = Path(__file__).with_name("small_ops_cpu.c")
_P, _L, _I, _F = ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_float


@lru_cache(maxsize=1)
def load_small_ops() -> ctypes.CDLL | None:
    lib = build_and_load(SOURCE, "the CPU small-op kernels")
    if lib is not None:
        for name, argtypes in (("rms_norm", [_P, _L, _L] + [_P] * 4 + [_L, _I, _F]),
                               ("rotary", [_P, _L, _P, _P, _L, _P, _L, _I, _I]),
                               ("silu_and_mul", [_P, _P, _L, _I])):
            getattr(lib, name).argtypes, getattr(lib, name).restype = argtypes, None
    return lib


def _row_groups(x: torch.Tensor) -> tuple[int, int] | None:
    """(group_rows, group_stride) for the C loop: one group of all rows for a contiguous x, one per token for a
    [tokens, heads, dim] view with adjacent heads (Qwen3's q and k in the qkv output); None for other layouts."""
    if x.is_contiguous():
        return max(x.numel() // max(x.shape[-1], 1), 1), 0
    if x.dim() == 3 and x.stride(2) == 1 and x.stride(1) == x.shape[2]:
        return x.shape[1], x.stride(0)
    return None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None):
    """``layers/layernorm.py``'s ``rms_norm`` (same arguments and results), in one pass per row."""
    lib = load_small_ops()
    inputs = (x, weight) if residual is None else (x, weight, residual)
    groups = _row_groups(x) if residual is None or x.is_contiguous() else None  # with a residual: contiguous
    if (lib is None or groups is None or not float32_cpu(*inputs) or not weight.is_contiguous()
            or weight.shape != x.shape[-1:] or (residual is not None and (residual.shape != x.shape
                                                                         or not residual.is_contiguous()))):
        return layernorm.rms_norm(x, weight, eps, residual)
    out = torch.empty(x.shape, dtype=x.dtype)
    total = torch.empty_like(out) if residual is not None else None
    lib.rms_norm(x.data_ptr(), *groups, None if residual is None else residual.data_ptr(), weight.data_ptr(),
                 out.data_ptr(), None if total is None else total.data_ptr(), x.numel() // max(x.shape[-1], 1),
                 x.shape[-1], eps)
    return out if residual is None else (out, total)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``layers/rotary_embedding.py``'s ``apply_rotary``: x [tokens, heads, head_dim] (rows may be strided, as the
    q and k views of the fused qkv output are); cos, sin [tokens, head_dim // 2]. Returns a contiguous tensor."""
    lib = load_small_ops()
    tokens, heads, head_dim = x.shape if x.dim() == 3 else (None, None, None)
    if (lib is None or not float32_cpu(x, cos, sin) or tokens is None or head_dim % 2
            or x.stride(2) != 1 or x.stride(1) != head_dim
            or cos.shape != (tokens, head_dim // 2) or sin.shape != cos.shape
            or cos.stride(1) != 1 or sin.stride() != cos.stride()):
        return rotary_embedding.apply_rotary(x, cos, sin)
    out = torch.empty(x.shape, dtype=x.dtype)
    lib.rotary(x.data_ptr(), x.stride(0), cos.data_ptr(), sin.data_ptr(), cos.stride(0), out.data_ptr(),
               tokens, heads, head_dim)
    return out


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` for x = [gate | up] along the last dimension."""
    lib = load_small_ops()
    if lib is None or not float32_cpu(x) or not x.is_contiguous() or x.shape[-1] % 2:
        return activation.silu_and_mul(x)
    n = x.shape[-1] // 2
    out = x.new_empty(*x.shape[:-1], n)
    lib.silu_and_mul(x.data_ptr(), out.data_ptr(), x.numel() // max(2 * n, 1), n)
    return out

# the reference ops (nanoinfer/layers) and their C versions
C_OPS = {layernorm.rms_norm: rms_norm, rotary_embedding.apply_rotary: apply_rotary,
         activation.silu_and_mul: silu_and_mul}
