"""Exercise 6.3: the prefix-cache hit rate of a workload, predicted, against the block manager's counters."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanoinfer import SamplingParams

SETTINGS = settings(max_examples=8, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def workload(seed: int, block_size: int) -> list[list[int]]:
    """Prompts sharing prefixes of random lengths (some block-aligned, some not), repeats, and strangers."""
    rng = random.Random(seed)
    shared = [[rng.randrange(512) for _ in range(rng.randint(1, 5 * block_size))] for _ in range(3)]
    prompts = []
    for _ in range(rng.randint(2, 12)):
        kind = rng.random()
        if kind < 0.2 and prompts:
            prompts.append(list(rng.choice(prompts)))  # the same prompt again
        elif kind < 0.8:
            prefix = rng.choice(shared)
            prompts.append(prefix[: rng.randint(1, len(prefix))] + [rng.randrange(512) for _ in range(rng.randint(0, 40))])
        else:
            prompts.append([rng.randrange(512) for _ in range(rng.randint(1, 60))])
    return prompts


def by_hand(prompts, block_size):
    """The rule, written out the slow way: compare with each earlier prompt block by block."""
    hit = 0
    for j, p in enumerate(prompts):
        best = 0
        for q in prompts[:j]:
            n = 0
            while (n + 1) * block_size <= min(len(q), len(p) - 1) and \
                    p[n * block_size:(n + 1) * block_size] == q[n * block_size:(n + 1) * block_size]:
                n += 1
            best = max(best, n)
        hit += best * block_size
    total = sum(map(len, prompts))
    return hit / total if total else 0.0


@SETTINGS
@given(st.integers(0, 2**31), st.sampled_from([2, 4, 8, 16]))
def test_matches_the_rule(impl, seed, block_size):
    """hit tokens / prompt tokens, a prompt hitting its longest block-aligned prefix seen before"""
    prompts = workload(seed, block_size)
    got, want = impl.predicted_hit_rate(prompts, block_size), by_hand(prompts, block_size)
    assert got == pytest.approx(want), (
        f"{len(prompts)} prompts of {[len(p) for p in prompts]} tokens, block size {block_size}: predicted "
        f"{got:.4f}, expected {want:.4f}")


def test_edge_cases(impl):
    """no prompts; a repeat whose length is a multiple of the block; a one-block prompt"""
    assert impl.predicted_hit_rate([], 16) == 0.0
    a = list(range(32))
    assert impl.predicted_hit_rate([a, a], 16) == pytest.approx(16 / 64), (
        "a 32-token prompt seen before hits 16 tokens, not 32: the block of its last token is computed again")
    assert impl.predicted_hit_rate([a[:16], a[:16]], 16) == 0.0, "a one-block prompt can never hit"


@pytest.mark.engine
@SETTINGS
@given(st.integers(0, 2**31), st.sampled_from([4, 16]))
def test_against_the_engine(impl, tiny_llm, seed, block_size):
    """the engine's cache_stats()['hit_rate'] after running the prompts one at a time equals the prediction"""
    prompts = workload(seed, block_size)
    llm = tiny_llm(kvcache_block_size=block_size, num_kvcache_blocks=4096 // block_size)
    for prompt in prompts:
        llm.generate([prompt], SamplingParams(temperature=0.0, max_tokens=1), use_tqdm=False)
    measured = llm.cache_stats()["hit_rate"]
    predicted = impl.predicted_hit_rate(prompts, block_size)
    assert predicted == pytest.approx(measured), (
        f"block size {block_size}, prompts of {[len(p) for p in prompts]} tokens: predicted {predicted:.4f}, "
        f"the engine measured {measured:.4f}")
