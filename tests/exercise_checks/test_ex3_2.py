"""Exercise 3.2: gumbel_max_sample: greedy rows, the exact token for given noise, and the distribution."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, float]:
    """Pearson's chi-square statistic and its p-value (upper tail, len - 1 degrees of freedom)."""
    expected = probs.double() * counts.sum()
    stat = ((counts.double() - expected) ** 2 / expected).sum()
    dof = torch.tensor(len(counts) - 1, dtype=torch.float64)
    return stat.item(), torch.special.gammaincc(dof / 2, stat / 2).item()


@st.composite
def batches(draw):
    seed = draw(st.integers(0, 2**31))
    b, vocab = draw(st.integers(1, 8)), draw(st.integers(2, 50))
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, vocab, generator=g) * draw(st.sampled_from([0.5, 2.0, 5.0]))
    temps = torch.tensor([draw(st.sampled_from([0.0, 0.3, 1.0, 1.7])) for _ in range(b)])
    noise = torch.empty(b, vocab).exponential_(generator=g)
    return logits, temps, noise


@SETTINGS
@given(batches())
def test_returns_the_gumbel_max_token(impl, batch):
    """temperature 0: argmax(logits); otherwise argmax(softmax(logits / T) / noise), for the noise given"""
    logits, temps, noise = batch
    tokens = impl.gumbel_max_sample(logits.clone(), temps.clone(), noise.clone())
    assert tuple(tokens.shape) == (len(logits),), f"returned shape {tuple(tokens.shape)}, expected ({len(logits)},)"
    assert not tokens.is_floating_point(), f"return integer token ids, got dtype {tokens.dtype}"
    for row, (token, t) in enumerate(zip(tokens.tolist(), temps.tolist())):
        if t == 0:
            score = logits[row].double()
            rule = "argmax(logits) (temperature 0 is greedy: ignore the noise)"
        else:
            score = torch.softmax(logits[row].double() / t, -1) / noise[row].double()
            rule = f"argmax(softmax(logits / {t}) / noise)"
        best = score.max().item()
        assert score[token].item() >= best - 1e-6 * abs(best), (
            f"row {row} (temperature {t}): picked token {token}, expected token {int(score.argmax())} = {rule}")


def test_is_a_function_of_its_inputs(impl):
    """the same inputs give the same tokens: all the randomness is in `noise`"""
    g = torch.Generator().manual_seed(random.randrange(2**31))
    logits, noise = torch.randn(16, 30, generator=g), torch.empty(16, 30).exponential_(generator=g)
    temps = torch.full((16,), 0.8)
    a = impl.gumbel_max_sample(logits, temps, noise)
    b = impl.gumbel_max_sample(logits, temps, noise)
    assert torch.equal(a, b), "two calls with the same logits, temperatures and noise gave different tokens"


@pytest.mark.parametrize("case", range(3))
def test_distribution_is_softmax(impl, case):
    """20000 draws of one row: token frequencies match softmax(logits / T) (chi-square test)"""
    rng = random.Random()
    vocab, t, n = rng.randint(3, 8), rng.choice([0.5, 1.0, 2.0]), 20_000
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    row = torch.randn(vocab, generator=g) * 1.5
    noise = torch.empty(n, vocab).exponential_(generator=g)
    tokens = impl.gumbel_max_sample(row.expand(n, vocab).clone(), torch.full((n,), t), noise)
    counts = torch.bincount(tokens.long(), minlength=vocab)[:vocab]
    probs = torch.softmax(row.double() / t, -1)
    stat, p = chi_square_p_value(counts, probs)
    assert p > 1e-6, (f"temperature {t}: frequencies {(counts / n).numpy().round(3)} vs softmax(logits / T) "
                      f"{probs.numpy().round(3)}: chi-square {stat:.1f} with {vocab - 1} d.o.f., p = {p:.1e}")
