"""The RMSNorm kernel (fast/rms_norm_triton.py) against the reference op (layers/layernorm.py) on fresh random
shapes and values, and its place in the engine. Without a GPU the kernel runs in Triton's interpreter (conftest),
which has no bfloat16: float32 and float16 there, bfloat16 on a GPU."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nanoinfer.fast.rms_norm_triton import rms_norm
from nanoinfer.layers.layernorm import rms_norm as reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
HALF = torch.bfloat16 if DEVICE == "cuda" else torch.float16
# Both round x + residual alike (exactly equal); the mean of squares is summed in another order, so the
# normalised row, rounded to the dtype, may differ in its last bit, and the product with the weight after it.
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@settings(max_examples=12, deadline=None)
@given(rows=st.integers(0, 40), hidden=st.integers(1, 1100), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([torch.float32, HALF]), lead=st.sampled_from([(), (3,)]), with_residual=st.booleans())
def test_kernel_is_the_reference_op(rows, hidden, seed, dtype, lead, with_residual):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(*lead, rows, hidden, generator=g) * 3).to(dtype).to(DEVICE)
    residual = (torch.randn(*lead, rows, hidden, generator=g) * 3).to(dtype).to(DEVICE) if with_residual else None
    weight = (torch.rand(hidden, generator=g) + 0.5).to(dtype).to(DEVICE)
    got = rms_norm(x, weight, 1e-6, residual)
    want = reference(x.clone(), weight, 1e-6, residual.clone() if with_residual else None)
    if with_residual:
        assert torch.equal(got[1], want[1]), "expected x + residual rounded to the dtype as the next residual"
        got, want = got[0], want[0]
    assert got.shape == x.shape and got.dtype == dtype
    torch.testing.assert_close(got.float(), want.float(), rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype],
                               msg=lambda m: f"expected weight * x / rms(x) as the reference op: {m}")


def test_strided_rows_and_a_float32_weight_are_read_as_the_reference_reads_them():
    x = torch.randn(6, 2 * 96).to(HALF).to(DEVICE)[:, ::2]  # every other column: a copy, not a view
    rows = torch.randn(5, 300).to(HALF).to(DEVICE)[:, :96]  # rows 300 apart
    weight = torch.rand(96).to(DEVICE) + 0.5  # float32: the product is float32, as torch promotes it
    for t in (x, rows):
        got, want = rms_norm(t, weight, 1e-5), reference(t, weight, 1e-5)
        assert got.dtype == want.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=TOLERANCE[HALF], atol=TOLERANCE[HALF])


def test_a_weight_of_another_width_is_refused_before_any_work():
    with pytest.raises(ValueError, match="weight must have the rows' 8 entries"):
        rms_norm(torch.randn(2, 8).to(DEVICE), torch.ones(9).to(DEVICE), 1e-6)


@pytest.mark.gpu
def test_the_engine_runs_it_in_every_norm_on_a_gpu(tiny_qwen3):
    from nanoinfer import LLM
    from nanoinfer.layers.layernorm import RMSNorm

    llm = LLM(str(tiny_qwen3), max_model_len=256, gpu_memory_utilization=0.3)
    norms = [m for m in llm.model_runner.model.modules() if isinstance(m, RMSNorm)]
    assert len(norms) > 2 * llm.engine.hf_config.num_hidden_layers and all(m.op is rms_norm for m in norms)
    assert llm.fast_paths().set_index("name").loc["Triton RMSNorm", "applied"] == f"{len(norms)} norms"
    llm.shutdown()


def test_a_cpu_engine_keeps_the_reference(tiny_qwen3):
    from helpers import assert_cpu_engine_keeps_the_reference
    from nanoinfer.layers.layernorm import RMSNorm

    assert_cpu_engine_keeps_the_reference(tiny_qwen3, RMSNorm, rms_norm, "Triton RMSNorm")
