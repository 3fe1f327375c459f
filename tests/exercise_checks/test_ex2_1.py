"""Exercise 2.1: kv_blocks_needed and kv_cache_bytes, checked against the block manager and the KV tensor."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanoinfer import SamplingParams
from nanoinfer.engine.block_manager import BlockManager
from nanoinfer.engine.model_runner import kv_bytes_per_token  # the engine's one formula
from nanoinfer.engine.sequence import Sequence

SETTINGS = settings(max_examples=50, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
lengths = st.lists(st.integers(1, 3000), max_size=40)
block_sizes = st.sampled_from([1, 2, 4, 8, 16, 32, 64, 128, 256]) | st.integers(1, 300)


@SETTINGS
@given(lengths, block_sizes)
def test_blocks(impl, seq_lens, block_size):
    """each sequence takes ceil(length / block_size) whole blocks"""
    got = impl.kv_blocks_needed(list(seq_lens), block_size)
    want = sum(-(-n // block_size) for n in seq_lens)
    assert got == want, (f"kv_blocks_needed({seq_lens}, block_size={block_size}) returned {got}, expected {want}: "
                         "a sequence of n tokens needs ceil(n / block_size) blocks, the last one part-empty")


@SETTINGS
@given(st.lists(st.integers(1, 200), min_size=1, max_size=12), st.sampled_from([1, 4, 16, 32]))
def test_blocks_match_the_block_manager(impl, seq_lens, block_size):
    """what a real BlockManager allocates for these sequences (prefix caching off)"""
    want_upper = sum(-(-n // block_size) for n in seq_lens)
    bm = BlockManager(want_upper + 3, block_size, enable_prefix_caching=False)
    rng = random.Random(0)
    for i, n in enumerate(seq_lens):
        seq = Sequence(i, [rng.randrange(1000) for _ in range(n)], SamplingParams())
        assert bm.try_allocate(seq), f"the block manager ran out of blocks for sequence {i} ({n} tokens)"
    got = impl.kv_blocks_needed(list(seq_lens), block_size)
    assert got == bm.num_used_blocks, (
        f"kv_blocks_needed({seq_lens}, {block_size}) returned {got}; the BlockManager allocated {bm.num_used_blocks}")


def test_no_sequences(impl):
    """no sequences, no blocks"""
    assert impl.kv_blocks_needed([], 16) == 0, "kv_blocks_needed([], 16) must be 0"


@SETTINGS
@given(st.integers(0, 5000), st.sampled_from([1, 16, 32, 256]), st.integers(1, 96), st.integers(1, 64),
       st.sampled_from([32, 64, 80, 128, 256]), st.sampled_from([1, 2, 4]))
def test_bytes(impl, num_blocks, block_size, num_layers, num_kv_heads, head_dim, dtype_bytes):
    """a key and a value vector per token slot, KV head and layer"""
    got = impl.kv_cache_bytes(num_blocks, block_size, num_layers, num_kv_heads, head_dim, dtype_bytes)
    want = num_blocks * block_size * kv_bytes_per_token(num_layers, num_kv_heads, head_dim, dtype_bytes)
    assert got == want, (
        f"kv_cache_bytes(num_blocks={num_blocks}, block_size={block_size}, num_layers={num_layers}, "
        f"num_kv_heads={num_kv_heads}, head_dim={head_dim}, dtype_bytes={dtype_bytes}) returned {got}, expected "
        f"{want} = 2 (K and V) x blocks x block_size x layers x kv_heads x head_dim x dtype_bytes")
    assert isinstance(got, int), f"return an int, not {type(got).__name__}"


@pytest.mark.engine
def test_bytes_match_the_engine(impl, tiny_llm):
    """kv_cache_bytes equals the size of the KV tensor the engine allocates"""
    num_blocks = random.randint(16, 80)
    llm = tiny_llm(num_kvcache_blocks=num_blocks)
    hf = llm.engine.hf_config
    head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    kv = llm.model_runner.kv_cache
    got = impl.kv_cache_bytes(num_blocks, llm.config.kvcache_block_size, hf.num_hidden_layers,
                              hf.num_key_value_heads, head_dim, kv.element_size())
    want = kv.numel() * kv.element_size()
    assert got == want, f"kv_cache_bytes(...) gives {got} bytes; the engine's KV tensor {tuple(kv.shape)} has {want}"
