"""From the qkv projection's output to the KV cache in one Triton kernel (GPU): Qwen3's per-head RMSNorm of
queries and keys, the rotary embedding, and the write of the new keys and values into their cache slots.

Unfused these are six kernels per layer (two norms, the cos/sin lookup, two rotations, the cache write), each
reading and writing the whole q or k. On an H200 the compiled rotation alone took 11.7 ms of a 50 ms prefill
step of 16,384 tokens (it reads the strided q/k views of the qkv output at ~0.6 TB/s), and the six together
~0.4 ms of a decode step at ~230 sequences. Here one program per token loads its heads once, normalises and
rotates them in registers and writes q and k back in place (views of the qkv output) and k and v to the cache.

The rounding follows the reference ops (``rms_norm``, ``apply_rotary``) in 16-bit models: the norm's result is
rounded to the model's dtype before its weight is applied and again after, cos and sin are rounded to it before
they multiply; the rest is float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from nanoinfer.fast import triton_interpreter  # noqa: F401  (a fix for Triton's CPU interpreter)
from nanoinfer.fast.pdl import launch_options


@triton.jit
def _norm_rotate(ptr, heads, num_heads, half, cos, sin, w1, w2, eps, NORM: tl.constexpr, HALF: tl.constexpr):
    """Load the heads at ``ptr`` ([heads, 2 * HALF], rows of one token), RMS-normalise each (NORM) and
    rotate each pair (i, i + HALF); return both halves in float32 and the load mask."""
    dtype = ptr.dtype.element_ty
    mask = (heads < num_heads)[:, None] & (half < HALF)[None, :]
    offsets = heads[:, None] * (2 * HALF) + half[None, :]
    a = tl.load(ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(ptr + offsets + HALF, mask=mask, other=0.0).to(tl.float32)
    if NORM:
        inv_rms = tl.rsqrt((tl.sum(a * a, axis=1) + tl.sum(b * b, axis=1)) / (2 * HALF) + eps)[:, None]
        a = (w1[None, :] * (a * inv_rms).to(dtype).to(tl.float32)).to(dtype).to(tl.float32)
        b = (w2[None, :] * (b * inv_rms).to(dtype).to(tl.float32)).to(dtype).to(tl.float32)
    return a * cos[None, :] - b * sin[None, :], b * cos[None, :] + a * sin[None, :], offsets, mask


@triton.jit
def _qk_prologue_kernel(qkv_ptr, stride_token, positions_ptr, cos_sin_ptr, stride_position, q_weight_ptr,
                        k_weight_ptr, eps, k_cache_ptr, v_cache_ptr, slot_ptr, stride_cb, stride_cs, stride_ch,
                        NUM_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HALF: tl.constexpr,
                        BLOCK_H: tl.constexpr, BLOCK_KV: tl.constexpr, BLOCK_SIZE: tl.constexpr,
                        NORM: tl.constexpr, USE_PDL: tl.constexpr):
    token = tl.program_id(0).to(tl.int64)  # token * stride_token can pass 2**31 in a long prefill
    dtype = qkv_ptr.dtype.element_ty
    half = tl.arange(0, HALF)
    position = tl.load(positions_ptr + token)
    cos = tl.load(cos_sin_ptr + position * stride_position + half).to(dtype).to(tl.float32)
    sin = tl.load(cos_sin_ptr + position * stride_position + HALF + half).to(dtype).to(tl.float32)
    qw1, qw2, kw1, kw2 = cos, cos, cos, cos  # placeholders: without NORM (Llama) no weight is loaded
    if NORM:
        qw1 = tl.load(q_weight_ptr + half).to(tl.float32)
        qw2 = tl.load(q_weight_ptr + HALF + half).to(tl.float32)
        kw1 = tl.load(k_weight_ptr + half).to(tl.float32)
        kw2 = tl.load(k_weight_ptr + HALF + half).to(tl.float32)
    slot = tl.load(slot_ptr + token)
    # The position, its cos/sin, the norm weights and the slot are step inputs and weights, not results of the
    # kernel before: with dependent launch they are requested before waiting for it (fast/pdl.py).
    if USE_PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    row = qkv_ptr + token * stride_token

    # queries: rotated in place
    q1, q2, offsets, mask = _norm_rotate(row, tl.arange(0, BLOCK_H), NUM_HEADS, half, cos, sin, qw1, qw2, eps,
                                         NORM, HALF)
    tl.store(row + offsets, q1.to(dtype), mask=mask)
    tl.store(row + offsets + HALF, q2.to(dtype), mask=mask)

    # keys: rotated in place and written to the cache, with the values beside them
    kv_heads = tl.arange(0, BLOCK_KV)
    k_row = row + NUM_HEADS * 2 * HALF
    k1, k2, offsets, mask = _norm_rotate(k_row, kv_heads, NUM_KV_HEADS, half, cos, sin, kw1, kw2, eps, NORM, HALF)
    tl.store(k_row + offsets, k1.to(dtype), mask=mask)
    tl.store(k_row + offsets + HALF, k2.to(dtype), mask=mask)
    if slot >= 0:  # padding rows of a CUDA-graph batch own no slot
        v_row = k_row + NUM_KV_HEADS * 2 * HALF
        v1 = tl.load(v_row + offsets, mask=mask)
        v2 = tl.load(v_row + offsets + HALF, mask=mask)
        base = (slot // BLOCK_SIZE) * stride_cb + (slot % BLOCK_SIZE) * stride_cs
        dst = base + kv_heads[:, None] * stride_ch + half[None, :]
        cache_dtype = k_cache_ptr.dtype.element_ty
        tl.store(k_cache_ptr + dst, k1.to(dtype).to(cache_dtype), mask=mask)
        tl.store(k_cache_ptr + dst + HALF, k2.to(dtype).to(cache_dtype), mask=mask)
        tl.store(v_cache_ptr + dst, v1.to(cache_dtype), mask=mask)
        tl.store(v_cache_ptr + dst + HALF, v2.to(cache_dtype), mask=mask)


def supported(head_dim: int) -> bool:
    """The kernel's tiles need a power-of-two half head (head_dim 64 and 128: every model here); below 32
    the tiles get too small for tl.arange's minimum and such tiny heads only occur in test models."""
    return head_dim >= 32 and head_dim & (head_dim - 1) == 0


