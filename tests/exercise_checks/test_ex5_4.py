"""Exercise 5.4: a fused bias + GELU op compiled into one kernel, and the memory traffic it saves."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=25, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def unfused(x, bias):
    return F.gelu(x.double() + bias.double(), approximate="tanh")


@SETTINGS
@given(st.integers(0, 2**31), st.integers(1, 40), st.integers(1, 300), st.sampled_from([0.1, 1.0, 8.0]))
def test_matches_the_unfused_op(impl, seed, rows, width, scale):
    """gelu_tanh(x + bias) within float32 rounding of the unfused op (float64), any shape"""
    g = torch.Generator().manual_seed(seed)
    x, bias = torch.randn(rows, width, generator=g) * scale, torch.randn(width, generator=g)
    out = impl.fused_bias_gelu(x, bias)
    assert out.shape == x.shape and out.dtype == x.dtype, (
        f"returned {tuple(out.shape)} {out.dtype}, expected {tuple(x.shape)} {x.dtype}")
    err = (out.double() - unfused(x, bias)).abs().max().item()
    assert err < 1e-5 * max(1.0, scale), (f"[{rows}, {width}] x {scale}: max abs error {err:.2e} against "
                                          "F.gelu(x + bias, approximate='tanh') (did you use the tanh GELU?)")


def test_bfloat16_and_three_dimensions(impl):
    """bfloat16 in, bfloat16 out, [batch, tokens, width] inputs"""
    x, bias = torch.randn(2, 5, 64).bfloat16(), torch.randn(64).bfloat16()
    out = impl.fused_bias_gelu(x, bias)
    assert out.dtype == torch.bfloat16 and out.shape == x.shape, f"returned {tuple(out.shape)} {out.dtype}"
    err = (out.double() - unfused(x, bias)).abs().max().item()
    assert err < 0.05, f"bfloat16: max abs error {err:.3f} against the unfused op"


def test_one_generated_kernel(impl):
    """torch.compile generates exactly one kernel for it: the add and the GELU fused"""
    import torch._inductor.metrics as metrics

    x, bias = torch.randn(7, 48), torch.randn(48)
    impl.fused_bias_gelu(x, bias)  # compiled (if it is) at the first call
    torch._dynamo.reset()
    metrics.reset()
    impl.fused_bias_gelu(torch.randn(9, 80), torch.randn(80))
    kernels = metrics.generated_kernel_count
    assert kernels == 1, (f"torch.compile generated {kernels} kernels for one call; expected exactly 1 (0 means "
                          "nothing was compiled: wrap the add and the GELU in one torch.compile'd function)")


@SETTINGS
@given(st.integers(1, 10_000), st.integers(1, 20_000), st.sampled_from([1, 2, 4]))
def test_bytes_moved(impl, rows, width, dtype_bytes):
    """unfused: x, bias, sum written, sum read, output written; fused: x, bias, output"""
    n = rows * width
    want = {True: (2 * n + width) * dtype_bytes, False: (4 * n + width) * dtype_bytes}
    for fused in (True, False):
        got = impl.bias_gelu_bytes(rows, width, dtype_bytes, fused)
        assert got == want[fused], (
            f"[{rows}, {width}] x {dtype_bytes} bytes, fused={fused}: {got} bytes, expected {want[fused]} "
            f"({'read x and bias, write out' if fused else 'read x and bias, write the sum; read it, write out'})")
