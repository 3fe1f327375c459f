"""Linear layers of decode steps with few rows (x [M <= 8, K] times W [N, K]), in Triton.

At batch 1 a decode step of qwen3-0.6b is 112 small matrix products, and their time is reading the weights:
cuBLAS picks tensor-core tiles for them and streamed ~1.0-1.2 TB/s of the H200's ~4 TB/s in a profile of that
step. Here every program reads ``BLOCK_N`` whole rows of W once, in ``BLOCK_K`` chunks, and multiplies them with
all M rows of x in float32 on the CUDA cores: many programs in flight, each a plain stream of loads.

``gated=True`` is the MLP's gate/up projection with its activation in one kernel: W holds the gate rows, then
the up rows (``MergedColumnParallelLinear``), and the program that owns output column j reads gate row j and up
row j and writes silu(gate) * up, so the [M, 2N] product never goes to memory.

``norm=`` computes an RMSNorm (with the residual add before it) inside the matmul that follows it: each program
normalises the few rows of x itself, from the L2 cache, and program 0 writes the next residual. ``decode_layer``
runs a whole decoder layer that way at batch 1: the two norms cost no kernel of their own (0.66 against 0.76 ms
per batch-1 graph replay, h200_skinny_sweep.json).

With programmatic dependent launch (``pdl.py``) a program requests its first chunk of W before it waits for the
kernel before to finish: the weights stream while that kernel's last programs run (0.66 against 0.85 ms).

Tested against a float32 torch reference (tests/test_skinny_linear_triton.py); applied by ``nanoinfer/fast``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from nanoinfer.fast import tile_linear_triton as tile
from nanoinfer.fast.pdl import launch_options

# One row: a batch-1 decode step (an H200 replays qwen3-0.6b's batch-1 graph in 0.66 ms instead of 1.17 with cuBLAS,
# h200_skinny_sweep.json). At 8 rows an earlier version of this kernel took 5.4 ms against cuBLAS's 1.3: more rows go
# to cuBLAS until a kernel that shares each weight tile between the rows beats it.
MAX_ROWS = 1
KERNEL_MAX_ROWS = 8  # what the kernel takes: [rows, BLOCK_N, BLOCK_K] products in registers


@triton.jit
def _row_chunk(x_ptr, r_ptr, m, k, mask, stride_x, stride_r, HAS_RESIDUAL: tl.constexpr):
    """x[m, k] in float32, plus the residual rounded as the model's dtype rounds x + residual."""
    x = tl.load(x_ptr + m[:, None] * stride_x + k[None, :], mask=mask, other=0.0)
    if HAS_RESIDUAL:
        x = (x.to(tl.float32) + tl.load(r_ptr + m[:, None] * stride_r + k[None, :], mask=mask, other=0.0)
             .to(tl.float32)).to(x.dtype)
    return x.to(tl.float32)


@triton.jit
def _weight_chunk(w_ptr, n, k, n_mask, N, K, GATED: tl.constexpr):
    """Rows n of W, columns k, and (gated) the up rows N below them; float32 products need them widened later."""
    mask = n_mask[:, None] & (k < K)[None, :]
    w = tl.load(w_ptr + n[:, None] * K + k[None, :], mask=mask, other=0.0)
    w_up = w
    if GATED:  # the up row of output j sits N rows below its gate row
        w_up = tl.load(w_ptr + (n[:, None] + N) * K + k[None, :], mask=mask, other=0.0)
    return w, w_up


@triton.jit
def _x_chunk(x_ptr, r_ptr, norm_w_ptr, inv_rms, m, k, m_mask, K, stride_x, stride_r, dtype, NORM: tl.constexpr,
             HAS_RESIDUAL: tl.constexpr):
    """Columns k of x as [M, 1, BLOCK_K] float32, normalised first with ``NORM``."""
    k_mask = k < K
    x = _row_chunk(x_ptr, r_ptr, m, k, m_mask[:, None] & k_mask[None, :], stride_x, stride_r, HAS_RESIDUAL and NORM)
    if NORM:  # layers/layernorm.py's rms_norm, rounded where it rounds: weight * (x / rms).to(dtype)
        x = (x * inv_rms[:, None]).to(dtype).to(tl.float32)
        x = (tl.load(norm_w_ptr + k, mask=k_mask, other=0.0).to(tl.float32)[None, :] * x).to(dtype).to(tl.float32)
    return x[:, None, :]


