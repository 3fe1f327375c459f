"""Phase 2 — the scheduling problem: block arithmetic, policies, cache statistics, preemption."""

from __future__ import annotations

import math

from nanoinfer.engine.policies import SchedulingPolicy


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
    return num_blocks * block_size * 2 * num_layers * num_kv_heads * head_dim * dtype_bytes


class ShortestJobFirst(SchedulingPolicy):
    """Exercise 2.2: admit the request with the least work first.

    A request's work is what it asks for at arrival: ``seq.num_prompt_tokens + seq.sampling_params.max_tokens``.

    ``priority(seq)`` returns a sort key; the scheduler admits the smallest key first. Equal sizes fall
    back to first-come-first-served: earlier ``seq.metrics.arrival_time`` first, then smaller ``seq_id``.
    Short jobs stop waiting behind long ones, so the median latency drops; a long job can wait a long time.
    """

    name = "sjf"

    def priority(self, seq) -> tuple:
        return (seq.num_prompt_tokens + seq.sampling_params.max_tokens, seq.metrics.arrival_time, seq.seq_id)


class LongestJobFirst(SchedulingPolicy):
    """Exercise 2.2: admit the request with the most work first; ties as in ShortestJobFirst.

    The long jobs start together and overlap, so the batch tail is short jobs; their latency suffers.
    """

    name = "ljf"

    def priority(self, seq) -> tuple:
        return (-(seq.num_prompt_tokens + seq.sampling_params.max_tokens), seq.metrics.arrival_time, seq.seq_id)


def get_cache_stats(block_manager) -> dict:
    """Exercise 2.3: a BlockManager's usage and prefix-cache effectiveness as one flat dictionary.

    Read ``block_manager.num_blocks``, ``num_used_blocks``, ``num_free_blocks``, ``num_cached_blocks`` and
    the raw counters in ``block_manager.counters`` (a ``CacheCounters``). Return these keys:

      total_blocks, used_blocks, free_blocks, cached_blocks   block usage right now
      hit_blocks, miss_blocks, hit_tokens, miss_tokens        the counters, as they are
      evictions, preemptions                                  the counters, as they are
      hit_rate        hit_tokens / (hit_tokens + miss_tokens): share of admitted prompt tokens served by
                      the cache; 0.0 before any admission
      block_hit_rate  hit_blocks / (hit_blocks + miss_blocks): share of cacheable full blocks that hit;
                      0.0 when there were none
    """
    c = block_manager.counters
    tokens = c.hit_tokens + c.miss_tokens
    blocks = c.hit_blocks + c.miss_blocks
    return {
        "total_blocks": block_manager.num_blocks,
        "used_blocks": block_manager.num_used_blocks,
        "free_blocks": block_manager.num_free_blocks,
        "cached_blocks": block_manager.num_cached_blocks,
        "hit_blocks": c.hit_blocks,
        "miss_blocks": c.miss_blocks,
        "hit_tokens": c.hit_tokens,
        "miss_tokens": c.miss_tokens,
        "hit_rate": c.hit_tokens / tokens if tokens else 0.0,
        "block_hit_rate": c.hit_blocks / blocks if blocks else 0.0,
        "evictions": c.evictions,
        "preemptions": c.preemptions,
    }


def choose_preemption_victim(candidates: list, policy: SchedulingPolicy):
    """Exercise 2.4: the running sequence to preempt when a decode step finds no free KV block.

    ``candidates`` are the running sequences (at least one); return one of them, the object itself. The
    victim loses its blocks and is recomputed later, so sacrifice the one the policy ranks last: the
    largest ``policy.priority(seq)`` key. Under FIFO that is the latest arrival, so the oldest requests
    keep moving and every request eventually finishes.
    """
    return max(candidates, key=policy.priority)
