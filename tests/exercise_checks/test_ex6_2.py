"""Exercise 6.2: the KV-cache memory calculator, on formulas and against what the engine allocates."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanoinfer.engine.model_runner import kv_bytes_per_token  # the engine's one formula

SETTINGS = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "fp8": 1}
dtypes = st.sampled_from(sorted(DTYPE_BYTES))


@SETTINGS
@given(st.integers(1, 128), st.integers(1, 64), st.sampled_from([64, 80, 96, 128, 256]), st.integers(1, 131072),
       st.integers(1, 512), dtypes)
def test_kv_cache_memory(impl, layers, heads, head_dim, seq_len, batch, dtype):
    """2 (K and V) x layers x kv_heads x head_dim x bytes per number x tokens x sequences"""
    got = impl.calculate_kv_cache_memory(layers, heads, head_dim, seq_len, batch, dtype)
    want = kv_bytes_per_token(layers, heads, head_dim, DTYPE_BYTES[dtype]) * seq_len * batch
    assert got == want, (f"calculate_kv_cache_memory({layers}, {heads}, {head_dim}, {seq_len}, {batch}, {dtype!r}) "
                         f"returned {got}, expected {want}")


def test_default_dtype_is_float16(impl):
    """dtype defaults to float16 (2 bytes)"""
    got, want = impl.calculate_kv_cache_memory(2, 3, 64, 10, 1), 2 * 2 * 3 * 64 * 2 * 10  # K and V, float16
    assert got == want == kv_bytes_per_token(2, 3, 64, 2) * 10, (
        f"calculate_kv_cache_memory(2, 3, 64, 10, 1) returned {got}; with float16 (2 bytes) it is {want}")


@st.composite
def models(draw):
    params = {"num_layers": draw(st.integers(1, 80)), "num_kv_heads": draw(st.integers(1, 16)),
              "head_dim": draw(st.sampled_from([64, 128])), "max_seq_len": draw(st.sampled_from([512, 2048, 8192])),
              "num_params": draw(st.integers(10**6, 7 * 10**10))}
    if draw(st.booleans()):
        params["dtype"] = draw(dtypes)
    if draw(st.booleans()):
        params["activation_bytes"] = draw(st.integers(0, 8 * 1024**3))
    return params


@SETTINGS
@given(models(), st.sampled_from([8, 16, 24, 40, 80, 141]), st.sampled_from([0.5, 0.8, 0.9, 0.95]))
def test_max_sequences(impl, params, gpu_gb, util):
    """floor((memory x utilisation - weights - activations) / KV bytes per sequence), never negative"""
    got = impl.max_sequences_for_gpu(dict(params), gpu_gb, util)
    nbytes = DTYPE_BYTES[params.get("dtype", "float16")]
    budget = gpu_gb * 1024**3 * util - params["num_params"] * nbytes - params.get("activation_bytes", 0)
    per_seq = kv_bytes_per_token(params["num_layers"], params["num_kv_heads"], params["head_dim"], nbytes) \
        * params["max_seq_len"]
    want = max(0, int(budget // per_seq))
    assert isinstance(got, int), f"return an int, got {type(got).__name__}"
    assert got == want, (f"max_sequences_for_gpu({params}, {gpu_gb}, {util}) returned {got}, expected {want}: budget "
                         f"{budget / 1024**3:.2f} GiB after weights and activations, "
                         f"{per_seq / 1024**2:.1f} MiB per sequence")


@pytest.mark.engine
def test_matches_the_engine(impl, tiny_llm):
    """the calculator predicts the bytes of the KV tensor the engine allocates"""
    num_blocks = random.randint(16, 64)
    llm = tiny_llm(num_kvcache_blocks=num_blocks)
    hf, kv = llm.engine.hf_config, llm.model_runner.kv_cache
    head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    tokens = num_blocks * llm.config.kvcache_block_size
    got = impl.calculate_kv_cache_memory(hf.num_hidden_layers, hf.num_key_value_heads, head_dim, tokens, 1, "float32")
    want = kv.numel() * kv.element_size()
    assert got == want, (f"calculator: {got} bytes for {tokens} tokens; "
                         f"the engine's KV tensor {tuple(kv.shape)} has {want}")
