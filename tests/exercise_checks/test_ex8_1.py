"""Exercise 8.1: speculative sampling's accept/reject step, against the rule written out row by row on fresh
random batches, by the distribution of the tokens it emits (chi-square), and in the engine."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanoinfer import SamplingParams
from nanoinfer.workbook.spec_stats import worst_p_value

SETTINGS = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def by_hand(p, q, d, n, u, e):
    """The rule for one row, the slow way: accept while u * q(d) < p(d), then the residual or bonus draw."""
    for i in range(n):
        if not u[i] * q[i, d[i]] < p[i, d[i]]:
            return i, int(((p[i] - q[i]).clamp_min(0) / e).argmax())
    return n, int((p[n] / e).argmax())


@st.composite
def batches(draw):
    seed = draw(st.integers(0, 2**31))
    B, k, V = draw(st.integers(1, 6)), draw(st.integers(1, 5)), draw(st.integers(2, 40))
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(B, k + 1, V, generator=g) ** 3
    q = torch.rand(B, k, V, generator=g) ** 3
    if draw(st.booleans()):  # greedy rows: one-hot target, one-hot draft
        p = torch.nn.functional.one_hot(p.argmax(-1), V).float()
        q = torch.nn.functional.one_hot(q.argmax(-1), V).float()
    p, q = p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)
    d = torch.stack([torch.stack([torch.multinomial(q[b, i], 1, generator=g)[0] for i in range(k)])
                     for b in range(B)])
    if draw(st.booleans()):  # some drafts that the target likes: long accepted prefixes happen too
        d = torch.where(torch.rand(B, k, generator=g) < 0.5, p[:, :k].argmax(-1), d)
    n = torch.randint(0, k + 1, (B,), generator=g)
    return p, q, d, n, torch.rand(B, k, generator=g), torch.empty(B, V).exponential_(generator=g)


@SETTINGS
@given(batch=batches())
def test_matches_the_rule_row_by_row(impl, batch):
    p, q, d, n, u, e = batch
    accepted, token = impl.rejection_sample(p, q, d, n, u, e)
    assert accepted.shape == token.shape == (p.shape[0],), "expected two tensors of shape [B]"
    for b in range(p.shape[0]):
        want = by_hand(p[b], q[b], d[b], int(n[b]), u[b], e[b])
        assert (int(accepted[b]), int(token[b])) == want, (
            f"row {b} (num_drafts={int(n[b])}, drafts={d[b].tolist()}): expected (accepted, next token) = {want}, "
            f"got {(int(accepted[b]), int(token[b]))}; accept d_i while uniforms[i] * q_i(d_i) < p_i(d_i), stop at "
            "the first rejection, never past num_drafts; then argmax(max(0, p_i - q_i) / noise) after a rejection, "
            "argmax(p_n / noise) when all n were accepted")


@pytest.mark.parametrize("seed", [11, 12])
def test_emits_the_target_distribution(impl, seed):
    """40,000 rows: the tokens emitted at every position follow the target's p (chi-square, p-value > 1e-4)."""
    p_value = worst_p_value(impl.rejection_sample, seed)
    assert p_value > 1e-4, (f"the emitted tokens are not distributed as the target's p (chi-square p-value "
                            f"{p_value:.2g}): the output of speculative sampling must be distributed exactly as the "
                            "target's; check the acceptance probability min(1, p/q) and the residual max(0, p - q)")


@pytest.mark.engine
def test_in_the_engine(tiny_llm):
    """Greedy output with prompt lookup is the output without it; sampled requests with a seed repeat."""
    prompts = [[5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5, 6, 7], [1, 2, 3, 1, 2, 3, 1, 2]]
    greedy = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    plain = [o.token_ids for o in tiny_llm().generate(prompts, greedy, use_tqdm=False)]
    llm = tiny_llm(speculative_config={"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 1})
    outs = llm.generate(prompts, greedy, use_tqdm=False)
    assert [o.token_ids for o in outs] == plain, "greedy output with speculation should equal plain decoding"
    assert sum(o.metrics.num_accepted_tokens for o in outs) > 0, "expected some accepted drafts on these prompts"
    seeded = SamplingParams(temperature=1.0, max_tokens=24, ignore_eos=True, seed=3)
    runs = [[o.token_ids for o in llm.generate(prompts, seeded, use_tqdm=False)] for _ in range(2)]
    assert runs[0] == runs[1], "a seeded sampled request should give the same tokens twice"
