"""The C decode-attention kernel of the ``cpu`` backend against the float32 torch reference, on random
paged batches (shuffled blocks, NaN in every slot no sequence owns, mixed lengths, GQA ratios)."""

from __future__ import annotations

import pytest
import torch

from nanoinfer.attention.cpu_backend import CpuAttentionBackend, kernel_available, paged_decode_attention
from test_attention_backends import F32_TOL, make_batch, reference

pytestmark = pytest.mark.skipif(not kernel_available(), reason="no C compiler to build the CPU kernel")


def cpu(b):
    for name in ("q", "k", "v", "k_cache", "v_cache", "ref_k_cache", "ref_v_cache"):
        setattr(b, name, getattr(b, name).cpu())
    for meta in (b.meta, b.ref_meta):
        for name in ("slot_mapping", "query_start_loc", "seq_lens", "block_tables"):
            setattr(meta, name, getattr(meta, name).cpu())
    return b


@pytest.mark.parametrize("block_size", [16, 256])
@pytest.mark.parametrize("kv_heads,group,head_dim", [(2, 2, 64), (3, 3, 64), (1, 8, 128), (4, 1, 32), (2, 4, 80)])
def test_decode_kernel_matches_torch(block_size, kv_heads, group, head_dim):
    lens = [1, 7, 16, 17, 300, 45, 1000]
    b = cpu(make_batch([1] * len(lens), lens, block_size, kv_heads, group, head_dim, seed=block_size + head_dim))
    backend = CpuAttentionBackend()
    backend.store_kv(b.k, b.v, b.k_cache, b.v_cache, b.meta)
    out = backend.forward(b.q, b.k, b.v, b.k_cache, b.v_cache, b.meta, b.scale)
    assert torch.isfinite(out).all(), "the kernel read a slot that no sequence owns"
    torch.testing.assert_close(out, reference(b), **F32_TOL)


def test_prefill_and_chunks_keep_the_torch_paths():
    b = cpu(make_batch([5, 3, 40], [5, 20, 100], 16))
    backend = CpuAttentionBackend()
    backend.store_kv(b.k, b.v, b.k_cache.nan_to_num_(0.0), b.v_cache.nan_to_num_(0.0), b.meta)
    out = backend.forward(b.q, b.k, b.v, b.k_cache, b.v_cache, b.meta, b.scale)
    torch.testing.assert_close(out, reference(b), **F32_TOL)


def test_bad_inputs_are_refused():
    b = cpu(make_batch([1, 1], [4, 9], 16))
    with pytest.raises(TypeError, match="block_tables"):
        paged_decode_attention(b.q, b.k_cache, b.v_cache, b.meta.block_tables.long(), b.meta.seq_lens, b.scale)
    with pytest.raises(TypeError, match="q must be"):
        paged_decode_attention(b.q.double(), b.k_cache, b.v_cache, b.meta.block_tables, b.meta.seq_lens, b.scale)
    with pytest.raises(ValueError, match="does not fit"):
        paged_decode_attention(b.q[..., :32], b.k_cache, b.v_cache, b.meta.block_tables, b.meta.seq_lens, b.scale)
    with pytest.raises(ValueError, match="one row per query"):
        paged_decode_attention(b.q[:1], b.k_cache, b.v_cache, b.meta.block_tables, b.meta.seq_lens, b.scale)
    for lens in ([0, 9], [4, 17]):  # empty, or longer than the one-block tables
        with pytest.raises(ValueError, match="seq_lens"):
            paged_decode_attention(b.q, b.k_cache, b.v_cache, b.meta.block_tables, torch.tensor(lens, dtype=torch.int32),
                                   b.scale)


def test_without_a_compiler_auto_falls_back_to_torch(monkeypatch):
    from nanoinfer.attention import cpu_backend as attention_cpu
    from nanoinfer.attention.backends import make_attention_backend

    monkeypatch.setenv("CC", "/nonexistent/cc")
    attention_cpu.load_kernel.cache_clear()
    try:
        assert make_attention_backend("auto", torch.device("cpu"), 16).name == "torch"
        with pytest.raises(RuntimeError, match="C compiler"):
            make_attention_backend("cpu", torch.device("cpu"), 16)
    finally:
        attention_cpu.load_kernel.cache_clear()


def test_loading_the_kernel_keeps_subnormal_floats():
    """Linked with -ffast-math, a library switches the process to flush-to-zero when it loads."""
    import numpy as np

    from nanoinfer.attention.cpu_backend import load_kernel

    load_kernel()
    assert np.float32(1e-39) / np.float32(2) != 0
    assert (torch.tensor(1e-39) / 2).item() != 0


@pytest.mark.parametrize("tokens", [1, 5, 300])  # 300: the multi-threaded copy
def test_store_kv_writes_the_same_slots_as_index_copy(tokens):
    from nanoinfer.attention.cpu_backend import store_kv_cache

    g = torch.Generator().manual_seed(tokens)
    kv_heads, head_dim, num_slots = 3, 64, 64 * 16
    qkv = torch.randn(tokens, (9 + 2 * kv_heads) * head_dim, generator=g)
    k = qkv[:, 9 * head_dim : (9 + kv_heads) * head_dim].view(tokens, kv_heads, head_dim)  # strided views
    v = qkv[:, (9 + kv_heads) * head_dim :].view(tokens, kv_heads, head_dim)
    slots = torch.randperm(num_slots, generator=g)[:tokens]
    caches = [torch.full((64, 16, kv_heads, head_dim), float("nan")) for _ in range(4)]
    assert store_kv_cache(k, v, caches[0], caches[1], slots)
    caches[2].view(num_slots, kv_heads, head_dim).index_copy_(0, slots, k)
    caches[3].view(num_slots, kv_heads, head_dim).index_copy_(0, slots, v)
    assert torch.equal(caches[0].nan_to_num(7.0), caches[2].nan_to_num(7.0))  # untouched slots stay NaN
    assert torch.equal(caches[1].nan_to_num(7.0), caches[3].nan_to_num(7.0))


def test_store_kv_refuses_a_slot_outside_the_cache_and_writes_nothing():
    from nanoinfer.attention.cpu_backend import store_kv_cache

    k = v = torch.randn(3, 2, 32)
    k_cache, v_cache = torch.zeros(4, 16, 2, 32), torch.zeros(4, 16, 2, 32)
    for bad in (64, -1):
        with pytest.raises(IndexError, match=f"slot {bad} of token 2"):
            store_kv_cache(k, v, k_cache, v_cache, torch.tensor([0, 5, bad]))
    assert not k_cache.any() and not v_cache.any()
    bf16 = torch.zeros(4, 16, 2, 32, dtype=torch.bfloat16)  # not a layout the C loop takes: the caller uses torch
    assert not store_kv_cache(k.bfloat16(), v.bfloat16(), bf16, bf16, torch.tensor([0, 1, 2]))
    elsewhere = torch.empty(4, 16, 2, 32, device="meta")  # (a GPU tensor's pointer would crash the C loop)
    assert not store_kv_cache(k, v, elsewhere, elsewhere, torch.tensor([0, 1, 2]))
