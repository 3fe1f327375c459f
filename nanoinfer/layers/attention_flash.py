"""Attention through the flash-attn package (GPU only): a thin wrapper on its two documented entry points.

  decode   ``flash_attn_with_kvcache``: one query per sequence against its paged cache
           (``cache_seqlens`` and ``block_table``).
  prefill  ``flash_attn_varlen_func`` over the packed queries. With no cached prefix the keys are this
           step's own; otherwise they are read from the paged cache through ``block_table``, and the causal
           mask, aligned to the bottom right, puts query i at position seq_len - q_len + i as we do.
flash-attn's paged kernels need blocks of a multiple of 256 tokens (``kvcache_block_size``), and
16-bit inputs. Keys and values are written into the cache by the Triton store kernel.
"""

from __future__ import annotations

import torch

from nanoinfer.layers.attention import AttentionMetadata


def check_block_size(block_size: int) -> None:
    if block_size % 256:
        raise ValueError(f"attention_backend='flash_attn' reads the paged KV cache in blocks of a multiple of "
                         f"256 tokens: set kvcache_block_size=256 (got {block_size})")


class FlashAttentionBackend:
    name = "flash_attn"
    supports_cuda_graphs = True  # decode reads lengths and tables from device tensors

    def __init__(self, block_size: int | None = None) -> None:
        if block_size is not None:
            check_block_size(block_size)
        from flash_attn import flash_attn_varlen_func, flash_attn_with_kvcache

        self.varlen = flash_attn_varlen_func
        self.with_kvcache = flash_attn_with_kvcache

    def store_kv(self, k, v, k_cache, v_cache, meta: AttentionMetadata) -> None:
        from nanoinfer.layers.attention_triton import store_kv_cache

        store_kv_cache(k, v, k_cache, v_cache, meta.slot_mapping)

    def forward(self, q, k, v, k_cache, v_cache, meta: AttentionMetadata, scale: float) -> torch.Tensor:
        check_block_size(meta.block_size)
        if meta.is_decode:
            out = self.with_kvcache(q.unsqueeze(1), k_cache, v_cache, cache_seqlens=meta.seq_lens,
                                    block_table=meta.block_tables, softmax_scale=scale, causal=True)
            return out.squeeze(1)
        cu_q, max_q = meta.query_start_loc, meta.max_query_len
        if meta.no_prefix:
            return self.varlen(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_q, max_seqlen_q=max_q,
                               max_seqlen_k=max_q, softmax_scale=scale, causal=True)
        # Cumulative context lengths, computed once per step and shared by every layer.
        cu_k = meta.scratch.get("flash_cu_seqlens_k")
        if cu_k is None:
            cu_k = meta.scratch["flash_cu_seqlens_k"] = torch.nn.functional.pad(
                meta.seq_lens.cumsum(0, dtype=torch.int32), (1, 0))
        return self.varlen(q, k_cache, v_cache, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=max_q,
                           max_seqlen_k=meta.max_seq_len, softmax_scale=scale, causal=True,
                           block_table=meta.block_tables)