@triton.jit
def _skinny_kernel(x_ptr, w_ptr, b_ptr, out_ptr, r_ptr, r_out_ptr, norm_w_ptr, eps, M, N, K, stride_x, stride_r,
                   stride_out, GATED: tl.constexpr, HAS_BIAS: tl.constexpr, NORM: tl.constexpr,
                   HAS_RESIDUAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                   USE_PDL: tl.constexpr):
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.arange(0, BLOCK_M)
    n_mask, m_mask = n < N, m < M
    dtype = out_ptr.dtype.element_ty
    # The weights do not depend on the kernel before: the first chunk is requested before waiting for it (pdl.py)
    k = tl.arange(0, BLOCK_K)
    w, w_up = _weight_chunk(w_ptr, n, k, n_mask, N, K, GATED)
    if USE_PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    inv_rms = tl.zeros((BLOCK_M,), dtype=tl.float32)
    if NORM:  # every program needs the rows' mean square first: x is tiny and read again from the L2 cache
        squares = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            mask = m_mask[:, None] & (k < K)[None, :]
            x = _row_chunk(x_ptr, r_ptr, m, k, mask, stride_x, stride_r, HAS_RESIDUAL)
            squares += tl.sum(x * x, axis=1)
            if HAS_RESIDUAL:
                if tl.program_id(0) == 0:  # the next residual, x + residual, written once
                    tl.store(r_out_ptr + m[:, None] * K + k[None, :], x.to(dtype), mask=mask)
        inv_rms = 1.0 / tl.sqrt(squares / K + eps)
    k = tl.arange(0, BLOCK_K)
    x = _x_chunk(x_ptr, r_ptr, norm_w_ptr, inv_rms, m, k, m_mask, K, stride_x, stride_r, dtype, NORM, HAS_RESIDUAL)
    acc = tl.sum(x * w.to(tl.float32)[None, :, :], axis=2)
    acc_up = acc
    if GATED:
        acc_up = tl.sum(x * w_up.to(tl.float32)[None, :, :], axis=2)
    for k0 in range(BLOCK_K, K, BLOCK_K):  # the remaining chunks (none where one chunk holds K)
        k = k0 + tl.arange(0, BLOCK_K)
        w, w_up = _weight_chunk(w_ptr, n, k, n_mask, N, K, GATED)
        x = _x_chunk(x_ptr, r_ptr, norm_w_ptr, inv_rms, m, k, m_mask, K, stride_x, stride_r, dtype, NORM,
                     HAS_RESIDUAL)
        acc += tl.sum(x * w.to(tl.float32)[None, :, :], axis=2)
        if GATED:
            acc_up += tl.sum(x * w_up.to(tl.float32)[None, :, :], axis=2)
    if HAS_BIAS:
        acc += tl.load(b_ptr + n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
        if GATED:
            acc_up += tl.load(b_ptr + N + n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    if GATED:  # silu(gate) * up, as layers/activation.py's silu_and_mul
        acc = acc / (1.0 + tl.exp(-acc)) * acc_up
    tl.store(out_ptr + m[:, None] * stride_out + n[None, :], acc.to(dtype), mask=m_mask[:, None] & n_mask[None, :])


def block_config(M: int, N: int, K: int, gated: bool = False) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_K, num_warps). For one row: each program loads 4 whole rows of W at once (K up to 4,096),
    so that every load is in flight together and N / 4 programs (256 and more here) keep the card streaming.
    On an H200, qwen3-0.6b's batch-1 graph replayed in 0.66 ms this way, against 0.68-0.81 with 9 other
    configurations (0.75 with 2 rows) and 1.17 with cuBLAS (scripts/skinny_sweep.py, h200_skinny_sweep.json). More rows:
    shorter chunks, so that the [M, BLOCK_N, BLOCK_K] product stays within the registers."""
    if M == 1:  # (fewer rows where the tile, the up rows included, would pass 16,384 weights: registers spill)
        block_k = min(triton.next_power_of_2(K), 4096)
        return max(1, min(4, 16384 // (block_k * (2 if gated else 1)))), block_k, 4
    return 4, 512 if M <= 2 else 256 if M <= 4 else 128, 4


def supported(weight: torch.Tensor) -> bool:
    """Whether a layer's weight can go through the kernel (its inputs share its dtype in the model)."""
    return weight.dtype in (torch.float16, torch.bfloat16, torch.float32) and weight.is_contiguous()


def skinny_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, gated: bool = False,
                  norm=None, residual: torch.Tensor | None = None, config: tuple[int, int, int] | None = None):
    """``F.linear(x, weight, bias)`` for at most KERNEL_MAX_ROWS rows of x; ``gated``: silu(gate) * up of that product,
    [..., N / 2]. ``norm`` (an RMSNorm): the product of ``norm(x, residual)`` instead, returned with the next
    residual as the norm returns it. ``config`` = (BLOCK_N, BLOCK_K, num_warps) overrides ``block_config``."""
    K = x.shape[-1]
    x2 = x.reshape(-1, K)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    M, N = x2.shape[0], weight.shape[0] // (2 if gated else 1)
    if M > KERNEL_MAX_ROWS:
        raise ValueError(f"skinny_linear takes at most {KERNEL_MAX_ROWS} rows, got {M}")
    out = torch.empty(M, N, dtype=x.dtype, device=x.device)
    r2 = residual.reshape(-1, K) if residual is not None else x2
    r_out = torch.empty_like(x2) if residual is not None and norm is not None else x2  # (the next residual)
    block_n, block_k, num_warps = config or block_config(M, N, K, gated)
    pdl = launch_options(x.device)
    _skinny_kernel[(triton.cdiv(N, block_n),)](
        x2, weight, bias if bias is not None else weight, out, r2, r_out, norm.weight if norm else weight,
        norm.eps if norm else 0.0, M, N, K, x2.stride(0), r2.stride(0), out.stride(0), GATED=gated,
        HAS_BIAS=bias is not None, NORM=norm is not None, HAS_RESIDUAL=residual is not None,
        BLOCK_M=triton.next_power_of_2(M), BLOCK_N=block_n, BLOCK_K=block_k, USE_PDL=bool(pdl),
        num_warps=num_warps, **pdl)
    out = out.reshape(*x.shape[:-1], N)
    if norm is None:
        return out
    return out, (r_out.reshape(x.shape) if residual is not None else x)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """A linear layer's ``op``: the skinny kernel for up to MAX_ROWS rows, the tile kernel where it serves
    (tile_linear_triton.py), cuBLAS (``F.linear``) beyond."""
    rows = x.numel() // x.shape[-1]
    if rows <= MAX_ROWS:
        return skinny_linear(x, weight, bias)
    if tile.serves(rows, weight):
        return tile.tile_linear(x, weight, bias)
    return F.linear(x, weight, bias)


