"""CPU-only fast paths against references: packed-weight matrix products (fast/cpu_packed.py) against
float64, and the row-chunked prefill MLP (models/llama.py) against the whole-batch one."""

import pytest
import torch

from nanoinfer.fast import cpu_packed

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
    out = cpu_packed.packed_linear(x, weight, bias, packed=packed)
    ref = x.double() @ weight.double().T + (bias.double() if with_bias else 0)
    assert out.shape == (rows, 200) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-4)


def test_only_float32_cpu_weights_are_packed():
    assert cpu_packed.pack_weight(torch.randn(8, 8, dtype=torch.bfloat16)) is None
    assert cpu_packed.pack_weight(torch.randn(8, 8, dtype=torch.float64)) is None


def test_engine_packs_every_linear_and_the_head(tiny_llama):
    from nanoinfer import LLM

    import torch.nn.functional as F

    from nanoinfer.layers.embed_head import ParallelLMHead
    from nanoinfer.layers.linear import LinearBase

    def ops(llm):
        return [m.op for m in llm.model_runner.model.modules() if isinstance(m, (LinearBase, ParallelLMHead))]

    with LLM(tiny_llama, num_kvcache_blocks=64) as llm:
        packed = ops(llm)
        applied = llm.fast_paths().set_index("name").loc["packed CPU weights", "applied"]
    assert len(packed) == 4 * 2 + 1 and all(op.func is cpu_packed.packed_linear for op in packed)
    assert applied == f"F.linear in {len(packed)} layers"
    with LLM(tiny_llama, num_kvcache_blocks=64, pack_cpu_weights=False) as llm:
        assert set(ops(llm)) == {F.linear}


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
