"""Exercise 3.1: naive_attention against a float64 reference, and inside the engine."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import float64_attention

from nanoinfer import SamplingParams

SETTINGS = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])




@st.composite
def attention_inputs(draw):
    """Random shapes (grouped-query heads included) and a mask in which every query sees >= 1 key."""
    seed = draw(st.integers(0, 2**31))
    b, hkv, group = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    lq = draw(st.integers(1, 9))
    lk = lq + draw(st.integers(0, 12))
    d = draw(st.sampled_from([4, 8, 16, 32]))
    kind = draw(st.sampled_from(["causal", "random", "full"]))
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hkv * group, lq, d, generator=g)
    k = torch.randn(b, hkv, lk, d, generator=g)
    v = torch.randn(b, hkv, lk, d, generator=g)
    pos_q = torch.arange(lk - lq, lk).unsqueeze(1)  # query i sits at position lk - lq + i
    causal = torch.arange(lk).unsqueeze(0) <= pos_q
    if kind == "causal":
        mask = causal
    elif kind == "full":
        mask = torch.ones(lq, lk, dtype=torch.bool)
    else:
        mask = (torch.rand(lq, lk, generator=g) < 0.5) | (torch.arange(lk).unsqueeze(0) == pos_q)  # own position
    mask = mask.expand(b, 1, lq, lk).clone()
    scale = draw(st.sampled_from([d**-0.5, 0.1, 1.0]))
    return q, k, v, mask, scale, kind


def shapes(q, k, mask) -> str:
    return f"q {tuple(q.shape)}, k/v {tuple(k.shape)}, mask {tuple(mask.shape)}"


@SETTINGS
@given(attention_inputs())
def test_matches_reference(impl, inputs):
    """softmax(q k^T * scale, masked) v, with grouped-query heads"""
    q, k, v, mask, scale, kind = inputs
    out = impl.naive_attention(q, k, v, mask, scale)
    want = float64_attention(q, k, v, mask, scale)
    assert tuple(out.shape) == tuple(q.shape), f"output shape {tuple(out.shape)}, expected {tuple(q.shape)}"
    assert out.dtype == q.dtype, f"output dtype {out.dtype}, expected q's dtype {q.dtype}"
    err = (out.double() - want).abs().max().item()
    assert err < 1e-4, (f"{shapes(q, k, mask)}, {kind} mask, scale {scale:.3g}: max abs error {err:.2e} against "
                        "the reference (query head h uses KV head h // (H // Hkv); masked scores get -inf)")


def test_keeps_bfloat16(impl):
    """bfloat16 in, bfloat16 out, close to the float64 reference"""
    g = torch.Generator().manual_seed(random.randrange(2**31))
    q, k, v = (torch.randn(1, 4, 6, 16, generator=g) for _ in range(3))
    k, v = k[:, :2], v[:, :2]
    mask = torch.ones(1, 1, 6, 6, dtype=torch.bool).tril()
    out = impl.naive_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask, 0.25)
    assert out.dtype == torch.bfloat16, f"output dtype {out.dtype}, expected torch.bfloat16"
    err = (out.double() - float64_attention(q, k, v, mask, 0.25)).abs().max().item()
    assert err < 5e-2, f"bfloat16: max abs error {err:.3f} (compute the softmax in float32)"


@pytest.mark.engine
def test_in_the_engine(impl, tiny_llm):
    """attention_backend='naive' runs your function and gives the same greedy tokens as the default backend"""
    rng = random.Random()
    prompts = [[rng.randrange(512) for _ in range(rng.randint(2, 40))] for _ in range(3)]
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    want = [o.token_ids for o in tiny_llm(attention_backend="torch").generate(prompts, params, use_tqdm=False)]
    got = [o.token_ids for o in tiny_llm(attention_backend="naive").generate(prompts, params, use_tqdm=False)]
    assert got == want, f"attention_backend='naive' generated {got}, the torch backend {want}"
