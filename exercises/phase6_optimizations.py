"""Phase 6 — advanced optimisations. Your code for Exercises 6.1 to 6.3.

Check your work with ``make check EX=6.1`` (or ``python -m nanoinfer.check 6.1``).
The notebook: notebooks/06_advanced_optimizations.ipynb.
"""

from __future__ import annotations

from collections.abc import Sequence as TokenIds

import numpy as np  # noqa: F401
import xxhash  # noqa: F401


def compute_block_hash(token_ids: TokenIds[int], parent_hash: int | None) -> int:
    """Exercise 6.1: the prefix-cache key of one full KV block, chained to the block before it.

    Return an int in [0, 2**64) that depends on the block's tokens (their values and order) and on
    ``parent_hash``, the hash of the previous block (None for a sequence's first block), so that equal
    hashes mean equal prefixes, not merely equal blocks. Deterministic: the same inputs give the same
    hash, whether ``token_ids`` is a list or a tuple. Hint: xxhash.xxh64 over the parent's 8 bytes and
    the tokens as int64 bytes (numpy's ``tobytes``).
    """
    raise NotImplementedError("Exercise 6.1: write compute_block_hash(token_ids, parent_hash)")


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

    ``num_heads`` is the number of key/value heads (fewer than the query heads with grouped-query
    attention). Each token stores, in every layer, one key and one value vector of ``head_dim`` numbers
    per KV head; a number takes ``DTYPE_BYTES[dtype]`` bytes.
    """
    raise NotImplementedError("Exercise 6.2: write calculate_kv_cache_memory(...)")


def max_sequences_for_gpu(model_params: dict, gpu_memory_gb: float, gpu_memory_utilization: float = 0.9) -> int:
    """Exercise 6.2: how many sequences of ``max_seq_len`` tokens fit in the KV cache beside the weights.

    ``model_params`` has num_layers, num_kv_heads, head_dim, max_seq_len, num_params, and optionally dtype
    (default "float16") and activation_bytes (default 0: the peak working memory measured at warm-up).
    Budget: ``gpu_memory_gb * 1024**3 * gpu_memory_utilization`` minus the weights (num_params numbers of
    the dtype) minus activation_bytes. Return how many whole sequences that budget holds, never negative.
    """
    raise NotImplementedError("Exercise 6.2: write max_sequences_for_gpu(model_params, gpu_memory_gb, ...)")


def predicted_hit_rate(prompts: list[list[int]], block_size: int) -> float:
    """Exercise 6.3: the prefix cache's hit rate for these prompts, predicted without running the engine.

    The requests arrive one at a time, in order, each generating one token and finishing before the next
    arrives; the cache is large enough that nothing is evicted. A prompt's blocks are its tokens cut into
    ``block_size`` pieces. Once computed, every full block is cached. A prompt of n tokens can hit at most
    (n - 1) // block_size blocks: never the block holding its last token, whose logits must be computed to
    sample. A block hits when it and every block before it equal the same blocks of an earlier prompt (the
    hash is chained: equal blocks after a difference do not hit). Return hit tokens / all prompt tokens, the
    engine's ``cache_stats()["hit_rate"]`` (0.0 for no tokens).
    """
    raise NotImplementedError("Exercise 6.3: write predicted_hit_rate(prompts, block_size)")
