"""Exercise 5.1: rms_norm, with and without the fused residual add."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def reference(x, weight, eps):
    x = x.double()
    return weight.double() * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


@st.composite
def cases(draw):
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    shape = (draw(st.integers(1, 6)), draw(st.sampled_from([1, 8, 64, 100])))
    x = torch.randn(*shape, generator=g) * draw(st.sampled_from([1e-3, 1.0, 30.0]))
    residual = torch.randn(*shape, generator=g)
    weight = torch.rand(shape[-1], generator=g) + 0.5
    eps = draw(st.sampled_from([1e-6, 1e-5, 1e-2]))
    return x, residual, weight, eps


@SETTINGS
@given(cases())
def test_plain(impl, case):
    """no residual: weight * x / sqrt(mean(x^2) + eps), one tensor"""
    x, _, weight, eps = case
    out = impl.rms_norm(x.clone(), weight, eps)
    assert isinstance(out, torch.Tensor), f"without residual return a tensor, got {type(out).__name__}"
    err = (out.double() - reference(x, weight, eps)).abs().max().item()
    assert err < 1e-4, f"x {tuple(x.shape)}, eps {eps}: max abs error {err:.2e} against weight * x / rms(x)"


@SETTINGS
@given(cases())
def test_with_residual(impl, case):
    """with residual: (norm(x + residual), x + residual)"""
    x, residual, weight, eps = case
    out = impl.rms_norm(x.clone(), weight, eps, residual.clone())
    assert isinstance(out, tuple) and len(out) == 2, "with residual return a tuple (normed, new residual)"
    normed, new_residual = out
    assert torch.allclose(new_residual, x + residual), "the second item must be x + residual (the next residual)"
    err = (normed.double() - reference(x + residual, weight, eps)).abs().max().item()
    assert err < 1e-4, f"x {tuple(x.shape)}: norm(x + residual) is off by {err:.2e}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(impl, dtype):
    """16-bit input: 16-bit output, close to the float64 result (mean of squares taken in float32)"""
    x = torch.randn(4, 256) * 100
    weight = torch.rand(256) + 0.5
    out = impl.rms_norm(x.to(dtype), weight.to(dtype), 1e-6)
    assert out.dtype == dtype, f"output dtype {out.dtype}, expected {dtype}"
    err = ((out.double() - reference(x.to(dtype), weight.to(dtype), 1e-6)).abs().max()).item()
    assert err < 0.05, f"{dtype}: max abs error {err:.3f}; compute x^2 and its mean in float32"