def qk_prologue(attention, qkv: torch.Tensor, positions: torch.Tensor, meta):
    """For a LlamaAttention (or Qwen3Attention) layer: normalise and rotate q and k of ``qkv`` in place,
    store k and v in the layer's cache; return the q, k, v views ([tokens, heads, head_dim])."""
    heads, kv_heads, head_dim = attention.num_heads, attention.num_kv_heads, attention.head_dim
    assert qkv.stride(1) == 1 and qkv.shape[1] == (heads + 2 * kv_heads) * head_dim
    k_cache, v_cache = attention.attn.k_cache, attention.attn.v_cache
    assert k_cache.stride() == v_cache.stride() and k_cache.stride(-1) == 1
    table = attention.rotary_emb.cos_sin
    norm = attention.q_norm is not None
    weights = (attention.q_norm.weight, attention.k_norm.weight) if norm else (table, table)  # (never read)
    eps = attention.q_norm.eps if norm else 0.0
    pdl = launch_options(qkv.device)
    _qk_prologue_kernel[(qkv.shape[0],)](
        qkv, qkv.stride(0), positions, table, table.stride(0), *weights, eps, k_cache, v_cache, meta.slot_mapping,
        *k_cache.stride()[:3], NUM_HEADS=heads, NUM_KV_HEADS=kv_heads, HALF=head_dim // 2,
        BLOCK_H=triton.next_power_of_2(heads), BLOCK_KV=triton.next_power_of_2(kv_heads),
        BLOCK_SIZE=k_cache.shape[1], NORM=norm, USE_PDL=bool(pdl), num_warps=4, **pdl)
    return attention.split_heads(qkv)
