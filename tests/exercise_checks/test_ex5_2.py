"""Exercise 5.2: apply_rotary, the rotate-half rotary embedding."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def angles(positions: torch.Tensor, head_dim: int, base: float = 10000.0):
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    theta = positions.double().unsqueeze(1) * inv_freq
    return theta.cos().float(), theta.sin().float()


def reference(x, cos, sin):
    half = x.shape[-1] // 2
    a, b = x[..., :half].double(), x[..., half:].double()
    c, s = cos.double().unsqueeze(1), sin.double().unsqueeze(1)
    return torch.cat((a * c - b * s, b * c + a * s), dim=-1)


@st.composite
def cases(draw):
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    tokens, heads, head_dim = draw(st.integers(1, 12)), draw(st.integers(1, 4)), draw(st.sampled_from([2, 8, 32, 64]))
    x = torch.randn(tokens, heads, head_dim, generator=g)
    positions = torch.randint(0, 4096, (tokens,), generator=g)
    return x, positions


@SETTINGS
@given(cases())
def test_matches_rotate_half(impl, case):
    """pair (x[i], x[i + d/2]) -> (a cos - b sin, b cos + a sin)"""
    x, positions = case
    cos, sin = angles(positions, x.shape[-1])
    out = impl.apply_rotary(x.clone(), cos, sin)
    assert tuple(out.shape) == tuple(x.shape), f"output shape {tuple(out.shape)}, expected {tuple(x.shape)}"
    err = (out.double() - reference(x, cos, sin)).abs().max().item()
    assert err < 1e-4, (f"x {tuple(x.shape)}: max abs error {err:.2e}; dimension i pairs with i + head_dim/2, "
                        "(a, b) -> (a cos - b sin, b cos + a sin)")


@SETTINGS
@given(st.integers(0, 2000), st.integers(0, 2000), st.integers(0, 500), st.integers(0, 2**31))
def test_scores_depend_on_distance_only(impl, m, n, shift, seed):
    """<rot(q, m), rot(k, n)> == <rot(q, m + s), rot(k, n + s)>: attention sees relative positions"""
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(1, 1, 32, generator=g), torch.randn(1, 1, 32, generator=g)

    def score(pm, pn):
        cq, sq = angles(torch.tensor([pm]), 32)
        ck, sk = angles(torch.tensor([pn]), 32)
        return (impl.apply_rotary(q, cq, sq).double() * impl.apply_rotary(k, ck, sk).double()).sum().item()

    a, b = score(m, n), score(m + shift, n + shift)
    assert abs(a - b) < 1e-3 * max(1.0, abs(a)), (
        f"q.k at positions ({m}, {n}) is {a:.5f} but at ({m + shift}, {n + shift}) it is {b:.5f}: a rotation "
        "by position should leave scores depending on the distance only")
