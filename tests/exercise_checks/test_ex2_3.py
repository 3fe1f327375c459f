"""Exercise 2.3: get_cache_stats, on made-up counters, on a simulated block manager, and in the engine."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanoinfer import SamplingParams
from nanoinfer.engine.block_manager import BlockManager, CacheCounters
from nanoinfer.engine.sequence import Sequence

SETTINGS = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
KEYS = {"total_blocks", "used_blocks", "free_blocks", "cached_blocks", "hit_blocks", "miss_blocks", "hit_tokens",
        "miss_tokens", "hit_rate", "block_hit_rate", "evictions", "preemptions"}
counts = st.integers(0, 10_000)


@st.composite
def block_managers(draw):
    """A stand-in for a BlockManager: the attributes get_cache_stats reads, with made-up values."""
    total = draw(st.integers(1, 4096))
    used = draw(st.integers(0, total))
    counters = CacheCounters(*(draw(st.integers(0, 50) | counts) for _ in range(6)))
    return SimpleNamespace(num_blocks=total, num_used_blocks=used, num_free_blocks=total - used,
                           num_cached_blocks=draw(st.integers(0, total)), counters=counters)


@SETTINGS
@given(block_managers())
def test_on_made_up_counters(impl, fake):
    """every key present; counts passed through; rates are hits / (hits + misses), 0.0 when nothing was seen"""
    total, used, counters = fake.num_blocks, fake.num_used_blocks, fake.counters
    stats = impl.get_cache_stats(fake)
    assert isinstance(stats, dict), f"get_cache_stats returned {type(stats).__name__}, expected a dict"
    missing = KEYS - set(stats)
    assert not missing, f"get_cache_stats() lacks the keys {sorted(missing)}"
    c = counters
    want = {
        "total_blocks": total, "used_blocks": used, "free_blocks": total - used,
        "cached_blocks": fake.num_cached_blocks,
        "hit_blocks": c.hit_blocks, "miss_blocks": c.miss_blocks, "hit_tokens": c.hit_tokens,
        "miss_tokens": c.miss_tokens, "evictions": c.evictions, "preemptions": c.preemptions,
        "hit_rate": c.hit_tokens / (c.hit_tokens + c.miss_tokens) if c.hit_tokens + c.miss_tokens else 0.0,
        "block_hit_rate": c.hit_blocks / (c.hit_blocks + c.miss_blocks) if c.hit_blocks + c.miss_blocks else 0.0,
    }
    for key, value in want.items():
        assert stats[key] == pytest.approx(value), (
            f"stats[{key!r}] is {stats[key]}, expected {value} (counters: {c}, blocks: total {total}, used {used})")


@SETTINGS
@given(st.integers(0, 2**31), st.sampled_from([4, 8, 16]))
def test_on_a_block_manager(impl, seed, block_size):
    """a simulated workload with shared prefixes: stats agree with what the block manager did"""
    rng = random.Random(seed)
    bm = BlockManager(rng.randint(30, 60), block_size, enable_prefix_caching=True)
    prefixes = [[rng.randrange(1000) for _ in range(block_size * rng.randint(1, 3))] for _ in range(3)]
    running: list[Sequence] = []
    hit_tokens = prompt_tokens = 0
    for i in range(rng.randint(2, 12)):
        tokens = rng.choice(prefixes) + [rng.randrange(1000) for _ in range(rng.randint(1, 2 * block_size))]
        seq = Sequence(i, tokens, SamplingParams())
        if bm.try_allocate(seq):
            hit_tokens += seq.num_computed_tokens  # prefix-cache hits count as computed
            prompt_tokens += seq.num_tokens
            bm.publish_full_blocks(seq, seq.num_tokens)  # as if prefilled
            running.append(seq)
        if running and rng.random() < 0.4:
            bm.free(running.pop(rng.randrange(len(running))))
    stats = impl.get_cache_stats(bm)
    used = sum(b.ref_count > 0 for b in bm.blocks)
    cached = sum(b.hash is not None for b in bm.blocks)
    want = {"total_blocks": bm.num_blocks, "used_blocks": used, "free_blocks": bm.num_blocks - used,
            "cached_blocks": cached, "hit_tokens": hit_tokens, "miss_tokens": prompt_tokens - hit_tokens,
            "hit_rate": hit_tokens / prompt_tokens if prompt_tokens else 0.0}
    for key, value in want.items():
        assert stats[key] == pytest.approx(value), (
            f"stats[{key!r}] is {stats[key]}, expected {value}: {prompt_tokens} prompt tokens admitted, "
            f"{hit_tokens} of them from the prefix cache; {used} of {bm.num_blocks} blocks in use, {cached} cached")


@pytest.mark.engine
def test_in_the_engine(impl, tiny_llm):
    """llm.cache_stats() runs your function; a shared system prompt shows up as hits"""
    llm = tiny_llm()
    rng = random.Random()
    system = [rng.randrange(512) for _ in range(48)]
    prompts = [system + [rng.randrange(512) for _ in range(rng.randint(1, 20))] for _ in range(5)]
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=2, ignore_eos=True), use_tqdm=False)
    stats = llm.cache_stats()
    cached = sum(o.metrics.num_cached_tokens for o in outs)
    total = sum(len(p) for p in prompts)
    assert stats["hit_tokens"] == cached, f"hit_tokens is {stats['hit_tokens']}; the requests report {cached}"
    assert stats["hit_rate"] == pytest.approx(cached / total), (
        f"hit_rate is {stats['hit_rate']}, expected {cached / total}")
    num_blocks = llm.block_manager.num_blocks
    assert stats["used_blocks"] == 0 and stats["free_blocks"] == stats["total_blocks"] == num_blocks, (
        f"after generate() every block is free: got used={stats['used_blocks']}, free={stats['free_blocks']}, "
        f"total={stats['total_blocks']} (the engine has {llm.block_manager.num_blocks} blocks)")
