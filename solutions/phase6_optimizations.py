"""Phase 6 — advanced optimisations: prefix-cache hashing and memory planning."""

from __future__ import annotations

from collections.abc import Sequence as TokenIds

import numpy as np
import xxhash


def compute_block_hash(token_ids: TokenIds[int], parent_hash: int | None) -> int:
    """Exercise 6.1: hash one full KV block, chained to the hash of the block before it.

    Chaining makes the hash describe the whole prefix up to and including this block: two blocks with
    the same tokens but different histories get different hashes, so their keys and values (which depend
    on every earlier token) are never confused.
    """
    h = xxhash.xxh64()
    if parent_hash is not None:
        h.update(parent_hash.to_bytes(8, "little"))
    h.update(np.asarray(token_ids, dtype=np.int64).tobytes())
    return h.intdigest()


DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "fp8": 1}


def calculate_kv_cache_memory(
    num_layers: int,
    num_heads: int,
    head_dim: int,
    max_seq_len: int,
    max_batch_size: int,
    dtype: str = "float16",
) -> int:
    """Exercise 6.2: bytes of KV cache for ``max_batch_size`` sequences of ``max_seq_len`` tokens.

    ``num_heads`` is the number of key/value heads (with grouped-query attention, fewer than the query
    heads). Each token stores one key and one value vector per KV head per layer.
    """
    return 2 * num_layers * num_heads * head_dim * DTYPE_BYTES[dtype] * max_seq_len * max_batch_size


def max_sequences_for_gpu(model_params: dict, gpu_memory_gb: float, gpu_memory_utilization: float = 0.9) -> int:
    """Exercise 6.2: how many sequences of ``max_seq_len`` tokens fit beside the weights.

    ``model_params`` holds num_layers, num_kv_heads, head_dim, max_seq_len, num_params, dtype and,
    optionally, activation_bytes (the peak working memory measured at warm-up).
    """
    p = model_params
    bytes_per_value = DTYPE_BYTES[p.get("dtype", "float16")]
    budget = gpu_memory_gb * 1024**3 * gpu_memory_utilization
    budget -= p["num_params"] * bytes_per_value + p.get("activation_bytes", 0)
    per_sequence = calculate_kv_cache_memory(
        p["num_layers"], p["num_kv_heads"], p["head_dim"], p["max_seq_len"], 1, p.get("dtype", "float16")
    )
    return max(0, int(budget // per_sequence))
