"""Phase 2 — the scheduling problem: block arithmetic, policies, cache statistics, preemption."""

from __future__ import annotations

import math

from nanoinfer.engine.policies import SchedulingPolicy


def kv_blocks_needed(seq_lens: list[int], block_size: int) -> int:
    """Exercise 2.1: blocks a paged KV cache needs to hold sequences of these lengths at once.

    Each sequence owns whole blocks: its last block may be partly empty.
    """
    return sum(math.ceil(n / block_size) for n in seq_lens)


def kv_cache_bytes(num_blocks: int, block_size: int, num_layers: int, num_kv_heads: int, head_dim: int,
                   dtype_bytes: int) -> int:
    """Exercise 2.1: bytes those blocks take: a key and a value vector per token, KV head and layer."""
    return num_blocks * block_size * 2 * num_layers * num_kv_heads * head_dim * dtype_bytes


class ShortestJobFirst(SchedulingPolicy):
    """Exercise 2.2: admit the request with the least total work (prompt + requested tokens) first.

    Short jobs finish sooner, so the mean latency drops; long jobs can wait a long time.
    """

    name = "sjf"

    def priority(self, seq) -> tuple:
        return (seq.num_prompt_tokens + seq.sampling_params.max_tokens, seq.metrics.arrival_time, seq.seq_id)


class LongestJobFirst(SchedulingPolicy):
    """Exercise 2.2: admit the request with the most total work first (packs long jobs early)."""

    name = "ljf"

    def priority(self, seq) -> tuple:
        return (-(seq.num_prompt_tokens + seq.sampling_params.max_tokens), seq.metrics.arrival_time, seq.seq_id)


def get_cache_stats(block_manager) -> dict:
    """Exercise 2.3: summarise a BlockManager's prefix-cache counters and block usage.

    hit_rate is over prompt tokens at admission (hit tokens / all prompt tokens admitted);
    block_hit_rate is over full prompt blocks that could have hit.
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
    """Exercise 2.4: pick the running sequence to preempt when KV blocks run out.

    The victim loses its blocks and is recomputed later, so take the one the policy cares least about:
    the largest priority key (for FIFO, the latest arrival), which keeps older requests moving.
    """
    return max(candidates, key=policy.priority)
