"""The host's per-step work, against plain per-token references: the prefix cache's batched block hashes and its
collision check."""

from __future__ import annotations

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from nanoinfer.engine.block_manager import BlockManager, compute_block_hash
from nanoinfer.engine.sequence import Sequence
from nanoinfer.fast.host import chained_block_hashes, int64_bytes
from nanoinfer.sampling_params import SamplingParams

TOKEN = st.integers(0, 2**63 - 1)  # any int64 token id, not only a small vocabulary's
PARENT = st.none() | st.integers(0, 2**64 - 1)


def reference_chain(tokens: list[int], block_size: int, parent: int | None) -> list[int]:
    """compute_block_hash over each full block in turn, as Exercise 6.1's reference is called."""
    hashes = []
    for i in range(len(tokens) // block_size):
        parent = compute_block_hash(tokens[i * block_size : (i + 1) * block_size], parent)
        hashes.append(parent)
    return hashes


@settings(max_examples=200, deadline=None)
@given(tokens=st.lists(TOKEN | st.integers(0, 50), max_size=300), block_size=st.sampled_from([1, 2, 3, 4, 16, 64]),
       parent=PARENT)
def test_batched_hashes_are_the_reference_bit_for_bit(tokens, block_size, parent):
    full = tokens[: len(tokens) // block_size * block_size]
    assert int64_bytes(full) == np.asarray(full, dtype=np.int64).tobytes()
    assert chained_block_hashes(int64_bytes(full), block_size, parent) == reference_chain(full, block_size, parent)


def new_seq(seq_id: int, tokens: list[int]) -> Sequence:
    return Sequence(seq_id, tokens, SamplingParams(max_tokens=100))


@settings(max_examples=60, deadline=None)
@given(prompt=st.lists(st.integers(0, 3), min_size=1, max_size=60), extra=st.lists(st.integers(0, 3), max_size=20),
       block_size=st.sampled_from([1, 2, 4, 8]))
def test_a_learners_hash_is_called_once_per_block_as_written(prompt, extra, block_size):
    """Selected learner code (any function but the reference) gets every block's token list and its parent's
    hash, in order, once; the engine keeps exactly what it returned. The reference gives the same hashes."""
    calls = []

    def learner_hash(token_ids, parent_hash):
        calls.append((token_ids, parent_hash))
        return compute_block_hash(token_ids, parent_hash)

    results = []
    for hash_fn in (compute_block_hash, learner_hash):
        bm = BlockManager(num_blocks=64, block_size=block_size)
        bm._hash = hash_fn
        seq = new_seq(0, prompt)
        assert bm.try_allocate(seq)
        bm.publish_full_blocks(seq, seq.num_tokens)
        seq.num_computed_tokens = seq.num_tokens
        for token in extra:  # decode: a block at a time
            seq.token_ids.append(token)
            assert bm.try_reserve(seq, seq.num_tokens)
            bm.publish_full_blocks(seq, seq.num_tokens)
            seq.num_computed_tokens = seq.num_tokens
        results.append(list(seq.block_hashes))
    tokens = prompt + extra
    assert results[0] == results[1] == reference_chain(tokens, block_size, None)
    assert len(calls) == len(results[1])
    assert [t for t, _ in calls] == [tokens[i * block_size : (i + 1) * block_size] for i in range(len(calls))]
    assert all(type(t) is list for t, _ in calls)  # as Sequence.block_token_ids gives them
    assert [p for _, p in calls] == ([None] + results[1])[: len(calls)]


@pytest.mark.parametrize("learner", [False, True])
def test_a_hash_collision_costs_a_recomputation_not_wrong_blocks(learner):
    """Two different blocks under one key: the stored tokens refuse the hit, with the batched reference hash (the
    collision is planted) and with a learner's hash that collides on every block."""
    bm = BlockManager(num_blocks=16, block_size=4)
    if learner:
        bm._hash = lambda token_ids, parent_hash: 42
    a = new_seq(0, [1, 2, 3, 4, 5])
    assert bm.try_allocate(a)
    bm.publish_full_blocks(a, a.num_tokens)
    assert bm.blocks[a.block_table[0]].token_ids == (1, 2, 3, 4)
    b = new_seq(1, [9, 9, 9, 9, 5])
    if not learner:  # plant the collision: b's first block's key names a's block
        bm._block_hashes(b, 1)
        bm.cached_block_ids[b.block_hashes[0]] = a.block_table[0]
    assert bm.try_allocate(b) and b.num_computed_tokens == 0 and b.block_table[0] != a.block_table[0]
    same = new_seq(2, [1, 2, 3, 4, 6])  # a's first block again: a hit
    assert bm.try_allocate(same) and same.block_table[0] == a.block_table[0] and same.num_computed_tokens == 4
