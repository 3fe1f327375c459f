"""x @ q.T * scale (+ bias) with int8 weights, in Triton: each tile of q is converted as it is multiplied, so the
weight crosses memory as one byte per element and no dequantized copy exists (nanoinfer/quantization.py).

Two shapes of work. A decode step of a few rows is a matrix-vector product: the time is reading the weight, so
each program reads ``BLOCK_N`` whole rows of q in ``BLOCK_K`` chunks and multiplies them with every row of x in
float32 (``_gemv``; no tensor cores: they would idle on one row). More rows use tensor cores: tiles of x and of q
(converted to x's dtype) through ``tl.dot`` (``_matmul``). The scale is applied once per output, in float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

GEMV_MAX_ROWS = 4  # up to this many rows of x: the matrix-vector kernel (each row re-reads q, from L2)


def supported(x: torch.Tensor, q: torch.Tensor) -> bool:
    return x.dtype in (torch.float32, torch.float16, torch.bfloat16) and q.is_contiguous() and q.dim() == 2


@triton.jit
def _gemv(x_ptr, q_ptr, s_ptr, b_ptr, out_ptr, N, K, stride_x, stride_out,
          HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    row = tl.program_id(1)
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + row * stride_x + k, mask=k < K, other=0.0).to(tl.float32)
        w = tl.load(q_ptr + n[:, None] * K + k[None, :], mask=(n[:, None] < N) & (k[None, :] < K), other=0)
        acc += w.to(tl.float32) * x[None, :]
    y = tl.sum(acc, axis=1) * tl.load(s_ptr + n, mask=n < N, other=0.0)
    if HAS_BIAS:
        y += tl.load(b_ptr + n, mask=n < N, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_out + n, y.to(out_ptr.dtype.element_ty), mask=n < N)


@triton.jit
def _matmul(x_ptr, q_ptr, s_ptr, b_ptr, out_ptr, M, N, K, stride_x, stride_out,
            HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(x_ptr + m[:, None] * stride_x + k[None, :], mask=(m[:, None] < M) & (k[None, :] < K), other=0.0)
        w = tl.load(q_ptr + n[None, :] * K + k[:, None], mask=(n[None, :] < N) & (k[:, None] < K), other=0)
        if IEEE:  # float32 activations: full-precision products (tensor cores would round to tf32)
            acc = tl.dot(a, w.to(a.dtype), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, w.to(a.dtype), acc)
    y = acc * tl.load(s_ptr + n, mask=n < N, other=0.0)[None, :]
    if HAS_BIAS:
        y += tl.load(b_ptr + n, mask=n < N, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + m[:, None] * stride_out + n[None, :], y.to(out_ptr.dtype.element_ty),
             mask=(m[:, None] < M) & (n[None, :] < N))


# Matrix-vector configurations (BLOCK_N, BLOCK_K, num_warps), tried on each weight shape's first product (the
# engine's warm-up, before any CUDA graph is recorded) and the fastest kept: enough programs to fill the SMs
# against few enough loop trips to hide the loads' latency depends on the shape.
GEMV_CONFIGS = ((4, 512, 4), (8, 256, 4), (8, 512, 4), (8, 1024, 8), (16, 512, 8), (32, 256, 4))
_gemv_tuned = triton.autotune([triton.Config({"BLOCK_N": n, "BLOCK_K": k}, num_warps=w) for n, k, w in GEMV_CONFIGS],
                              key=["N", "K"])(_gemv)


def matmul_config(M: int, dtype: torch.dtype) -> tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) of the tiled kernel."""
    block_m = 16 if M <= 16 else 32 if M <= 32 else 64 if M <= 64 else 128
    return block_m, (64 if M <= 64 else 128), (64 if dtype == torch.float32 else 128), (4 if block_m <= 64 else 8), 3


def gemv(x2, q, scale, bias, out, block_n: int | None = None, block_k: int | None = None, num_warps: int = 4):
    """The matrix-vector kernel, at the fastest of GEMV_CONFIGS for this shape, or at the configuration given."""
    N, K = q.shape
    args = (x2, q, scale, bias if bias is not None else scale, out, N, K, x2.stride(0), out.stride(0))
    if block_n is None and not x2.is_cuda:  # (Triton's interpreter, for tests: nothing to time)
        block_n, block_k, num_warps = GEMV_CONFIGS[2]
    if block_n is None:
        _gemv_tuned[lambda meta: (triton.cdiv(N, meta["BLOCK_N"]), x2.shape[0])](*args, HAS_BIAS=bias is not None)
    else:
        _gemv[(triton.cdiv(N, block_n), x2.shape[0])](*args, HAS_BIAS=bias is not None, BLOCK_N=block_n,
                                                        BLOCK_K=block_k, num_warps=num_warps)
    return out


def matmul(x2, q, scale, bias, out, block_m: int, block_n: int, block_k: int, num_warps: int, num_stages: int):
    (M, K), N = x2.shape, q.shape[0]
    _matmul[(triton.cdiv(M, block_m), triton.cdiv(N, block_n))](
        x2, q, scale, bias if bias is not None else scale, out, M, N, K, x2.stride(0), out.stride(0),
        HAS_BIAS=bias is not None, IEEE=x2.dtype == torch.float32, BLOCK_M=block_m, BLOCK_N=block_n,
        BLOCK_K=block_k, num_warps=num_warps, num_stages=num_stages)
    return out


def int8_matmul(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None,
                gemv_max_rows: int = GEMV_MAX_ROWS) -> torch.Tensor:
    """x [..., K] (float32/16, bfloat16) times q [N, K] int8, each output column times scale [N] (float32)."""
    N, K = q.shape
    x2 = x.reshape(-1, K)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    M = x2.shape[0]
    out = torch.empty(M, N, dtype=x.dtype, device=x.device)
    if M <= gemv_max_rows:
        gemv(x2, q, scale, bias, out)
    else:
        matmul(x2, q, scale, bias, out, *matmul_config(M, x.dtype))
    return out.reshape(*x.shape[:-1], N)
