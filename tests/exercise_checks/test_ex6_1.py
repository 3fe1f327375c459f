"""Exercise 6.1: compute_block_hash, the chained prefix-cache key."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanoinfer import SamplingParams
from nanoinfer.engine.block_manager import BlockManager
from nanoinfer.engine.sequence import Sequence

SETTINGS = settings(max_examples=80, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
blocks = st.lists(st.integers(0, 200_000), min_size=1, max_size=32)
parents = st.none() | st.integers(0, 2**64 - 1)


@SETTINGS
@given(blocks, parents)
def test_deterministic_int64(impl, tokens, parent):
    """an int in [0, 2**64); same tokens and parent give the same hash, list or tuple"""
    h = impl.compute_block_hash(list(tokens), parent)
    assert isinstance(h, int), f"return an int, got {type(h).__name__}"
    assert 0 <= h < 2**64, f"the hash must be in [0, 2**64) (it is chained as 8 bytes), got {h}"
    again = impl.compute_block_hash(tuple(tokens), parent)
    assert again == h, f"hash of {tokens[:6]}... changed between a list ({h}) and a tuple ({again}) of the same tokens"


@SETTINGS
@given(blocks, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_depends_on_the_parent(impl, tokens, p1, p2):
    """same tokens under different parents: different hashes (the hash describes the whole prefix)"""
    if p1 == p2:
        return
    a, b = impl.compute_block_hash(tokens, p1), impl.compute_block_hash(tokens, p2)
    assert a != b, f"tokens {tokens[:6]}... hash to {a} under parent {p1} and under parent {p2}: chain the parent in"
    c = impl.compute_block_hash(tokens, None)
    assert c not in (a, b), "a first block (parent None) hashes like a block with a parent"


@SETTINGS
@given(blocks, blocks, parents)
def test_depends_on_the_tokens(impl, t1, t2, parent):
    """different tokens (values or order) under the same parent: different hashes"""
    if t1 == t2:
        return
    a, b = impl.compute_block_hash(t1, parent), impl.compute_block_hash(t2, parent)
    at = next((i for i, (x, y) in enumerate(zip(t1, t2)) if x != y), min(len(t1), len(t2)))
    assert a != b, (f"two blocks that differ at position {at} (token {t1[at] if at < len(t1) else 'none'} against "
                    f"{t2[at] if at < len(t2) else 'none'}; lengths {len(t1)} and {len(t2)}) hash alike ({a}) under "
                    f"parent {parent}: every token, its position and the block's length must go into the hash")
    if len(set(t1)) > 1:
        rev = list(reversed(t1))
        if rev != t1:
            assert impl.compute_block_hash(rev, parent) != a, f"{t1[:8]} and its reverse hash alike: order matters"


@pytest.mark.engine
def test_in_the_block_manager(impl, engine_code):
    """prefix hits need the same tokens AND the same history: a repeated block at another place must miss"""
    rng = random.Random()
    bs = 16
    p1, p2 = [rng.randrange(512) for _ in range(bs)], [rng.randrange(512) for _ in range(bs)]
    with engine_code():
        bm = BlockManager(32, bs, enable_prefix_caching=True)

    def admit(seq_id, tokens):
        seq = Sequence(seq_id, tokens, SamplingParams())
        assert bm.try_allocate(seq)
        bm.publish_full_blocks(seq, seq.num_tokens)
        return seq.num_computed_tokens // bs

    admit(0, p1 + p2 + [1, 2, 3])
    assert admit(1, p1 + p2 + [4, 5]) == 2, "a prompt with the same two leading blocks should hit both"
    assert admit(2, p2 + p2 + [6]) == 0, (
        "a prompt starting with a block equal to another prompt's SECOND block hit the cache: its keys and values "
        "were computed after a different first block, so the hash must include the parent")