def gate_up_silu(mlp, x: torch.Tensor) -> torch.Tensor:
    """``LlamaMLP.fused_gate_up_act``: silu(gate) * up in one kernel for up to MAX_ROWS rows, and where the tile
    kernel serves; beyond, the layers as written (cuBLAS, then SiLU-and-mul)."""
    rows, weight, bias = x.numel() // x.shape[-1], mlp.gate_up_proj.weight, mlp.gate_up_proj.bias
    if rows <= MAX_ROWS:
        return skinny_linear(x, weight, bias, gated=True)
    if tile.serves(rows, weight):
        return tile.tile_linear(x, weight, bias, gated=True)
    return mlp.act_fn(mlp.gate_up_proj(x))


def decode_layer(layer, positions: torch.Tensor, hidden: torch.Tensor, residual: torch.Tensor | None, meta):
    """``LlamaDecoderLayer.fused_decode``: the layer for a step of at most MAX_ROWS rows, each RMSNorm computed
    inside the matmul after it (two kernels fewer per layer), the gate/up product fused with SiLU."""
    attn, mlp = layer.self_attn, layer.mlp
    qkv, residual = skinny_linear(hidden, attn.qkv_proj.weight, attn.qkv_proj.bias, norm=layer.input_layernorm,
                                  residual=residual)
    hidden = attn.attend(positions, qkv, meta)
    gated, residual = skinny_linear(hidden, mlp.gate_up_proj.weight, mlp.gate_up_proj.bias, gated=True,
                                    norm=layer.post_attention_layernorm, residual=residual)
    return mlp.down_proj(gated), residual
