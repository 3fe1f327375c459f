"""The Triton attention backend against the float32 torch reference, on random paged batches.

Without a GPU the kernels run in Triton's interpreter (conftest sets TRITON_INTERPRET=1), so sizes stay
small. Each batch scatters its sequences over shuffled physical blocks, fills every cache slot that no
sequence owns with NaN and every output with NaN: a kernel that reads an unowned slot, writes a padding
slot, or leaves an output unwritten fails the comparison.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from nanoinfer.attention.base import AttentionMetadata
from nanoinfer.attention.torch_backend import TorchAttentionBackend
import nanoinfer.attention.triton_backend as triton_backend
from nanoinfer.attention.triton_backend import TritonAttentionBackend

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
F32_TOL = dict(rtol=1e-4, atol=1e-5)
HALF_TOL = dict(rtol=2e-2, atol=2e-2)


@dataclass
class Batch:
    q: torch.Tensor  # [tokens (+ padding rows), heads, head_dim]
    k: torch.Tensor
    v: torch.Tensor
    k_cache: torch.Tensor  # prefixes written, every other slot NaN
    v_cache: torch.Tensor
    meta: AttentionMetadata  # with the padding rows, if any
    ref_k_cache: torch.Tensor  # prefixes written, every other slot 0 (the torch reference needs finite slots)
    ref_v_cache: torch.Tensor
    ref_meta: AttentionMetadata  # without padding rows
    real_tokens: int
    scale: float


def make_meta(query_lens, seq_lens, tables, slots, block_size, decode) -> AttentionMetadata:
    width = max(len(t) for t in tables)
    starts = [0]
    for n in query_lens:
        starts.append(starts[-1] + n)
    return AttentionMetadata(
        is_decode=decode,
        slot_mapping=torch.tensor(slots, dtype=torch.int64, device=DEVICE),
        query_start_loc=torch.tensor(starts, dtype=torch.int32, device=DEVICE),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=DEVICE),
        block_tables=torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32, device=DEVICE),
        max_query_len=max(query_lens), max_seq_len=max(seq_lens), block_size=block_size,
        query_lens_cpu=list(query_lens), seq_lens_cpu=list(seq_lens),
    )


def make_batch(query_lens, seq_lens, block_size, kv_heads=2, group=2, head_dim=64, dtype=torch.float32,
               padding_rows=0, seed=0) -> Batch:
    """A batch whose sequence i feeds query_lens[i] new tokens and ends with seq_lens[i] tokens in all;
    the seq_len - query_len tokens before them are already cached. ``padding_rows`` appends rows like a
    padded CUDA-graph decode batch: one token each, context length 0, slot -1."""
    gen = torch.Generator().manual_seed(seed)
    decode = all(n == 1 for n in query_lens)
    blocks_per_seq = [-(-n // block_size) for n in seq_lens]
    num_blocks = sum(blocks_per_seq) + 3  # a few blocks that belong to nobody
    order = torch.randperm(num_blocks, generator=gen).tolist()
    tables, prefix_slots, new_slots = [], [], []
    for n_blocks, q_len, s_len in zip(blocks_per_seq, query_lens, seq_lens):
        table, order = order[:n_blocks], order[n_blocks:]
        tables.append(table)
        slots = [table[p // block_size] * block_size + p % block_size for p in range(s_len)]
        prefix_slots += slots[: s_len - q_len]
        new_slots += slots[s_len - q_len :]

    heads, tokens = kv_heads * group, sum(query_lens)
    randn = lambda *shape: torch.randn(*shape, generator=gen).to(dtype).to(DEVICE)  # noqa: E731
    q = randn(tokens + padding_rows, heads, head_dim)
    k, v = (randn(tokens + padding_rows, kv_heads, head_dim) for _ in range(2))
    cache_shape = (num_blocks, block_size, kv_heads, head_dim)
    prefix = torch.tensor(prefix_slots, dtype=torch.int64, device=DEVICE)
    caches = [tuple(torch.full(cache_shape, fill, dtype=dtype, device=DEVICE) for _ in range(2))
              for fill in (0.0, float("nan"))]
    # The same prefix keys and values in both pairs of caches.
    k_prefix, v_prefix = randn(len(prefix_slots), kv_heads, head_dim), randn(len(prefix_slots), kv_heads, head_dim)
    for k_cache, v_cache in caches:
        k_cache.view(-1, kv_heads, head_dim)[prefix] = k_prefix
        v_cache.view(-1, kv_heads, head_dim)[prefix] = v_prefix

    ref_meta = make_meta(query_lens, seq_lens, tables, new_slots, block_size, decode)
    meta = make_meta(list(query_lens) + [1] * padding_rows, list(seq_lens) + [0] * padding_rows,
                     tables + [[0]] * padding_rows, new_slots + [-1] * padding_rows, block_size, decode)
    (ref_k, ref_v), (k_cache, v_cache) = caches
    return Batch(q, k, v, k_cache, v_cache, meta, ref_k, ref_v, ref_meta, tokens, head_dim**-0.5)


def reference(b: Batch) -> torch.Tensor:
    """The torch backend in float32, on the batch without its padding rows."""
    t = b.real_tokens
    ref = TorchAttentionBackend()
    kc, vc = b.ref_k_cache.float(), b.ref_v_cache.float()
    q, k, v = b.q[:t].float(), b.k[:t].float(), b.v[:t].float()
    ref.store_kv(k, v, kc, vc, b.ref_meta)
    return ref.forward(q, k, v, kc, vc, b.ref_meta, b.scale)


def packed_views(q, k, v):
    """q, k, v as the model hands them over: strided views into one fused qkv projection output."""
    qkv = torch.cat([q.flatten(1), k.flatten(1), v.flatten(1)], dim=1)
    q2, k2, v2 = qkv.split([q[0].numel(), k[0].numel(), v[0].numel()], dim=1)
    return q2.view(q.shape), k2.view(k.shape), v2.view(v.shape)


def run_triton(b: Batch, backend: TritonAttentionBackend | None = None) -> torch.Tensor:
    backend = backend or TritonAttentionBackend(prefill_with_torch_varlen=False)
    out = torch.full_like(b.q, float("nan"))
    q, k, v = packed_views(b.q, b.k, b.v)
    backend.store_kv(k, v, b.k_cache, b.v_cache, b.meta)
    if b.meta.is_decode:
        result = backend.decode(q, b.k_cache, b.v_cache, b.meta, b.scale, out=out)
    else:
        result = backend.prefill(q, k, v, b.k_cache, b.v_cache, b.meta, b.scale, out=out)
    assert result is out
    assert torch.isfinite(out).all(), "an output element was not written (or is not finite)"
    return out


def check(b: Batch, out: torch.Tensor, tol=F32_TOL) -> None:
    torch.testing.assert_close(out[: b.real_tokens].float(), reference(b), **tol)


# ---- the store kernel --------------------------------------------------------------------------------
def test_store_kv_writes_its_slots_and_skips_padding():
    b = make_batch([5, 1, 20], [5, 9, 40], block_size=16, padding_rows=3)
    before = b.k_cache.clone()
    TritonAttentionBackend().store_kv(b.k, b.v, b.k_cache, b.v_cache, b.meta)
    slots = b.meta.slot_mapping[: b.real_tokens]
    flat_k, flat_v = b.k_cache.view(-1, *b.k.shape[1:]), b.v_cache.view(-1, *b.v.shape[1:])
    assert torch.equal(flat_k[slots], b.k[: b.real_tokens])
    assert torch.equal(flat_v[slots], b.v[: b.real_tokens])
    # Nothing else changed (a -1 taken as an index would have hit the last slot, owned or not).
    untouched = torch.ones(flat_k.shape[0], dtype=torch.bool, device=DEVICE)
    untouched[slots] = False
    assert torch.equal(flat_k[untouched].isnan(), before.view_as(flat_k)[untouched].isnan())


# ---- decode --------------------------------------------------------------------------------------
@pytest.mark.parametrize("block_size, kv_heads, group, head_dim", [
    (16, 2, 1, 64), (16, 1, 4, 128), (256, 2, 2, 64), (256, 1, 4, 128), (1, 2, 2, 64), (32, 1, 2, 128)])
def test_decode_matches_reference(block_size, kv_heads, group, head_dim):
    b = make_batch([1] * 4, [1, 17, 70, 300], block_size, kv_heads, group, head_dim)
    check(b, run_triton(b))


@pytest.mark.parametrize("splits", [1, 3, 8])
def test_decode_fixed_splits_with_padding_rows(splits):
    """A padded CUDA-graph batch with a fixed number of splits: more splits than some sequences have
    tiles, so empty splits must merge to nothing; padding rows must come out finite."""
    b = make_batch([1] * 3, [2, 100, 257], block_size=16, kv_heads=2, group=4, head_dim=64, padding_rows=2)
    backend = TritonAttentionBackend(decode_splits=splits)
    check(b, run_triton(b, backend))
    # The splits' scratch buffers are reused by every layer of a step: poison them, run again.
    for buffers in b.meta.scratch.values():
        for t in buffers:
            t.fill_(float("nan"))
    check(b, run_triton(b, backend))


@pytest.mark.parametrize("fresh", [1, 3, 70])
@pytest.mark.parametrize("lengths", [[257], [2, 100, 257]])
def test_decode_prefetch_merges_every_key(fresh, lengths, monkeypatch):
    """A prefetching decode kernel (PREFETCH_MAX_SEQS) reads a row's last ``decode_fresh_tokens`` positions after
    its wait and the rest of its first tile before it: together every key of the context (70 reaches past the
    first tile). The order of the two reads is the next test's."""
    monkeypatch.setattr(triton_backend, "PREFETCH_MAX_SEQS", 8)  # (these batches of 2 and 4 rows prefetch)
    b = make_batch([1] * len(lengths), lengths, block_size=16, kv_heads=2, group=4, head_dim=64, padding_rows=1)
    backend = TritonAttentionBackend(decode_splits=4)
    backend.decode_fresh_tokens = fresh
    check(b, run_triton(b, backend))


