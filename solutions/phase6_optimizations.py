"""Phase 6 — advanced optimisations: prefix-cache hashing (6.1, the engine's own code), memory planning (6.2) and
the hit rate a workload should reach (6.3)."""

from __future__ import annotations

# The engine's own reference code for the exercise it runs at a hook (nanoinfer/workbook/registry.py).
from nanoinfer.engine.block_manager import compute_block_hash  # noqa: F401  Exercise 6.1
from nanoinfer.engine.model_runner import kv_bytes_per_token

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
    return kv_bytes_per_token(num_layers, num_heads, head_dim, DTYPE_BYTES[dtype]) * max_seq_len * max_batch_size


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


def predicted_hit_rate(prompts: list[list[int]], block_size: int) -> float:
    seen: set[tuple[int, ...]] = set()  # every block-aligned prefix cached so far, as its tokens
    hit_tokens = 0
    for prompt in prompts:
        prefixes = [tuple(prompt[: (i + 1) * block_size]) for i in range(len(prompt) // block_size)]
        cacheable = (len(prompt) - 1) // block_size  # never the block of the last token
        hits = next((i for i, p in enumerate(prefixes[:cacheable]) if p not in seen), cacheable)
        hit_tokens += hits * block_size  # (the first miss ends the hits: the hash is chained)
        seen.update(prefixes)  # every full block, once computed, is cached for later prompts
    total = sum(len(p) for p in prompts)
    return hit_tokens / total if total else 0.0
