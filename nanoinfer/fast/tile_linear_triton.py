"""Linear layers of decode steps with a few rows (x [M, K] times W [N, K], M = 2-16) on the tensor cores, in Triton.

Between batch 1 (fast/skinny_linear_triton.py) and larger batches, a decode step's matmuls are small: at 16 rows
qwen3-0.6b's gate/up product reads 12.6 MB of weights and computes little, and cuBLAS (then the SiLU-and-mul
kernel) took 7.5 us per layer for what the card reads in ~3. Here each program owns a [BLOCK_M, BLOCK_N] tile of the
output and walks K on the tensor cores (``tl.dot``), as any tiled matmul does, with two things cuBLAS's kernels
cannot do inside the engine's graphs:

- programmatic dependent launch (``pdl.py``): each program requests its first weight tile before it waits for the
  kernel before, so the weights start streaming during that kernel's tail;
- ``gated=True``: the MLP's gate/up product with its activation, silu(gate) * up, written as [M, N / 2]; the
  [M, N] product never goes to memory and the SiLU-and-mul kernel is not launched.

Rounding as the reference layers round: each product in float32, rounded to the model's dtype; gated, silu(gate)
rounded before it multiplies up (layers/activation.py). Tested against a float32 torch reference
(tests/test_tile_linear_triton.py); applied by ``nanoinfer/fast`` (through skinny_linear_triton.py's ``linear``
and ``gate_up_silu``) to steps of MIN_ROWS to MAX_ROWS rows and weights of at most MAX_K columns.

Where it serves is set by whole decode steps, not by the kernel alone. Called 28 times in a row in a graph
(scripts/tile_linear_bench.py, h200_tile_linear.json), with the best block configuration of a grid for each row
count, it beat cuBLAS up to 64 rows on qwen3-0.6b's gate/up, qkv and o shapes, and lost on the down product's 3,072
columns and on gate/up and qkv from 136 rows. Inside the engine's decode steps on an H200 (h200_tile_linear_decode.json)
it made steps of 4 sequences ~10% faster, steps of 16 about as fast (within the spread of runs), and steps of 24-48
sequences 1.4-5% slower: there it serves no more.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from nanoinfer.fast import triton_interpreter  # noqa: F401  (a fix for Triton's CPU interpreter)
from nanoinfer.fast.pdl import launch_options

MIN_ROWS, MAX_ROWS = 2, 16  # the steps it serves (one row: the skinny kernel; more: cuBLAS)
MAX_K = 2048  # longer rows of W go to cuBLAS
MAX_WEIGHT = 2**31  # elements of W: the kernel's offsets into the up rows (N * K) are 32-bit


@triton.jit
def _tile_kernel(x_ptr, w_ptr, b_ptr, out_ptr, M, N, K, stride_x, stride_out, GATED: tl.constexpr,
                 HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 USE_PDL: tl.constexpr):
    # Rows of x vary fastest across programs: the programs that share a weight tile run together, and the tiles
    # after the first come from the L2 cache.
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    k = tl.arange(0, BLOCK_K)
    m_mask, n_mask = m < M, n < N
    w_rows = w_ptr + n[:, None].to(tl.int64) * K
    # The first weight tile does not depend on the kernel before: requested before waiting for it (pdl.py)
    w = tl.load(w_rows + k[None, :], mask=n_mask[:, None] & (k < K)[None, :], other=0.0)
    w_up = w
    if GATED:  # the up row of output j sits N rows below its gate row
        w_up = tl.load(w_rows + N * K + k[None, :], mask=n_mask[:, None] & (k < K)[None, :], other=0.0)
    if USE_PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    x_rows = x_ptr + m[:, None] * stride_x
    x = tl.load(x_rows + k[None, :], mask=m_mask[:, None] & (k < K)[None, :], other=0.0)
    acc = tl.dot(x, tl.trans(w))
    acc_up = acc
    if GATED:
        acc_up = tl.dot(x, tl.trans(w_up))
    for k0 in range(BLOCK_K, K, BLOCK_K):
        kk = k0 + k
        w_mask = n_mask[:, None] & (kk < K)[None, :]
        x = tl.load(x_rows + kk[None, :], mask=m_mask[:, None] & (kk < K)[None, :], other=0.0)
        acc = tl.dot(x, tl.trans(tl.load(w_rows + kk[None, :], mask=w_mask, other=0.0)), acc)
        if GATED:
            acc_up = tl.dot(x, tl.trans(tl.load(w_rows + N * K + kk[None, :], mask=w_mask, other=0.0)), acc_up)
    dtype = out_ptr.dtype.element_ty
    if HAS_BIAS:
        acc += tl.load(b_ptr + n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
        if GATED:
            acc_up += tl.load(b_ptr + N + n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    out = acc.to(dtype)
    if GATED:  # the reference's steps: the product rounded, silu(gate) rounded, then times up
        gate = out.to(tl.float32)
        out = ((gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32) * acc_up.to(dtype).to(tl.float32)).to(dtype)
    tl.store(out_ptr + m[:, None] * stride_out + n[None, :], out, mask=m_mask[:, None] & n_mask[None, :])


def block_config(M: int, N: int, K: int, gated: bool = False) -> tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) for M rows: 32 output columns per program (the most
    programs in flight), K in chunks of 128, 4 stages in flight: the fastest up to 16 rows for each of
    qwen3-0.6b's shapes in the H200 sweep (h200_tile_linear.json)."""
    return 16 if M <= 16 else 32 if M <= 32 else 64, 32, 128, 4, 4


def serves(rows: int, weight: torch.Tensor) -> bool:
    """Whether a product of ``rows`` rows with ``weight`` goes to this kernel."""
    return MIN_ROWS <= rows <= MAX_ROWS and weight.shape[1] <= MAX_K and supported(weight)


def supported(weight: torch.Tensor) -> bool:
    """Whether a layer's weight can go through the kernel: 16-bit (``tl.dot`` would take float32 as TF32),
    contiguous, fewer than MAX_WEIGHT elements."""
    return weight.dtype in (torch.float16, torch.bfloat16) and weight.is_contiguous() and weight.numel() < MAX_WEIGHT


def tile_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, gated: bool = False,
                config: tuple[int, int, int, int, int] | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``; ``gated``: silu(gate) * up of that product, [..., N / 2].
    ``config`` = (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) overrides ``block_config``."""
    K = x.shape[-1]
    x2 = x.reshape(-1, K)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    M, N = x2.shape[0], weight.shape[0] // (2 if gated else 1)
    if weight.shape[1] != K or not weight.is_contiguous() or weight.numel() >= MAX_WEIGHT:
        raise ValueError(f"tile_linear needs a contiguous weight of {K} columns and fewer than 2**31 elements, "
                         f"got {tuple(weight.shape)}")
    if gated and weight.shape[0] % 2:
        raise ValueError(f"gated: the weight holds the gate rows, then as many up rows; got {weight.shape[0]} rows")
    out = torch.empty(M, N, dtype=x.dtype, device=x.device)
    if M:
        block_m, block_n, block_k, num_warps, num_stages = config or block_config(M, N, K, gated)
        pdl = launch_options(x.device)
        _tile_kernel[(triton.cdiv(M, block_m), triton.cdiv(N, block_n))](
            x2, weight, bias if bias is not None else weight, out, M, N, K, x2.stride(0), out.stride(0),
            GATED=gated, HAS_BIAS=bias is not None, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
            USE_PDL=bool(pdl), num_warps=num_warps, num_stages=num_stages, **pdl)
    return out.reshape(*x.shape[:-1], N)
