"""The skinny-matmul kernels (fast/skinny_linear_triton.py: linears of up to 8 rows, and the MLP's gate/up product
fused with SiLU-and-mul) against a float32 torch reference, on fresh random shapes and values. Without a GPU they
run in Triton's interpreter (conftest), which has no bfloat16: float32 and float16 there, bfloat16 on a GPU."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import linear_inputs, relative_error
from nanoinfer.fast.skinny_linear_triton import KERNEL_MAX_ROWS, MAX_ROWS, block_config, linear, skinny_linear

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
HALF = torch.bfloat16 if DEVICE == "cuda" else torch.float16
# float32: accumulation order only. 16-bit: the output's own rounding (8 or 11 bits) dominates.
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def inputs(rows, n, k, dtype, seed, bias):
    return linear_inputs(rows, n, k, dtype, seed, bias, DEVICE)


@settings(max_examples=12, deadline=None)
@given(rows=st.integers(1, KERNEL_MAX_ROWS), n=st.integers(1, 70), k=st.integers(1, 300), seed=st.integers(0, 2**16),
       bias=st.booleans(), dtype=st.sampled_from([torch.float32, HALF]))
def test_skinny_linear_matches_float32(rows, n, k, seed, bias, dtype):
    x, w, b = inputs(rows, n, k, dtype, seed, bias)
    want = F.linear(x.float(), w.float(), None if b is None else b.float())  # the inputs as rounded, in float32
    got = skinny_linear(x, w, b)
    assert got.shape == (rows, n) and got.dtype == dtype
    assert relative_error(got, want) < TOLERANCE[dtype], f"{rows}x{k} @ {n}x{k}: expected F.linear's product"


@settings(max_examples=10, deadline=None)
@given(rows=st.integers(1, KERNEL_MAX_ROWS), half_n=st.integers(1, 40), k=st.integers(1, 200), seed=st.integers(0, 2**16),
       bias=st.booleans(), dtype=st.sampled_from([torch.float32, HALF]))
def test_gated_product_is_silu_of_gate_times_up(rows, half_n, k, seed, bias, dtype):
    x, w, b = inputs(rows, 2 * half_n, k, dtype, seed, bias)
    gate, up = F.linear(x.float(), w.float(), None if b is None else b.float()).chunk(2, dim=-1)
    want = F.silu(gate) * up
    got = skinny_linear(x, w, b, gated=True)
    assert got.shape == (rows, half_n)
    assert relative_error(got, want) < TOLERANCE[dtype], "expected silu(x @ gate.T) * (x @ up.T), gate rows first"


def test_more_rows_go_to_cublas_and_the_kernel_refuses_what_it_cannot_hold(monkeypatch):
    import nanoinfer.fast.skinny_linear_triton as skinny

    x, w, _ = inputs(KERNEL_MAX_ROWS + 1, 24, 40, torch.float32, 0, False)
    calls = []
    monkeypatch.setattr(skinny, "skinny_linear", lambda *a, **k: calls.append(a[0].shape[0]) or F.linear(*a))
    for rows in (MAX_ROWS, MAX_ROWS + 1):
        assert relative_error(linear(x[:rows], w), F.linear(x[:rows], w)) < 1e-6
    assert calls == [MAX_ROWS], "up to MAX_ROWS rows go to the kernel, more to cuBLAS"
    monkeypatch.undo()
    with pytest.raises(ValueError, match=f"at most {KERNEL_MAX_ROWS} rows"):
        skinny_linear(x, w)


def test_leading_dimensions_and_strided_rows():
    x, w, b = inputs(6, 33, 50, torch.float32, 3, True)
    assert skinny_linear(x.reshape(2, 3, 50), w, b).shape == (2, 3, 33)
    wide = torch.zeros(6, 80, device=DEVICE)
    wide[:, :50] = x
    assert relative_error(skinny_linear(wide[:, :50], w, b), F.linear(x, w, b)) < 1e-5


@pytest.mark.parametrize("gated", [False, True])
def test_block_config_keeps_the_gpu_busy(gated):
    for rows in range(1, 9):
        for n, k in ((1024, 2048), (4096, 1024), (3072, 1024), (2048, 8192), (14336, 4096)):
            block_n, block_k, warps = block_config(rows, n, k, gated)
            assert n // block_n >= 128, f"{n} outputs in blocks of {block_n}: too few programs for 132 SMs"
            # (one row: 4 rows of W of up to 4,096 columns were the fastest tile in h200_skinny_sweep.json)
            tile = rows * block_n * block_k * (2 if gated else 1)
            assert tile <= 16384, f"a tile of {tile} products would spill registers"


@settings(max_examples=10, deadline=None)
@given(rows=st.integers(1, KERNEL_MAX_ROWS), n=st.integers(1, 40), k=st.integers(2, 300), seed=st.integers(0, 2**16),
       with_residual=st.booleans(), gated=st.booleans(), dtype=st.sampled_from([torch.float32, HALF]))
def test_norm_inside_the_matmul_matches_rms_norm_then_the_product(rows, n, k, seed, with_residual, gated, dtype):
    from nanoinfer.layers.layernorm import RMSNorm, rms_norm

    x, w, _ = inputs(rows, 2 * n if gated else n, k, dtype, seed, False)
    residual = inputs(rows, 1, k, dtype, seed + 1, False)[0] if with_residual else None
    norm = RMSNorm(k, eps=1e-6).to(DEVICE, dtype)
    norm.weight.data.uniform_(0.5, 1.5)  # away from 1, so that a missed multiply shows
    normed, want_residual = rms_norm(x, norm.weight, norm.eps, residual) if with_residual else (
        rms_norm(x, norm.weight, norm.eps), x)
    want = F.linear(normed.float(), w.float())
    if gated:
        gate, up = want.chunk(2, dim=-1)
        want = F.silu(gate) * up
    got, got_residual = skinny_linear(x, w, gated=gated, norm=norm, residual=residual)
    assert torch.equal(got_residual, want_residual), "the next residual is x + residual, rounded to the dtype"
    assert relative_error(got, want) < 2 * TOLERANCE[dtype], "expected the product of rms_norm(x + residual)"


def test_fused_decode_layers_give_the_reference_tokens(tiny_qwen3):
    """The whole batch-1 path (norms inside the matmuls, gate/up with SiLU, the other linears) patched into a CPU
    engine as the fast path patches a GPU one, in Triton's interpreter: the reference engine's tokens and logits."""
    from helpers import generate_with_logits

    from nanoinfer import LLM, SamplingParams
    from nanoinfer.fast import _use_skinny_matmuls

    if DEVICE == "cuda":
        pytest.skip("the GPU engines apply the fast path themselves (tests/test_gpu.py)")
    knobs = dict(max_model_len=64, pack_cpu_weights=False, cpu_small_ops=False, attention_backend="torch")
    fused, reference = LLM(str(tiny_qwen3), **knobs), LLM(str(tiny_qwen3), **knobs)
    layers = fused.engine.hf_config.num_hidden_layers
    assert _use_skinny_matmuls(fused.model_runner.model) == (
        f"{4 * layers} linears, gate/up + SiLU in {layers} MLPs, norms in {layers} layers (rows <= {MAX_ROWS})")
    params = SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True)
    prompt = [[5, 9, 2, 7, 1, 3]]
    tokens, logits = generate_with_logits(fused, prompt, params)
    ref_tokens, ref_logits = generate_with_logits(reference, prompt, params)
    assert tokens == ref_tokens
    assert all(relative_error(a, b.float()) < 1e-4 for i in logits for a, b in zip(logits[i], ref_logits[i]))
