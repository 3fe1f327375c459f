"""Exercise 5.3: GemmaForCausalLM in the engine, against transformers' own Gemma on fresh tiny random weights."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import hf_greedy, hf_model, hf_next_token_logits, make_tiny_checkpoint, relative_error

SETTINGS = settings(max_examples=3, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_builds_a_tied_model(impl, tmp_path):
    """the class builds from a Gemma config, with the LM head tied to the embedding"""
    from transformers import AutoConfig

    path = make_tiny_checkpoint("gemma", tmp_path, num_hidden_layers=1)
    model = impl.GemmaForCausalLM(AutoConfig.from_pretrained(path))
    assert model.lm_head.weight is model.model.embed_tokens.weight, (
        "Gemma ties its LM head to the token embedding: lm_head.weight should be model.embed_tokens.weight")


@pytest.mark.engine
@SETTINGS
@given(st.integers(0, 2**31), st.sampled_from([(64, 4, 2, 32), (96, 6, 3, 16), (48, 2, 1, 64)]))
def test_logits_and_greedy_tokens_match_transformers(impl, engine_code, tmp_path_factory, seed, shape):
    """logits within 1e-4 and the same greedy tokens as transformers, prompts of mixed lengths"""
    from nanoinfer import LLM, SamplingParams

    hidden, heads, kv_heads, head_dim = shape
    path = make_tiny_checkpoint("gemma", tmp_path_factory.mktemp("gemma"), seed=seed % 1000, hidden_size=hidden,
                                num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim)
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(0, 512, (n,), generator=g).tolist() for n in (3, 17, 40, 70)]
    with engine_code():
        llm = LLM(str(path), max_model_len=256, num_kvcache_blocks=64, max_num_batched_tokens=64)
    built = type(llm.model_runner.model)
    assert built.__name__ == "GemmaForCausalLM" and built.__module__ == impl.GemmaForCausalLM.__module__, (
        f"the engine built {built.__module__}.{built.__name__}, not the class under test")
    reference = hf_model(path)
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    with llm.trace(logits=True) as trace:
        outputs = llm.generate(prompts, params, use_tqdm=False)
    expected_tokens = hf_greedy(reference, prompts, 12)
    expected_logits = hf_next_token_logits(reference, prompts)
    first = {}
    for event in trace:
        if event.kind == "sampled":
            for row, seq_id in enumerate(event.data["seq_ids"]):
                first.setdefault(seq_id, event.data["logits"][row])
    for i, prompt in enumerate(prompts):
        err = relative_error(first[i], expected_logits[i])
        assert err < 1e-4, (f"hidden {hidden}, {heads} heads of {head_dim}: next-token logits after a "
                            f"{len(prompt)}-token prompt differ from transformers' by {err:.2e} (relative; "
                            "expected < 1e-4). Check the 1 + weight norms, the GELU (tanh) gate and the "
                            "sqrt(hidden_size) embedding scale")
        assert outputs[i].token_ids == expected_tokens[i], (
            f"prompt {i}: greedy tokens {outputs[i].token_ids} differ from transformers' {expected_tokens[i]}")
