"""The Triton kernel that writes each new token's keys and values into its KV-cache slot (GPU; on a CPU
it runs in Triton's interpreter). Padding rows of a CUDA-graph batch have slot -1 and are skipped, which
``index_copy_`` cannot do inside a graph: the triton and flash_attn backends store through it."""

from __future__ import annotations

import triton
import triton.language as tl

from nanoinfer.fast import triton_interpreter  # noqa: F401  (a fix for Triton's CPU interpreter)


@triton.jit
def _store_kv_kernel(k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, slot_ptr, stride_kt, stride_kh, stride_vt, stride_vh,
                     stride_cb, stride_cs, stride_ch, head_dim, BLOCK_SIZE: tl.constexpr, BLOCK_D: tl.constexpr):
    token = tl.program_id(0)
    head = tl.program_id(1)
    slot = tl.load(slot_ptr + token)
    if slot < 0:  # a padding row of a CUDA-graph batch owns no slot
        return
    d = tl.arange(0, BLOCK_D)
    mask = d < head_dim
    dst = (slot // BLOCK_SIZE) * stride_cb + (slot % BLOCK_SIZE) * stride_cs + head * stride_ch + d
    k = tl.load(k_ptr + token * stride_kt + head * stride_kh + d, mask=mask)
    v = tl.load(v_ptr + token * stride_vt + head * stride_vh + d, mask=mask)
    tl.store(k_cache_ptr + dst, k.to(k_cache_ptr.dtype.element_ty), mask=mask)
    tl.store(v_cache_ptr + dst, v.to(v_cache_ptr.dtype.element_ty), mask=mask)


def store_kv_cache(k, v, k_cache, v_cache, slot_mapping) -> None:
    """Write k, v ([tokens, kv_heads, head_dim]) into the paged caches at ``slot_mapping`` (-1: skip)."""
    assert k_cache.stride() == v_cache.stride() and k_cache.stride(-1) == k.stride(-1) == v.stride(-1) == 1
    tokens, kv_heads, head_dim = k.shape
    _store_kv_kernel[(tokens, kv_heads)](
        k, v, k_cache, v_cache, slot_mapping, k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        *k_cache.stride()[:3], head_dim, BLOCK_SIZE=k_cache.shape[1], BLOCK_D=triton.next_power_of_2(head_dim))
