"""The C versions of RMSNorm, rotary and SiLU-and-multiply (fast/small_ops_cpu.c) against float64
references on fresh random inputs, their fallbacks to torch, and how the engine picks them."""

import pytest
import torch
import torch.nn.functional as F

from nanoinfer.fast import small_ops_cpu

pytestmark = pytest.mark.skipif(small_ops_cpu.load_small_ops() is None, reason="no C compiler")

ROWS = [1, 7, 32, 300]  # 300 rows cross the size where the loops go multi-threaded


def float64_rms_norm(x, weight, eps):
    x = x.double()
    return weight.double() * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("hidden", [64, 576, 100])
def test_rms_norm_with_and_without_residual(rows, hidden):
    g = torch.Generator().manual_seed(rows * hidden)
    x, residual = torch.randn(rows, hidden, generator=g), torch.randn(rows, hidden, generator=g)
    weight = torch.randn(hidden, generator=g)
    torch.testing.assert_close(small_ops_cpu.rms_norm(x, weight, 1e-5).double(), float64_rms_norm(x, weight, 1e-5),
                               rtol=1e-5, atol=1e-5)
    out, total = small_ops_cpu.rms_norm(x, weight, 1e-5, residual)
    assert torch.equal(total, x + residual)  # one float32 add: exact
    torch.testing.assert_close(out.double(), float64_rms_norm(x + residual, weight, 1e-5), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", ROWS)
def test_rms_norm_per_head_on_a_strided_view_of_qkv(rows):
    """Qwen3 normalises each head of q and k, which are views into the fused qkv output."""
    g = torch.Generator().manual_seed(rows)
    qkv = torch.randn(rows, 24 * 128, generator=g)
    q = qkv[:, 4 * 128 : 20 * 128].view(rows, 16, 128)  # rows 24 * 128 floats apart, starting at an offset
    weight = torch.randn(128, generator=g)
    out = small_ops_cpu.rms_norm(q, weight, 1e-6)
    assert out.shape == q.shape and out.is_contiguous()
    torch.testing.assert_close(out.double(), float64_rms_norm(q, weight, 1e-6), rtol=1e-5, atol=1e-5)


def test_rms_norm_of_extreme_rows_matches_float64():
    """Squares that overflow or underflow float32: the C loop sums them in double (torch's float32 path
    gives 0 or inf here)."""
    x = torch.tensor([[1e20] * 8, [1e-30] * 8, [2e19, -3e19, 1.0, 0.0] * 2, [0.0] * 8])
    weight = torch.randn(8)
    for eps in (1e-6, 0.0):
        expected = float64_rms_norm(x, weight, eps)
        torch.testing.assert_close(small_ops_cpu.rms_norm(x, weight, eps).double(), expected, equal_nan=True)


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("heads,head_dim", [(9, 64), (4, 128), (3, 32)])
def test_rotary_on_a_strided_view_of_qkv(rows, heads, head_dim):
    g = torch.Generator().manual_seed(rows + heads)
    qkv = torch.randn(rows, (heads + 2) * head_dim, generator=g)
    q = qkv[:, : heads * head_dim].view(rows, heads, head_dim)  # rows are (heads + 2) * head_dim apart
    angles = torch.rand(rows, head_dim // 2, generator=g) * 100
    cos, sin = torch.cat((angles.cos(), angles.sin()), dim=-1).chunk(2, dim=-1)  # strided, as the engine's
    out = small_ops_cpu.apply_rotary(q, cos, sin)
    a, b = q.double().chunk(2, dim=-1)
    c, s = cos.double().unsqueeze(1), sin.double().unsqueeze(1)
    torch.testing.assert_close(out.double(), torch.cat((a * c - b * s, b * c + a * s), dim=-1), rtol=1e-5, atol=1e-5)
    assert out.is_contiguous()


@pytest.mark.parametrize("rows", ROWS)
def test_silu_and_mul(rows):
    g = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 2 * 1536, generator=g) * 6
    x[:, :24] = torch.tensor([-1e4, -100, -90, -88.8, -88.7, -50, -20, -1e-3, 0, 1e-3, 20, 50, 88.7, 88.8, 90, 100,
                              1e4, -1e6, 1e6, -87, 87, -3e4, 3e4, -0.0])  # where exp over- or underflows
    gate, up = x.double().chunk(2, dim=-1)
    out = small_ops_cpu.silu_and_mul(x)
    assert not out.isnan().any()
    torch.testing.assert_close(out.double(), F.silu(gate) * up, rtol=1e-5, atol=1e-5)


def test_what_the_loops_do_not_cover_goes_to_torch():
    from solutions.phase5_models import apply_rotary, rms_norm

    x, w = torch.randn(4, 64, dtype=torch.bfloat16), torch.randn(64, dtype=torch.bfloat16)
    assert torch.equal(small_ops_cpu.rms_norm(x, w, 1e-5), rms_norm(x, w, 1e-5))
    wide = torch.randn(4, 128)[:, ::2]  # not contiguous
    assert torch.equal(small_ops_cpu.rms_norm(wide, torch.ones(64), 1e-5), rms_norm(wide, torch.ones(64), 1e-5))
    q = torch.randn(3, 2, 2, 64).transpose(1, 2)[:, 0]  # heads not adjacent within a token
    cos, sin = torch.randn(3, 32), torch.randn(3, 32)
    assert torch.equal(small_ops_cpu.apply_rotary(q, cos, sin), apply_rotary(q, cos, sin))
    odd = torch.randn(2, 7)
    with pytest.raises(RuntimeError):  # the torch version's own complaint about an odd width
        small_ops_cpu.silu_and_mul(odd)


def test_the_engine_uses_c_only_where_the_reference_runs(tiny_llama):
    from nanoinfer import LLM, use_exercises
    from nanoinfer.layers.activation import SiluAndMul, silu_and_mul
    from nanoinfer.layers.layernorm import RMSNorm, rms_norm
    from nanoinfer.layers.rotary_embedding import RotaryEmbedding, apply_rotary

    def ops(llm, cls):
        return {m.op for m in llm.model_runner.model.modules() if isinstance(m, cls)}

    with LLM(tiny_llama, num_kvcache_blocks=32) as llm:
        assert ops(llm, RMSNorm) == {small_ops_cpu.rms_norm}
        assert ops(llm, RotaryEmbedding) == {small_ops_cpu.apply_rotary}
        assert ops(llm, SiluAndMul) == {small_ops_cpu.silu_and_mul}
    with LLM(tiny_llama, num_kvcache_blocks=32, cpu_small_ops=False) as llm:
        assert ops(llm, RMSNorm) == {rms_norm}
        assert ops(llm, RotaryEmbedding) == {apply_rotary}
        assert ops(llm, SiluAndMul) == {silu_and_mul}
    with use_exercises("5.1"):
        with LLM(tiny_llama, num_kvcache_blocks=32) as llm:
            import exercises.phase5_models as learner

            assert ops(llm, RMSNorm) == {learner.rms_norm}  # the learner's code is what runs
            assert ops(llm, RotaryEmbedding) == {small_ops_cpu.apply_rotary}
            assert "Exercise(s) 5.1 selected" in llm.fast_paths().reason.str.cat()


def test_without_a_compiler_the_model_keeps_torch_ops(monkeypatch, tiny_llama):
    from nanoinfer import LLM
    from nanoinfer.layers.layernorm import RMSNorm, rms_norm

    monkeypatch.setenv("CC", "/nonexistent/cc")
    small_ops_cpu.load_small_ops.cache_clear()
    try:
        with LLM(tiny_llama, num_kvcache_blocks=32, attention_backend="torch") as llm:
            norms = {m.op for m in llm.model_runner.model.modules() if isinstance(m, RMSNorm)}
            paths = llm.fast_paths().set_index("name")
        assert norms == {rms_norm} and paths.loc["C small ops", "applied"] == ""
        x = torch.randn(2, 64)
        assert torch.equal(small_ops_cpu.rms_norm(x, torch.ones(64), 1e-5), rms_norm(x, torch.ones(64), 1e-5))
    finally:
        small_ops_cpu.load_small_ops.cache_clear()


def test_loading_the_library_keeps_subnormal_floats():
    """Linked with -ffast-math, a library switches the process to flush-to-zero when it loads."""
    import numpy as np

    assert small_ops_cpu.load_small_ops() is not None
    assert np.float32(1e-39) / np.float32(2) != 0
    assert (torch.tensor(1e-39) / 2).item() != 0
