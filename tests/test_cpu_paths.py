"""CPU-only fast paths against references: packed-weight matrix products (layers/cpu_packed.py) against
float64, and the row-chunked prefill MLP (models/llama.py) against the whole-batch one."""

import pytest
import torch

from nanoinfer.layers import cpu_packed

pytestmark = pytest.mark.skipif(not cpu_packed.packing_available(), reason="this torch build has no oneDNN")


@pytest.mark.parametrize("rows", [1, 3, 4, 7, 32, 100, 512, 513])
@pytest.mark.parametrize("with_bias", [False, True])
def test_packed_linear_matches_float64(rows, with_bias):
    g = torch.Generator().manual_seed(rows)
    weight = torch.randn(200, 96, generator=g)
    bias = torch.randn(200, generator=g) if with_bias else None
    x = torch.randn(rows, 96, generator=g)
    packed = cpu_packed.pack_weight(weight)
    assert packed is not None
    out = cpu_packed.linear(x, weight, bias, packed)
    ref = x.double() @ weight.double().T + (bias.double() if with_bias else 0)
    assert out.shape == (rows, 200) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-4)


def test_only_float32_cpu_weights_are_packed():
    assert cpu_packed.pack_weight(torch.randn(8, 8, dtype=torch.bfloat16)) is None
    assert cpu_packed.pack_weight(torch.randn(8, 8, dtype=torch.float64)) is None


def test_engine_packs_every_linear_and_the_head(tiny_llama):
    from nanoinfer import LLM

    with LLM(tiny_llama, num_kvcache_blocks=64) as llm:
        model = llm.model_runner.model
        slots = [m for m in model.modules() if hasattr(m, "packed_weight")]
        assert llm.model_runner.packed_weights == len(slots) > 0
        assert all(m.packed_weight is not None for m in slots)
    with LLM(tiny_llama, num_kvcache_blocks=64, pack_cpu_weights=False) as llm:
        assert llm.model_runner.packed_weights == 0


def test_row_chunked_mlp_matches_the_whole_batch(tiny_llama):
    from transformers import AutoConfig

    from nanoinfer.models.llama import LlamaMLP

    torch.manual_seed(0)
    mlp = LlamaMLP(AutoConfig.from_pretrained(tiny_llama))
    for p in mlp.parameters():
        p.data.normal_()
    x = torch.randn(37, mlp.gate_up_proj.input_size)
    whole = mlp(x)
    mlp.cpu_chunk_rows = 8  # 37 rows: four chunks of 8 and one of 5
    torch.testing.assert_close(mlp(x), whole, rtol=1e-5, atol=1e-5 * whole.abs().max().item())  # GEMM blocking differs
