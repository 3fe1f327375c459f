"""Phase 2 — the scheduling problem. Your code for Exercises 2.1 to 2.4.

Check your work with ``make check EX=2.2`` (or ``python -m nanoinfer.check 2.2``), or in notebook 02 with
``check("2.2")``. Then run the engine on your code: ``with nanoinfer.use_exercises("2.2"): llm = LLM(...)``.
"""

from __future__ import annotations

import math  # noqa: F401
from typing import TYPE_CHECKING

from nanoinfer.engine.policies import SchedulingPolicy

if TYPE_CHECKING:
    from nanoinfer.engine.block_manager import BlockManager
    from nanoinfer.engine.sequence import Sequence


def kv_blocks_needed(seq_lens: list[int], block_size: int) -> int:
    """Exercise 2.1: how many KV blocks hold sequences of these lengths at the same time.

    Each sequence owns whole blocks of ``block_size`` token slots; its last block may be part-empty.
    Sequences share nothing (no prefix caching). An empty list needs 0 blocks.
    Example: lengths [16, 17] with block_size 16 need 1 + 2 = 3 blocks.
    """
    raise NotImplementedError("Exercise 2.1: write kv_blocks_needed(seq_lens, block_size)")


def kv_cache_bytes(num_blocks: int, block_size: int, num_layers: int, num_kv_heads: int, head_dim: int,
                   dtype_bytes: int) -> int:
    """Exercise 2.1: the bytes ``num_blocks`` KV blocks occupy.

    Each token slot of a block stores, in every layer, a key vector and a value vector of ``head_dim``
    numbers for each of the ``num_kv_heads`` KV heads; a number takes ``dtype_bytes`` bytes. Empty slots
    of a part-filled block count too: the block reserves them.
    """
    raise NotImplementedError("Exercise 2.1: write kv_cache_bytes(...)")


class ShortestJobFirst(SchedulingPolicy):
    """Exercise 2.2: admit the waiting request with the least work first.

    ``priority(seq)`` returns a sort key (a tuple); the scheduler sorts the waiting queue by it and admits
    the smallest key first. Work is what the request asks for when it arrives:
    ``seq.num_prompt_tokens + seq.sampling_params.max_tokens``. Equal work falls back to first come, first
    served: earlier ``seq.metrics.arrival_time`` first, then the smaller ``seq.seq_id``.
    Look at ``SchedulingPolicy`` in nanoinfer/engine/policies.py (FIFO) for the shape of the answer
    (the engine's own ShortestJobFirst is beside it: read it after you have written yours).
    """

    name = "sjf"

    def priority(self, seq: Sequence) -> tuple:
        raise NotImplementedError("Exercise 2.2: write ShortestJobFirst.priority(seq)")


class LongestJobFirst(SchedulingPolicy):
    """Exercise 2.2: admit the waiting request with the most work first (same work, same ties as above)."""

    name = "ljf"

    def priority(self, seq: Sequence) -> tuple:
        raise NotImplementedError("Exercise 2.2: write LongestJobFirst.priority(seq)")


def get_cache_stats(block_manager: BlockManager) -> dict:
    """Exercise 2.3: a BlockManager's usage and prefix-cache effectiveness, as one flat dictionary.

    Read ``block_manager.num_blocks``, ``.num_used_blocks``, ``.num_free_blocks``, ``.num_cached_blocks`` and
    the raw counters in ``block_manager.counters`` (see ``CacheCounters`` in block_manager.py). Return:

      total_blocks, used_blocks, free_blocks, cached_blocks   usage right now
      hit_blocks, miss_blocks, hit_tokens, miss_tokens        the counters, unchanged
      evictions, preemptions                                  the counters, unchanged
      hit_rate        hit_tokens / (hit_tokens + miss_tokens), 0.0 before anything was admitted
      block_hit_rate  hit_blocks / (hit_blocks + miss_blocks), 0.0 when there were no full prompt blocks
    """
    raise NotImplementedError("Exercise 2.3: write get_cache_stats(block_manager)")


def choose_preemption_victim(candidates: list[Sequence], policy: SchedulingPolicy) -> Sequence:
    """Exercise 2.4: pick the running sequence to preempt when a decode step finds no free KV block.

    ``candidates``: the running sequences (never empty); return one of them (the object itself). The victim
    loses its KV blocks and is recomputed later, so take the one the policy ranks last: the largest
    ``policy.priority(seq)``. Under FIFO that is the latest arrival: the oldest requests keep moving, and
    every request eventually finishes.
    """
    raise NotImplementedError("Exercise 2.4: write choose_preemption_victim(candidates, policy)")
