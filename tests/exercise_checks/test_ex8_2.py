"""Exercise 8.2: per-channel int8 quantize and dequantize of a weight, on fresh random weights (all-zero rows,
outliers, bfloat16 included); wrong answers (a per-tensor scale, 8-bit asymmetric range, truncation) fail with a
message saying what was expected; selected, the function quantizes the real model's weights."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanoinfer import SamplingParams

SETTINGS = settings(max_examples=25, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def random_weight(seed: int, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
    """Rows at very different magnitudes (where one scale for all would fail), some all zero, some with one
    outlier a hundred times the rest."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * torch.exp(torch.randn(rows, 1, generator=g) * 3)
    kind = torch.randint(0, 5, (rows,), generator=g)
    w[kind == 0] = 0.0
    outliers = (kind == 1).nonzero().flatten()
    w[outliers, torch.randint(0, cols, (len(outliers),), generator=g)] *= 100.0
    return w.to(dtype)


def check_quantization(w: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, deq: torch.Tensor) -> None:
    """What a symmetric per-output-channel int8 quantization of w must satisfy (one message per broken rule)."""
    rows = w.shape[0]
    assert q.dtype == torch.int8 and q.shape == w.shape, f"q: expected int8 {tuple(w.shape)}, got {q.dtype} {tuple(q.shape)}"
    assert scale.shape == (rows,), f"scale: expected one per output row, shape ({rows},), got {tuple(scale.shape)}"
    assert scale.dtype == torch.float32, f"scale: expected float32, got {scale.dtype}"
    assert deq.dtype == torch.float32 and deq.shape == w.shape, (
        f"dequantize: expected float32 {tuple(w.shape)}, got {deq.dtype} {tuple(deq.shape)}")
    assert int(q.min()) >= -127 and int(q.max()) <= 127, (
        f"q must lie in [-127, 127] (symmetric, -128 unused), got [{int(q.min())}, {int(q.max())}]")
    assert torch.isfinite(scale).all() and (scale > 0).all(), (
        f"every scale must be finite and positive (an all-zero row too), got {scale[~(torch.isfinite(scale) & (scale > 0))][:4].tolist()}")
    wf = w.float()
    amax = wf.abs().amax(dim=1)
    nonzero = amax > 0
    expected = amax[nonzero] / 127
    bad = ~torch.isclose(scale[nonzero], expected, rtol=1e-5, atol=0)
    if bad.any():
        r = nonzero.nonzero().flatten()[bad][0].item()
        raise AssertionError(f"row {r}: expected scale = max|row| / 127 = {amax[r].item() / 127:.6g} (its own row's "
                             f"largest magnitude), got {scale[r].item():.6g}")
    zero_rows = ~nonzero
    assert (q[zero_rows] == 0).all(), "an all-zero row must quantize to q = 0"
    assert torch.equal(deq, q.float() * scale[:, None]), "dequantize(q, scale) must be q * scale, row by row, in float32"
    error = (wf - deq).abs()
    bound = scale[:, None] / 2 * (1 + 1e-5)  # (the float32 rounding of w / scale)
    if (error > bound).any():
        r, c = (error > bound).nonzero()[0].tolist()
        raise AssertionError(f"w[{r}, {c}] = {wf[r, c].item():.6g} came back as {deq[r, c].item():.6g}: expected an error "
                             f"of at most scale / 2 = {scale[r].item() / 2:.6g} (round to the nearest, not truncate), "
                             f"got {error[r, c].item():.6g}")


@SETTINGS
@given(st.integers(0, 2**31), st.integers(1, 40), st.integers(1, 300),
       st.sampled_from([torch.float32, torch.bfloat16]))
def test_quantize_within_half_a_step(impl, seed, rows, cols, dtype):
    """q int8 in [-127, 127], scale = max|row| / 127 per row, |w - dequantize(q, scale)| <= scale / 2"""
    w = random_weight(seed, rows, cols, dtype)
    q, scale = impl.quantize_per_channel(w.clone())
    check_quantization(w, q, scale, impl.dequantize(q, scale))


def per_tensor(w):  # one scale for the whole tensor: small rows lose their precision
    scale = w.float().abs().amax().clamp_min(1e-30) / 127
    return torch.round(w.float() / scale).to(torch.int8), scale.expand(w.shape[0]).clone()


def asymmetric_range(w):  # the full int8 range, scale max|row| / 128: +max overflows past 127
    scale = (w.float().abs().amax(dim=1) / 128).clamp_min(1e-30)
    return torch.round(w.float() / scale[:, None]).clamp(-128, 127).to(torch.int8), scale


def truncating(w):  # rounds toward zero: errs by up to a whole step
    scale = (w.float().abs().amax(dim=1) / 127).clamp_min(1e-30)
    return torch.trunc(w.float() / scale[:, None]).to(torch.int8), scale


@pytest.mark.parametrize("wrong, message", [(per_tensor, r"expected scale = max\|row\| / 127"),
                                            (asymmetric_range, r"must lie in \[-127, 127\]|expected scale ="),
                                            (truncating, "expected an error of at most scale / 2")])
def test_wrong_answers_are_caught(wrong, message):
    """The rules above reject a per-tensor scale, the asymmetric 8-bit range and truncation, saying what was expected."""
    w = random_weight(3, 16, 64, torch.float32)
    q, scale = wrong(w)
    with pytest.raises(AssertionError, match=message):
        check_quantization(w, q, scale, q.float() * scale[:, None])


@pytest.mark.engine
def test_quantizes_the_engine(impl, tiny_llm):
    """Selected, the function quantizes every linear layer of an int8 engine: the stored rows and scales are
    what it returns for the loaded weights, and greedy decoding runs on them."""
    from nanoinfer.layers.linear import LinearBase

    full = tiny_llm()
    llm = tiny_llm(quantization="int8")
    weights = {name: m.weight for name, m in full.engine.model_runner.model.named_modules() if isinstance(m, LinearBase)}
    quantized = {name: m for name, m in llm.engine.model_runner.model.named_modules() if isinstance(m, LinearBase)}
    assert weights.keys() == quantized.keys() and weights
    for name, module in quantized.items():
        q, scale = impl.quantize_per_channel(weights[name].clone())
        assert torch.equal(module.weight, q) and torch.equal(module.weight_scale, scale.float()), (
            f"{name}: the engine's int8 weight is not quantize_per_channel(its loaded weight)")
    out = llm.generate([[1, 2, 3, 4]], SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True), use_tqdm=False)
    assert len(out[0].token_ids) == 8
