"""The GPU's fused attention prologue (fast/qk_prologue_triton.py: q/k norms, rotary, KV-cache write in one
kernel) against the reference ops it replaces, on fresh random inputs. Without a GPU it runs in Triton's
interpreter (conftest), which has no bfloat16: float32 and float16 there, bfloat16 on a GPU."""

from types import SimpleNamespace

import pytest
import torch
from transformers import AutoConfig

from nanoinfer.fast.qk_prologue_triton import qk_prologue, supported
from nanoinfer.models.llama import LlamaAttention
from nanoinfer.models.qwen3 import Qwen3Attention

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.bfloat16 if DEVICE == "cuda" else torch.float16]


def make_layer(model_type, heads, kv_heads, head_dim, dtype, seed):
    config = AutoConfig.for_model(model_type, hidden_size=heads * head_dim, num_attention_heads=heads,
                                  num_key_value_heads=kv_heads, head_dim=head_dim, max_position_embeddings=512,
                                  rms_norm_eps=1e-6, intermediate_size=64, num_hidden_layers=1, vocab_size=32)
    torch.manual_seed(seed)
    with torch.device(DEVICE):
        layer = (Qwen3Attention if model_type == "qwen3" else LlamaAttention)(config)
    table = layer.rotary_emb.cos_sin  # float32, as in the engine: both paths round cos and sin themselves
    layer = layer.to(dtype)
    layer.rotary_emb.cos_sin = table
    if layer.q_norm is not None:  # weights away from 1, so that a missed multiply shows
        layer.q_norm.weight.data.uniform_(0.5, 1.5)
        layer.k_norm.weight.data.uniform_(0.5, 1.5)
    blocks, block_size = 8, 4
    cache = torch.randn(2, blocks, block_size, kv_heads, head_dim, dtype=dtype, device=DEVICE)
    layer.attn.k_cache, layer.attn.v_cache = cache[0], cache[1]
    return layer, cache


def reference(layer, qkv, positions, slots, cache):
    q, k, v = layer.split_heads(qkv)
    if layer.q_norm is not None:
        q, k = layer.q_norm(q), layer.k_norm(k)
    q, k = layer.rotary_emb(positions, q, k)
    keep = slots >= 0
    flat = cache.view(2, -1, *cache.shape[-2:])
    flat[0, slots[keep]] = k[keep]
    flat[1, slots[keep]] = v[keep]
    return q, k, v


@pytest.mark.parametrize("model_type,heads,kv_heads,head_dim", [("qwen3", 4, 2, 32), ("qwen3", 6, 1, 64),
                                                                ("llama", 4, 4, 32), ("llama", 3, 1, 64)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_prologue_matches_the_reference_ops(model_type, heads, kv_heads, head_dim, dtype):
    seed = heads * 100 + head_dim
    layer, cache = make_layer(model_type, heads, kv_heads, head_dim, dtype, seed)
    g = torch.Generator().manual_seed(seed)
    tokens = 7
    qkv = (torch.randn(tokens, (heads + 2 * kv_heads) * head_dim, generator=g) * 3).to(dtype).to(DEVICE)
    positions = torch.randint(0, 512, (tokens,), generator=g).to(DEVICE)
    slots = torch.tensor([5, 0, -1, 31, 12, -1, 7], device=DEVICE)  # -1: a padding row, no slot
    expected_cache = cache.clone()
    q_ref, k_ref, v_ref = reference(layer, qkv.clone(), positions, slots, expected_cache)

    q, k, v = qk_prologue(layer, qkv, positions, SimpleNamespace(slot_mapping=slots))
    assert q.data_ptr() == qkv.data_ptr()  # in place: q, k, v stay views of the projection's output
    # float32: equal to rounding. 16-bit: the reference rounds every product to the dtype, the kernel
    # only where the reference casts explicitly, so results may differ by two units in the last place
    # at the tensor's scale (where a - b nearly cancels, that is a large relative difference).
    eps = torch.finfo(dtype).eps
    for got, want in ((q, q_ref), (k, k_ref), (cache, expected_cache)):
        scale = want.abs().max().item()
        tol = dict(rtol=1e-5, atol=1e-5 * scale) if dtype == torch.float32 else dict(rtol=2 * eps, atol=2 * eps * scale)
        torch.testing.assert_close(got, want, **tol)
    assert torch.equal(v, v_ref)


@pytest.mark.skipif(DEVICE == "cuda", reason="plays dependent launch out in Triton's interpreter")
def test_prologue_reads_the_projection_only_after_the_wait(monkeypatch):
    """Dependent launch in the interpreter: the kernel before (the qkv projection) writes qkv while the prologue
    starts, modelled here by writing it inside the first ``gdc_wait``; before that it is NaN. The position, cos/sin,
    norm weights and slot may be read early; a qkv element read before the wait would come out NaN."""
    import triton.language.extra.cuda as gdc

    import nanoinfer.fast.qk_prologue_triton as prologue

    layer, cache = make_layer("qwen3", 4, 2, 32, torch.float32, seed=5)
    g = torch.Generator().manual_seed(5)
    projected = torch.randn(3, 8 * 32, generator=g)
    positions, slots = torch.tensor([3, 200, 17]), torch.tensor([5, 30, 12])
    expected_cache = cache.clone()
    q_ref, k_ref, _ = reference(layer, projected.clone(), positions, slots, expected_cache)
    qkv = torch.full_like(projected, float("nan"))
    waits = []

    def wait(_semantic=None):  # the projection has completed: its output is visible (once: the prologue then
        if not waits:          # rotates q and k in place)
            qkv.copy_(projected)
        waits.append(1)

    monkeypatch.setattr(gdc, "gdc_wait", wait)
    monkeypatch.setattr(gdc, "gdc_launch_dependents", lambda _semantic=None: None)
    monkeypatch.setattr(prologue, "launch_options", lambda device: {"launch_pdl": True})
    q, k, _ = qk_prologue(layer, qkv, positions, SimpleNamespace(slot_mapping=slots))
    assert len(waits) == 3  # one per token's program
    for got, want in ((q, q_ref), (k, k_ref), (cache, expected_cache)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_head_sizes_the_kernel_takes():
    assert supported(64) and supported(128) and not supported(80) and not supported(16)


def test_only_layers_running_the_reference_ops_are_fused(tiny_qwen3):
    """A learner's own rotary (or norm) must run as written: those layers keep the separate ops."""
    from nanoinfer import LLM
    from nanoinfer.fast import _fuse_attention_prologues
    from nanoinfer.workbook.registry import use_exercises

    common = dict(device="cpu", max_model_len=64, kv_cache_memory_bytes=1 << 22, cpu_small_ops=False)
    reference_ops = LLM(str(tiny_qwen3), **common)
    assert reference_ops.fast_paths().set_index("name").loc["fused attention prologue", "applied"] == ""  # a CPU
    layers = reference_ops.engine.hf_config.num_hidden_layers
    assert _fuse_attention_prologues(reference_ops.model_runner.model) == f"norms, rotary and KV write in {layers} layers"
    for exercise in ("5.1", "5.2"):
        with use_exercises(exercise):
            learner = LLM(str(tiny_qwen3), **common)
        assert _fuse_attention_prologues(learner.model_runner.model) == ""
