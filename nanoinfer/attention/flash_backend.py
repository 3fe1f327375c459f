"""Attention through the flash-attn package (GPU only): a thin wrapper on its two documented entry points.

  decode   ``flash_attn_with_kvcache``: one query per sequence against its paged cache
           (``cache_seqlens`` and ``block_table``).
  prefill  ``flash_attn_varlen_func`` over the packed queries. With no cached prefix the keys are this
           step's own; otherwise they are read from the paged cache through ``block_table``, and the causal
           mask, aligned to the bottom right, puts query i at position seq_len - q_len + i as we do.
flash-attn's paged kernels need blocks of a multiple of 256 tokens (``kvcache_block_size``), and
16-bit inputs (EngineConfig checks the block size). Keys and values go into the cache through the Triton
store kernel, which skips the padding rows of CUDA-graph batches.
"""

from __future__ import annotations

import torch
from flash_attn import flash_attn_varlen_func, flash_attn_with_kvcache

from nanoinfer.attention.base import AttentionBackend, AttentionMetadata
from nanoinfer.attention.store_triton import store_kv_cache


class FlashAttentionBackend(AttentionBackend):
    name = "flash_attn"
    supports_cuda_graphs = True  # decode reads lengths and tables from device tensors

    def store_kv(self, k, v, k_cache, v_cache, meta: AttentionMetadata) -> None:
        store_kv_cache(k, v, k_cache, v_cache, meta.slot_mapping)

    def decode(self, q, k_cache, v_cache, meta: AttentionMetadata, scale: float) -> torch.Tensor:
        out = flash_attn_with_kvcache(q.unsqueeze(1), k_cache, v_cache, cache_seqlens=meta.seq_lens,
                                      block_table=meta.block_tables, softmax_scale=scale, causal=True)
        return out.squeeze(1)

    def prefill(self, q, k, v, k_cache, v_cache, meta: AttentionMetadata, scale: float) -> torch.Tensor:
        cu_q, max_q = meta.query_start_loc, meta.max_query_len
        if meta.no_prefix:
            return flash_attn_varlen_func(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_q, max_seqlen_q=max_q,
                                          max_seqlen_k=max_q, softmax_scale=scale, causal=True)
        # Cumulative context lengths, computed once per step and shared by every layer.
        cu_k = meta.scratch.get("flash_cu_seqlens_k")
        if cu_k is None:
            cu_k = meta.scratch["flash_cu_seqlens_k"] = torch.nn.functional.pad(
                meta.seq_lens.cumsum(0, dtype=torch.int32), (1, 0))
        return flash_attn_varlen_func(q, k_cache, v_cache, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
                                      max_seqlen_q=max_q, max_seqlen_k=meta.max_seq_len, softmax_scale=scale,
                                      causal=True, block_table=meta.block_tables)