@pytest.mark.skipif(CUDA, reason="plays dependent launch out in Triton's interpreter")
@pytest.mark.parametrize("fresh", [1, 3])
def test_decode_prefetch_reads_the_fresh_positions_after_the_wait(fresh, monkeypatch):
    """Dependent launch in the interpreter: the kernel before (the prologue) writes a row's last ``fresh`` keys
    and values while this one starts, modelled here by writing them inside ``gdc_wait``; before that they are NaN.
    A kernel that read one of them before its wait returns NaN. (The interpreter runs programs one by one: the
    context fits split 0's first tile of 32 float32 keys, and that program runs first.)"""
    import triton.language.extra.cuda as gdc

    b = make_batch([1], [30], block_size=16, kv_heads=2, group=4, head_dim=64)
    backend = TritonAttentionBackend(decode_splits=4)
    backend.decode_fresh_tokens = fresh
    q, k, v = packed_views(b.q, b.k, b.v)
    backend.store_kv(k, v, b.k_cache, b.v_cache, b.meta)  # the newest token's key and value, as the step writes
    table = b.meta.block_tables[0].tolist()
    slots = [table[p // 16] * 16 + p % 16 for p in range(30 - fresh, 30)]
    flat_k, flat_v = (c.view(-1, *b.k.shape[1:]) for c in (b.k_cache, b.v_cache))
    written = flat_k[slots].clone(), flat_v[slots].clone()
    flat_k[slots], flat_v[slots] = float("nan"), float("nan")

    def wait(_semantic=None):  # the kernel before has completed: its writes are visible
        flat_k[slots], flat_v[slots] = written

    monkeypatch.setattr(gdc, "gdc_wait", wait)
    monkeypatch.setattr(gdc, "gdc_launch_dependents", lambda _semantic=None: None)
    monkeypatch.setattr(triton_backend, "launch_options", lambda device: {"launch_pdl": True})
    out = torch.full_like(b.q, float("nan"))
    backend.decode(q, b.k_cache, b.v_cache, b.meta, b.scale, out=out)
    check(b, out)


def test_decode_splits_are_python_ints():
    """A verify step's lengths are numpy integers: a numpy split count would not compile as a Triton constexpr."""
    splits = triton_backend.decode_splits_for(np.int64(300), np.int64(2), 8)
    assert type(splits) is int and splits == 5


# ---- prefill -------------------------------------------------------------------------------------
PREFILL_SHAPES = [(16, 2, 1, 64), (256, 1, 4, 128), (32, 2, 2, 64), (1, 1, 2, 64)]


@pytest.mark.parametrize("block_size, kv_heads, group, head_dim", PREFILL_SHAPES)
def test_prefill_without_prefix(block_size, kv_heads, group, head_dim):
    lens = [1, 7, 40, 130]  # 130 > 2 query tiles
    b = make_batch(lens, lens, block_size, kv_heads, group, head_dim)
    assert b.meta.no_prefix
    check(b, run_triton(b))


@pytest.mark.parametrize("block_size, kv_heads, group, head_dim", PREFILL_SHAPES)
def test_prefill_with_cached_prefix_and_chunks(block_size, kv_heads, group, head_dim):
    """Prefix-cache hits (a whole block cached), chunked prefill (a middle chunk of a long prompt), a
    fresh prompt and a one-token tail, mixed in one batch."""
    b = make_batch([5, 30, 64, 1], [21, 30, 200, 17], block_size, kv_heads, group, head_dim)
    assert not b.meta.no_prefix
    check(b, run_triton(b))


def test_float16_inputs():
    """16-bit inputs, float32 accumulation. (bfloat16 is tested on a GPU only: Triton 3.6's interpreter
    gets tl.dot on bfloat16 wrong.)"""
    for query_lens, seq_lens in [([1] * 4, [1, 17, 70, 300]), ([5, 30, 64, 1], [21, 30, 200, 17])]:
        b = make_batch(query_lens, seq_lens, 16, kv_heads=2, group=2, head_dim=64, dtype=torch.float16)
        check(b, run_triton(b), HALF_TOL)


# ---- through the engine --------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["tiny_qwen3", "tiny_llama"])
def test_engine_greedy_tokens_match_torch_backend(model, request):
    from nanoinfer import LLM, SamplingParams

    path = request.getfixturevalue(model)

    shared = list(range(100, 120))  # 20 tokens: the second and third prompts hit a cached block
    prompts = [[7, 8, 9], shared + [1, 2, 3, 4, 5], shared + list(range(300, 337))]
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    tokens = {}
    # float32 on either device, so that both backends must agree to rounding
    device = dict(dtype="float32", gpu_memory_utilization=0.3) if torch.cuda.is_available() else {}
    for backend in ("torch", "triton"):
        llm = LLM(str(path), attention_backend=backend, max_model_len=256, **device)
        assert llm.model_runner.backend.name == backend
        tokens[backend] = [o.token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
        llm.shutdown()
    assert tokens["triton"] == tokens["torch"]


# ---- flash-attn ----------------------------------------------------------------------------------
def test_flash_attn_rejects_small_blocks_and_cpus():
    """EngineConfig refuses what flash-attn's paged kernels cannot take, before any weight is loaded."""
    from nanoinfer.config import EngineConfig

    with pytest.raises(ValueError, match="set kvcache_block_size=256"):
        EngineConfig(attention_backend="flash_attn", kvcache_block_size=16).fit_to_device(torch.device("cuda"))
    with pytest.raises(ValueError, match="flash_attn' needs a CUDA device"):
        EngineConfig(attention_backend="flash_attn", kvcache_block_size=256).fit_to_device(torch.device("cpu"))


# ---- GPU only ------------------------------------------------------------------------------------
@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("block_size, group", [(16, 4), (256, 2)])
def test_gpu_half_precision(dtype, block_size, group):
    for query_lens, seq_lens in [([1] * 8, [1, 30, 100, 511, 1024, 2000, 64, 5]),
                                 ([1, 7, 40, 300], [1, 7, 40, 300]),
                                 ([5, 30, 64, 1], [21, 30, 200, 17])]:
        b = make_batch(query_lens, seq_lens, block_size, kv_heads=2, group=group, head_dim=128, dtype=dtype)
        check(b, run_triton(b), HALF_TOL)


@pytest.mark.gpu
@needs_cuda
def test_gpu_torch_varlen_prefill_matches():
    lens = [1, 7, 40, 300]
    b = make_batch(lens, lens, 16, kv_heads=2, group=4, head_dim=128, dtype=torch.bfloat16)
    backend = TritonAttentionBackend(prefill_with_torch_varlen=True)
    assert backend._use_torch_varlen(b.q, b.meta)
    check(b, run_triton(b, backend), HALF_TOL)


@pytest.mark.gpu
@needs_cuda
def test_gpu_decode_in_cuda_graph():
    """Capture a padded decode batch once with fixed splits, then replay it with other lengths."""
    b = make_batch([1] * 6, [40, 300, 1000, 7, 64, 513], 16, kv_heads=2, group=4, head_dim=128,
                   dtype=torch.bfloat16, padding_rows=2)
    backend = TritonAttentionBackend(decode_splits=4)
    out = torch.zeros_like(b.q)
    backend.store_kv(b.k, b.v, b.k_cache, b.v_cache, b.meta)
    backend.decode(b.q, b.k_cache, b.v_cache, b.meta, b.scale, out=out)  # compile outside capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        backend.decode(b.q, b.k_cache, b.v_cache, b.meta, b.scale, out=out)
    graph.replay()
    check(b, out, HALF_TOL)
    # Shorter contexts over the same blocks: only the lengths in device memory change.
    shorter = [n // 2 + 1 for n in b.ref_meta.seq_lens_cpu]
    b.meta.seq_lens[: len(shorter)].copy_(torch.tensor(shorter))
    graph.replay()
    ref = TorchAttentionBackend()
    ref_meta = make_meta([1] * len(shorter), shorter, b.ref_meta.block_tables.tolist(), [0] * len(shorter), 16, True)
    expected = ref.forward(b.q[: len(shorter)].float(), None, None, b.k_cache.float().nan_to_num(),
                           b.v_cache.float().nan_to_num(), ref_meta, b.scale)
    torch.testing.assert_close(out[: len(shorter)].float(), expected, **HALF_TOL)
    assert torch.isfinite(out).all()


@pytest.mark.gpu
@needs_cuda
def test_gpu_speed_against_torch_backend(capsys):
    """Timings for the record (printed), and the one claim that must hold: paged decode in Triton is
    faster than the torch reference, which gathers every context."""

    def timed(fn, reps=20):
        fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / reps * 1e3

    results = {}
    for phase, q_lens, s_lens in [("decode 64x2048", [1] * 64, [2048] * 64),
                                  ("decode 8x8192", [1] * 8, [8192] * 8),
                                  ("prefill 4x2048", [2048] * 4, [2048] * 4),
                                  ("prefill 4x512 on 4x4096", [512] * 4, [4096] * 4)]:
        b = make_batch(q_lens, s_lens, 16, kv_heads=8, group=4, head_dim=128, dtype=torch.bfloat16)
        kc, vc = b.k_cache.nan_to_num(), b.v_cache.nan_to_num()
        torch_backend = TorchAttentionBackend()
        row = {"torch": timed(lambda: torch_backend.forward(b.q, b.k, b.v, kc, vc, b.meta, b.scale))}
        for label, varlen in [("triton", False), ("triton+varlen", None)]:
            backend = TritonAttentionBackend(prefill_with_torch_varlen=varlen)
            row[label] = timed(lambda: backend.forward(b.q, b.k, b.v, kc, vc, b.meta, b.scale))
        results[phase] = row
    with capsys.disabled():
        for phase, row in results.items():
            print(f"\n{phase:>26}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in row.items()))
    assert results["decode 64x2048"]["triton"] < results["decode 64x2048"]["torch"]
