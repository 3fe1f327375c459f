"""Exercise 4.3: comm_bytes_per_token, the bytes a tensor-parallel rank's collectives carry per token, against
the rule stated in the stub and against the engine's own counters."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import make_tiny_checkpoint
from nanoinfer import SamplingParams

SETTINGS = settings(max_examples=80, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
configs = st.builds(SimpleNamespace, num_hidden_layers=st.integers(1, 96),
                    hidden_size=st.integers(1, 64).map(lambda n: 64 * n), vocab_size=st.integers(2, 260_000),
                    num_attention_heads=st.just(32), intermediate_size=st.just(11008))


@SETTINGS
@given(configs, st.integers(2, 16), st.sampled_from([1, 2, 4]))
def test_all_reduce_per_token(impl, config, tp, dtype_bytes):
    """one hidden-size vector per token for the embedding, and two per decoder layer"""
    got = impl.comm_bytes_per_token(config, tp, dtype_bytes)
    assert isinstance(got, dict) and {"all_reduce", "all_gather"} <= set(got), (
        f"return a dict with keys 'all_reduce' and 'all_gather', got {got!r}")
    want = (2 * config.num_hidden_layers + 1) * config.hidden_size * dtype_bytes
    assert got["all_reduce"] == want, (
        f"{config.num_hidden_layers} layers, hidden {config.hidden_size}, TP={tp}, {dtype_bytes}-byte values: "
        f"all_reduce {got['all_reduce']}, expected (2 x {config.num_hidden_layers} layers + 1 for the embedding) x "
        f"{config.hidden_size} x {dtype_bytes} = {want} (the tensor summed, whatever the number of ranks)")


@SETTINGS
@given(configs, st.integers(2, 16), st.sampled_from([1, 2, 4]))
def test_all_gather_per_sampled_token(impl, config, tp, dtype_bytes):
    """one gathered logits row per sampled token, counting the padding of the last vocabulary shard"""
    got = impl.comm_bytes_per_token(config, tp, dtype_bytes)["all_gather"]
    shard = -(-config.vocab_size // tp)
    want = shard * tp * dtype_bytes
    assert got == want, (
        f"vocabulary {config.vocab_size}, TP={tp}, {dtype_bytes}-byte logits: all_gather {got}, expected {tp} shards "
        f"of ceil({config.vocab_size} / {tp}) = {shard} rows x {dtype_bytes} bytes = {want}"
        + (" (the last shard is padded: count it whole)" if shard * tp != config.vocab_size else ""))


@SETTINGS
@given(configs, st.sampled_from([1, 2, 4]))
def test_one_rank_sends_nothing(impl, config, dtype_bytes):
    """tp_size 1: no collectives, both 0"""
    got = impl.comm_bytes_per_token(config, 1, dtype_bytes)
    assert got == {"all_reduce": 0, "all_gather": 0}, f"one rank has nothing to send; got {got}"


@pytest.mark.engine
def test_against_the_engine_counters(impl, tmp_path):
    """each step of a TP=2 engine sends tokens fed x all_reduce + tokens sampled x all_gather bytes
    (prefill chunks and decode steps, a fresh random model shape)"""
    from nanoinfer import LLM

    rng = random.Random()
    shape = dict(num_hidden_layers=rng.randint(1, 3), hidden_size=rng.choice([32, 64, 96]),
                 vocab_size=rng.randint(300, 700), intermediate_size=64, num_attention_heads=4, num_key_value_heads=2)
    path = make_tiny_checkpoint("llama", tmp_path, seed=rng.randrange(1000), **shape)
    config = SimpleNamespace(**shape)
    per_token = impl.comm_bytes_per_token(config, 2, 4)
    prompts = [[rng.randrange(shape["vocab_size"]) for _ in range(rng.randint(2, 50))] for _ in range(3)]
    params = SamplingParams(temperature=0.0, max_tokens=rng.randint(2, 6), ignore_eos=True)
    with LLM(str(path), max_model_len=128, num_kvcache_blocks=64, tensor_parallel_size=2,
             max_num_batched_tokens=rng.choice([40, 128])) as llm:  # (40: long prompts are prefilled in chunks)
        llm.generate(prompts, params, use_tqdm=False)
        steps = llm.step_timeline()
    for step in steps.itertuples():
        want = step.num_tokens * per_token["all_reduce"] + step.num_sampled * per_token["all_gather"]
        assert step.comm_bytes == want, (
            f"model {shape}, TP=2, float32: a {step.phase} step fed {step.num_tokens} tokens and sampled "
            f"{step.num_sampled}; the engine counted {step.comm_bytes} bytes, your numbers give "
            f"{step.num_tokens} x {per_token['all_reduce']} + {step.num_sampled} x {per_token['all_gather']} = {want}")
