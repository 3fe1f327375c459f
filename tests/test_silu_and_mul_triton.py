"""The SiLU-and-mul kernel (fast/silu_and_mul_triton.py) against the reference op (layers/activation.py) on fresh
random shapes and values, and its place in the engine. Without a GPU the kernel runs in Triton's interpreter
(conftest), which has no bfloat16: float32 and float16 there, bfloat16 on a GPU."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nanoinfer.fast.silu_and_mul_triton import BLOCK, silu_and_mul
from nanoinfer.layers.activation import silu_and_mul as reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
HALF = torch.bfloat16 if DEVICE == "cuda" else torch.float16


@settings(max_examples=12, deadline=None)
@given(rows=st.integers(0, 40), n=st.integers(1, 2 * BLOCK + 70), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([torch.float32, HALF]), lead=st.sampled_from([(), (3,)]))
def test_kernel_is_the_reference_op(rows, n, seed, dtype, lead):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(*lead, rows, 2 * n, generator=g) * 4).to(dtype).to(DEVICE)
    got = silu_and_mul(x)
    want = reference(x.clone())
    assert got.shape == (*lead, rows, n) and got.dtype == dtype
    # The reference rounds silu(gate) to the dtype, then the product: the same steps here, so at most the last
    # bit of each differs (exp and the division are not correctly rounded everywhere).
    tolerance = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    torch.testing.assert_close(got.float(), want.float(), rtol=tolerance, atol=tolerance,
                               msg=lambda m: f"expected silu(x[..., :{n}]) * x[..., {n}:] as the reference op: {m}")


def test_a_strided_input_is_read_as_its_values():
    x = torch.randn(8, 2 * 300).to(DEVICE)[:, :-2]  # rows 600 apart, 598 wide
    torch.testing.assert_close(silu_and_mul(x), reference(x.contiguous()), rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_the_engine_runs_it_in_every_mlp_on_a_gpu(tiny_qwen3):
    from nanoinfer import LLM
    from nanoinfer.layers.activation import SiluAndMul

    llm = LLM(str(tiny_qwen3), max_model_len=256, gpu_memory_utilization=0.3)
    activations = [m for m in llm.model_runner.model.modules() if isinstance(m, SiluAndMul)]
    assert activations and all(m.op is silu_and_mul for m in activations)
    assert llm.fast_paths().set_index("name").loc["Triton SiLU-and-mul", "applied"] == f"{len(activations)} MLPs"
    llm.shutdown()


def test_a_cpu_engine_keeps_the_reference(tiny_qwen3):
    from helpers import assert_cpu_engine_keeps_the_reference
    from nanoinfer.layers.activation import SiluAndMul

    assert_cpu_engine_keeps_the_reference(tiny_qwen3, SiluAndMul, silu_and_mul, "Triton SiLU-and-mul")
