"""x @ q.T * scale (+ bias) with int8 weights on the CPU, as a C loop (int8_matmul_cpu.c), for decode-sized
batches: the weights read as int8 (a quarter of float32's bytes), converted in cache a block at a time.

torch has a CPU kernel for this, ``torch._weight_int8pack_mm``, but it handles one row of x at a time and, on
this project's 2-core Xeon, was slower than float32's F.linear even for one row; this loop was faster than
F.linear from 1 to 16 rows, and than converting the weight per call up to ~32 (one thread, a busy machine:
scripts/int8_bench.py --kernels lists all three). Above ``MAX_ROWS`` rows (prefill) the GEMM library's
float32 speed wins, and nanoinfer/quantization.py converts the layer's weight for the call instead.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import torch

from nanoinfer.fast.cpu_build import build_and_load, float32_cpu

SOURCE = Path(__file__).with_name("int8_matmul_cpu.c")
MAX_ROWS = 32  # above this many rows of x, converting the weight per call for the float32 GEMM is faster
_P, _L = ctypes.c_void_p, ctypes.c_long


@lru_cache(maxsize=1)
def load_int8_kernel() -> ctypes.CDLL | None:
    lib = build_and_load(SOURCE, "the CPU int8 matmul kernel")
    if lib is not None:
        lib.int8_linear.argtypes, lib.int8_linear.restype = [_P, _L, _P, _P, _P, _P, _L, _L, _L], None
    return lib


def supported(x: torch.Tensor, q: torch.Tensor) -> bool:
    rows = x.numel() // max(x.shape[-1], 1)
    return (1 <= rows <= MAX_ROWS and float32_cpu(x) and q.device.type == "cpu" and q.dtype == torch.int8
            and q.is_contiguous() and load_int8_kernel() is not None)


def int8_matmul_cpu(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None):
    """x [..., K] float32 times q [N, K] int8, each output column times scale [N] float32, plus bias."""
    N, K = q.shape
    x2 = x.reshape(-1, K)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    scale = scale.contiguous()
    bias = None if bias is None else bias.float().contiguous()
    out = torch.empty(x2.shape[0], N, dtype=torch.float32)
    load_int8_kernel().int8_linear(x2.data_ptr(), x2.stride(0), q.data_ptr(), scale.data_ptr(),
                                   None if bias is None else bias.data_ptr(), out.data_ptr(), x2.shape[0], N, K)
    return out.reshape(*x.shape[:-1], N)
