"""Phase 2 — the scheduling problem: block arithmetic, policies, cache statistics, preemption.

2.2, 2.3 and 2.4 run inside the engine: their reference is the engine's own code, imported here
(nanoinfer/engine/policies.py and block_manager.py). 2.1 is answered below."""

from __future__ import annotations

import math

# The engine's own reference code for the exercises it runs at a hook (nanoinfer/workbook/registry.py).
from nanoinfer.engine.block_manager import get_cache_stats  # noqa: F401  Exercise 2.3
from nanoinfer.engine.model_runner import kv_bytes_per_token
from nanoinfer.engine.policies import LongestJobFirst, ShortestJobFirst, choose_preemption_victim  # noqa: F401


def kv_blocks_needed(seq_lens: list[int], block_size: int) -> int:
    """Exercise 2.1: KV blocks a paged cache needs to hold sequences of these lengths at the same time.

    A sequence owns whole blocks: a sequence of n tokens takes ceil(n / block_size) blocks, the last one
    possibly part-empty. No sharing between sequences (prefix caching off). An empty list needs 0 blocks.
    """
    return sum(math.ceil(n / block_size) for n in seq_lens)


def kv_cache_bytes(num_blocks: int, block_size: int, num_layers: int, num_kv_heads: int, head_dim: int,
                   dtype_bytes: int) -> int:
    """Exercise 2.1: bytes that ``num_blocks`` KV blocks occupy.

    Every token slot of a block stores, in every layer, one key and one value vector of ``head_dim``
    numbers per KV head, each number ``dtype_bytes`` wide. Unused slots of a part-empty block still count:
    the memory is reserved by the block, not by the token.
    """
    return num_blocks * block_size * kv_bytes_per_token(num_layers, num_kv_heads, head_dim, dtype_bytes)

