"""Attention over the paged KV cache in Triton: FlashAttention-style kernels that read keys and values
straight from the cache blocks through the block tables, so no context is ever gathered into a copy.

Kernels (the store kernel is store_triton.py's):
  decode   one query per sequence. One program per (sequence, KV head, context split): the query heads that
           share the KV head are handled together, with an online softmax over tiles of keys. Long contexts
           are cut into splits that run in parallel (flash-decoding); a small reduce kernel then merges the
           splits' partial results. Lengths are read inside the kernels and the grid depends only on the batch
           size, the KV heads and the splits: a CUDA graph can replay it once ``decode_splits`` is fixed.
  prefill  several queries per sequence, after any cached tokens (prefix-cache hits, chunked prefill). One
           program per (query tile, sequence, query head), causal mask, online softmax over key tiles.
On a GPU, a prefill step with no cached prefix may instead go to PyTorch's own varlen flash attention
(``prefill_with_torch_varlen``); the Triton kernel stays the fallback and the CPU path (interpreter).

Scores are computed in float32 and in base 2: the softmax scale is multiplied by log2(e) once, so the
kernels call exp2, which is what the hardware computes natively.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager

import torch
import triton
import triton.language as tl

from nanoinfer.attention.base import AttentionBackend, AttentionMetadata
from nanoinfer.attention.store_triton import store_kv_cache
from nanoinfer.fast import triton_interpreter  # noqa: F401  (a fix for Triton's CPU interpreter)
from nanoinfer.fast.pdl import launch_options

LOG2E = 1.4426950408889634
# The running maximum starts here rather than at -inf: exp2(m_old - m_new) then stays a number (0 or 1)
# for rows that have seen no key yet, where -inf - (-inf) would give NaN.
NO_SCORE = tl.constexpr(-1.0e30)  # a constexpr: the only kind of global a kernel may read
MAX_DECODE_SPLITS = 16
# Shorter splits cost more in the merge than they gain in parallelism. At 64, qwen3-0.6b's batch-1 graph (16 splits
# of a 1,024-token bound, 640 tokens of context) replayed in 0.66 ms on an H200 against 0.74 at 256 (4 splits) and
# 0.70 at 128 (h200_skinny_sweep.json). Large batches are not split either way (TARGET_DECODE_PROGRAMS).
TOKENS_PER_SPLIT = 64
TARGET_DECODE_PROGRAMS = 512  # about four programs per streaming multiprocessor on an H100 (132 SMs)
# Split decode steps of at most this many sequences request the first tile of keys and values before waiting
# for the kernel before (PREFETCH in _decode_kernel; fast/pdl.py). With the fused prologue's early loads,
# batch-1 steps of qwen3-0.6b took 0.72 instead of 0.75 ms per token on an H200, and 0.74 without them in a later
# call (h200_latency_batch1_prefetch.json). With the prefetch in every split step, nano-vllm's workload decoded
# ~0.8% slower in two calls (h200_nano_vllm_prefetch.json): there the splits hold several tiles.
PREFETCH_MAX_SEQS = 1


# ---- kernels ---------------------------------------------------------------------------------------
@triton.jit
def _load_kv_tile(k_cache_ptr, v_cache_ptr, table_ptr, pos, valid, kv_head, d, d_mask,
                  stride_cb, stride_cs, stride_ch, BLOCK_SIZE: tl.constexpr):
    """Keys and values at positions ``pos`` of one sequence, [BLOCK_N, BLOCK_D], found through the block table.
    Positions past the context are not read: their slots may hold anything, and 0 * NaN would poison the sum."""
    block = tl.load(table_ptr + pos // BLOCK_SIZE, mask=valid, other=0).to(tl.int64)
    offset = block * stride_cb + (pos % BLOCK_SIZE) * stride_cs + kv_head * stride_ch
    mask = valid[:, None] & d_mask[None, :]
    k = tl.load(k_cache_ptr + offset[:, None] + d[None, :], mask=mask, other=0.0)
    v = tl.load(v_cache_ptr + offset[:, None] + d[None, :], mask=mask, other=0.0)
    return k, v


@triton.jit
def _online_softmax_step(q, k, v, allowed, m, l, acc, scale_log2, PRECISION: tl.constexpr):
    """Fold one tile of keys into the running max ``m``, sum ``l`` and unnormalised output ``acc``."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale_log2
    s = tl.where(allowed, s, float("-inf"))
    m_new = tl.maximum(m, tl.max(s, axis=1))
    p = tl.exp2(s - m_new[:, None])
    alpha = tl.exp2(m - m_new)  # rescales what was summed under the old maximum
    l = l * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return m_new, l, acc


# The block-table width changes from step to step; without do_not_specialize Triton would compile a new
# variant whenever its divisibility by 16 changes, in the middle of a run.
@triton.jit(do_not_specialize=["stride_table"])
def _decode_kernel(q_ptr, k_cache_ptr, v_cache_ptr, out_ptr, part_acc_ptr, part_ml_ptr, tables_ptr, seq_lens_ptr,
                   scale_log2, stride_qt, stride_qh, stride_ot, stride_oh, stride_cb, stride_cs, stride_ch,
                   stride_table, num_heads, group, head_dim, fresh, NUM_SPLITS: tl.constexpr,
                   BLOCK_SIZE: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                   PRECISION: tl.constexpr, PREFETCH: tl.constexpr, USE_PDL: tl.constexpr):
    if USE_PDL and not PREFETCH:  # launched while the kernel before finishes: wait for its writes (fast/pdl.py)
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    # The KV heads of one sequence are neighbouring programs: they start together and read the interleaved heads
    # of the same cache rows, and as the batch comes longest first (scheduler.py) the longest contexts start
    # first instead of trailing alone at the end of the launch. On an H200, nano-vllm's workload decoded in 4.71 s
    # this way, 4.92 with a sequence's KV heads a batch of programs apart (h200_nano_vllm_head_major_norm.json).
    kv_head = tl.program_id(0)
    seq = tl.program_id(1)
    split = tl.program_id(2)
    # The length is read here, not passed from the host: one launch (one captured CUDA graph) then
    # serves any lengths. Padding rows have length 0 and run no tile.
    seq_len = tl.load(seq_lens_ptr + seq)
    num_tiles = tl.cdiv(seq_len, BLOCK_N)
    per_split = tl.cdiv(num_tiles, NUM_SPLITS)
    first = split * per_split
    last = tl.minimum(first + per_split, num_tiles)
    d = tl.arange(0, BLOCK_D)
    d_mask = d < head_dim
    table_ptr = tables_ptr + seq * stride_table
    # PREFETCH (see PREFETCH_MAX_SEQS): the lengths, the block table and the cached keys and values are step inputs,
    # not results of the kernel before, except a row's last ``fresh`` positions, which this step writes (the
    # newest token; a verify step's drafts). So the rest of the first tile is requested before the wait.
    if PREFETCH:
        pos = first * BLOCK_N + tl.arange(0, BLOCK_N)  # (past the context in an empty split: nothing is read)
        k, v = _load_kv_tile(k_cache_ptr, v_cache_ptr, table_ptr, pos, pos < seq_len - fresh, kv_head, d, d_mask,
                             stride_cb, stride_cs, stride_ch, BLOCK_SIZE)
        if USE_PDL:
            tl.extra.cuda.gdc_wait()
            tl.extra.cuda.gdc_launch_dependents()

    # The `group` query heads of this KV head form the rows of one matrix: the keys are read once for
    # all of them. Rows are padded to BLOCK_G >= 16 because a GPU's tl.dot needs 16 rows.
    g = tl.arange(0, BLOCK_G)
    heads = kv_head * group + g
    g_mask = g < group
    q = tl.load(q_ptr + seq * stride_qt + heads[:, None] * stride_qh + d[None, :],
                mask=g_mask[:, None] & d_mask[None, :], other=0.0)

    m = tl.full([BLOCK_G], NO_SCORE, tl.float32)
    l = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    start = first
    if PREFETCH:  # the fresh keys and values, then the first tile's step
        newest = (pos >= seq_len - fresh) & (pos < seq_len)
        k_new, v_new = _load_kv_tile(k_cache_ptr, v_cache_ptr, table_ptr, pos, newest, kv_head, d, d_mask,
                                     stride_cb, stride_cs, stride_ch, BLOCK_SIZE)
        k, v = tl.where(newest[:, None], k_new, k), tl.where(newest[:, None], v_new, v)
        m, l, acc = _online_softmax_step(q, k, v, (pos < seq_len)[None, :], m, l, acc, scale_log2, PRECISION)
        start = first + 1
    for tile in range(start, last):
        pos = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        valid = pos < seq_len
        k, v = _load_kv_tile(k_cache_ptr, v_cache_ptr, table_ptr, pos, valid, kv_head, d, d_mask,
                             stride_cb, stride_cs, stride_ch, BLOCK_SIZE)
        m, l, acc = _online_softmax_step(q, k, v, valid[None, :], m, l, acc, scale_log2, PRECISION)

    if NUM_SPLITS == 1:
        out = acc / tl.where(l > 0, l, 1.0)[:, None]  # l == 0 only on padding rows: write zeros there
        tl.store(out_ptr + seq * stride_ot + heads[:, None] * stride_oh + d[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=g_mask[:, None] & d_mask[None, :])
    else:
        # Every split writes its state, even an empty one (m = NO_SCORE, l = 0): the reduce reads them all.
        row = (seq * num_heads + heads) * NUM_SPLITS + split
        tl.store(part_acc_ptr + row[:, None] * head_dim + d[None, :], acc, mask=g_mask[:, None] & d_mask[None, :])
        tl.store(part_ml_ptr + 2 * row, m, mask=g_mask)
        tl.store(part_ml_ptr + 2 * row + 1, l, mask=g_mask)


@triton.jit
def _decode_reduce_kernel(out_ptr, part_acc_ptr, part_ml_ptr, stride_ot, stride_oh, num_heads, head_dim,
                          NUM_SPLITS: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
                          USE_PDL: tl.constexpr):
    if USE_PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    seq = tl.program_id(0)
    head = tl.program_id(1)
    s = tl.arange(0, BLOCK_S)
    d = tl.arange(0, BLOCK_D)
    s_mask = s < NUM_SPLITS
    row = (seq * num_heads + head) * NUM_SPLITS + s
    m = tl.load(part_ml_ptr + 2 * row, mask=s_mask, other=NO_SCORE)
    l = tl.load(part_ml_ptr + 2 * row + 1, mask=s_mask, other=0.0)
    acc = tl.load(part_acc_ptr + row[:, None] * head_dim + d[None, :],
                  mask=s_mask[:, None] & (d < head_dim)[None, :], other=0.0)
    # Each split summed exp2(score - its own max): bring all of them to the common max, then add up.
    rescale = tl.exp2(m - tl.max(m, axis=0))
    total = tl.sum(l * rescale, axis=0)
    out = tl.sum(acc * rescale[:, None], axis=0) / tl.where(total > 0, total, 1.0)
    tl.store(out_ptr + seq * stride_ot + head * stride_oh + d, out.to(out_ptr.dtype.element_ty), mask=d < head_dim)


@triton.jit(do_not_specialize=["stride_table"])
def _prefill_kernel(q_ptr, k_cache_ptr, v_cache_ptr, out_ptr, tables_ptr, seq_lens_ptr, query_start_ptr,
                    scale_log2, stride_qt, stride_qh, stride_ot, stride_oh, stride_cb, stride_cs, stride_ch,
                    stride_table, group, head_dim, BLOCK_SIZE: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    tile_m = tl.program_id(0)
    seq = tl.program_id(1)
    head = tl.program_id(2)
    # The grid is sized for the longest query of the step: shorter sequences' extra tiles stop here.
    q_start = tl.load(query_start_ptr + seq)
    q_len = tl.load(query_start_ptr + seq + 1) - q_start
    if tile_m * BLOCK_M >= q_len:
        return
    seq_len = tl.load(seq_lens_ptr + seq)
    kv_head = head // group

    i = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    d = tl.arange(0, BLOCK_D)
    q_mask = (i < q_len)[:, None] & (d < head_dim)[None, :]
    q = tl.load(q_ptr + (q_start + i)[:, None] * stride_qt + head * stride_qh + d[None, :], mask=q_mask, other=0.0)
    # The new tokens come after the cached ones: query i sits at position seq_len - q_len + i.
    q_pos = seq_len - q_len + i
    # Keys after the tile's last query are masked for every row: the loop stops there.
    kv_end = tl.minimum(seq_len, seq_len - q_len + (tile_m + 1) * BLOCK_M)

    m = tl.full([BLOCK_M], NO_SCORE, tl.float32)
    l = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    table_ptr = tables_ptr + seq * stride_table
    for start in range(0, kv_end, BLOCK_N):
        pos = start + tl.arange(0, BLOCK_N)
        valid = pos < kv_end
        k, v = _load_kv_tile(k_cache_ptr, v_cache_ptr, table_ptr, pos, valid, kv_head, d, d < head_dim,
                             stride_cb, stride_cs, stride_ch, BLOCK_SIZE)
        causal = (pos[None, :] <= q_pos[:, None]) & valid[None, :]
        m, l, acc = _online_softmax_step(q, k, v, causal, m, l, acc, scale_log2, PRECISION)

    # Every row saw at least the key at position 0, so l > 0 (rows past q_len are not stored).
    out = acc / l[:, None]
    tl.store(out_ptr + (q_start + i)[:, None] * stride_ot + head * stride_oh + d[None, :],
             out.to(out_ptr.dtype.element_ty), mask=q_mask)


# ---- host side -------------------------------------------------------------------------------------
def decode_splits_for(max_seq_len: int, num_seqs: int, kv_heads: int) -> int:
    """How many parts to cut each context into: enough programs to fill the GPU when the batch is small,
    but no split shorter than TOKENS_PER_SPLIT. Large batches already fill the GPU and get 1."""
    by_length = triton.cdiv(max_seq_len, TOKENS_PER_SPLIT)
    by_occupancy = triton.cdiv(TARGET_DECODE_PROGRAMS, num_seqs * kv_heads)
    return int(max(1, min(MAX_DECODE_SPLITS, by_length, by_occupancy)))  # (a verify step's lengths are numpy's)


def _tiles(dtype: torch.dtype) -> tuple[int, int, int]:
    """(query rows per tile, keys per tile, warps of a prefill program). Exact float32 products run on
    the CUDA cores, not the tensor cores, and keep whole tiles in registers: smaller tiles, more warps."""
    return (64, 64, 4) if dtype.itemsize <= 2 else (32, 32, 8)


def _torch_varlen():
    """PyTorch's varlen flash attention and this version's extra keyword arguments, or None. 2.10 took
    ``is_causal`` and no scale; later ones take ``scale`` and ``window_size``, the newest ``enable_gqa`` too."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters
    if "scale" not in params or "window_size" not in params:  # no way to pass our scale
        return None
    return varlen_attn, {"enable_gqa": True} if "enable_gqa" in params else {}  # older: fewer KV heads as they are


class TritonAttentionBackend(AttentionBackend):
    """``decode_splits``: the number of context splits of decode steps, fixed for CUDA graphs; None: per step.
    ``prefill_with_torch_varlen``: see above; None: on CUDA with 16-bit inputs where this PyTorch has it."""

    name = "triton"
    supports_cuda_graphs = True
    # How many of a decode row's last positions its own step may write: 1, or 1 + drafts where a verify step feeds
    # each draft as a row of its own (set by nanoinfer/fast). PREFETCH reads only older ones before its wait.
    decode_fresh_tokens = 1

    def __init__(self, decode_splits: int | None = None, prefill_with_torch_varlen: bool | None = None) -> None:
        self.decode_splits = decode_splits
        self.torch_varlen = _torch_varlen() if prefill_with_torch_varlen is not False else None
        if prefill_with_torch_varlen and self.torch_varlen is None:
            raise ValueError("prefill_with_torch_varlen=True needs torch.nn.attention.varlen.varlen_attn "
                             "with `scale` and `window_size` arguments (PyTorch 2.11 or later)")

    def store_kv(self, k, v, k_cache, v_cache, meta: AttentionMetadata) -> None:
        store_kv_cache(k, v, k_cache, v_cache, meta.slot_mapping)

    @contextmanager
    def capturing(self, batch_size: int, max_seq_len: int, kv_heads: int):
        self.decode_splits = decode_splits_for(max_seq_len, batch_size, kv_heads)
        try:
            yield
        finally:
            self.decode_splits = None  # eager steps choose per step again

    def prefill(self, q, k, v, k_cache, v_cache, meta: AttentionMetadata, scale: float,
                out: torch.Tensor | None = None) -> torch.Tensor:
        """``out`` (optional, [tokens, heads, head_dim]) receives the result; every element is written."""
        assert q.stride(-1) == 1 and k_cache.stride() == v_cache.stride() and k_cache.stride(-1) == 1
        if self._use_torch_varlen(q, meta):
            varlen_attn, extra = self.torch_varlen
            cu, n = meta.query_start_loc, meta.max_query_len
            # No cached prefix: the keys are this step's own, packed like the queries. (-1, 0) = causal.
            result = varlen_attn(q, k, v, cu, cu, n, n, scale=scale, window_size=(-1, 0), **extra)
            return result if out is None else out.copy_(result)
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device) if out is None else out
        num_heads, head_dim = q.shape[1], q.shape[2]
        block_m, block_n, num_warps = _tiles(q.dtype)
        # max_query_len is a host number known at prepare time: the grid needs no device sync.
        grid = (triton.cdiv(meta.max_query_len, block_m), meta.num_seqs, num_heads)
        _prefill_kernel[grid](
            q, k_cache, v_cache, out, meta.block_tables, meta.seq_lens, meta.query_start_loc, scale * LOG2E,
            q.stride(0), q.stride(1), out.stride(0), out.stride(1), *k_cache.stride()[:3],
            meta.block_tables.stride(0), num_heads // k_cache.shape[2], head_dim, BLOCK_SIZE=k_cache.shape[1],
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=max(16, triton.next_power_of_2(head_dim)),
            PRECISION=_precision(q.dtype), num_warps=num_warps, num_stages=2)
        return out

    def decode(self, q, k_cache, v_cache, meta: AttentionMetadata, scale: float,
               out: torch.Tensor | None = None) -> torch.Tensor:
        assert q.stride(-1) == 1 and k_cache.stride() == v_cache.stride() and k_cache.stride(-1) == 1
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device) if out is None else out
        num_seqs, num_heads, head_dim = q.shape
        kv_heads = k_cache.shape[2]
        group = num_heads // kv_heads
        splits = self.decode_splits or decode_splits_for(meta.max_seq_len, num_seqs, kv_heads)
        # One scratch buffer per step for the splits' partial states, shared by every layer.
        key = ("triton_decode_partials", num_seqs, num_heads, splits, head_dim)
        if key not in meta.scratch:
            rows = num_seqs * num_heads * splits
            meta.scratch[key] = (torch.empty(rows * head_dim, dtype=torch.float32, device=q.device),
                                 torch.empty(rows * 2, dtype=torch.float32, device=q.device))
        part_acc, part_ml = meta.scratch[key]
        block_d = max(16, triton.next_power_of_2(head_dim))
        pdl = launch_options(q.device)
        _decode_kernel[(kv_heads, num_seqs, splits)](
            q, k_cache, v_cache, out, part_acc, part_ml, meta.block_tables, meta.seq_lens, scale * LOG2E,
            q.stride(0), q.stride(1), out.stride(0), out.stride(1), *k_cache.stride()[:3],
            meta.block_tables.stride(0), num_heads, group, head_dim, self.decode_fresh_tokens,
            NUM_SPLITS=splits, BLOCK_SIZE=k_cache.shape[1], BLOCK_G=max(16, triton.next_power_of_2(group)),
            BLOCK_N=_tiles(q.dtype)[1], BLOCK_D=block_d, PRECISION=_precision(q.dtype),
            PREFETCH=splits > 1 and num_seqs <= PREFETCH_MAX_SEQS, USE_PDL=bool(pdl), num_warps=4, num_stages=2, **pdl)
        if splits > 1:
            _decode_reduce_kernel[(num_seqs, num_heads)](
                out, part_acc, part_ml, out.stride(0), out.stride(1), num_heads, head_dim,
                NUM_SPLITS=splits, BLOCK_S=triton.next_power_of_2(splits), BLOCK_D=block_d, USE_PDL=bool(pdl),
                **pdl)
        return out

    def _use_torch_varlen(self, q, meta: AttentionMetadata) -> bool:
        return (self.torch_varlen is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)
                and not meta.is_decode and meta.no_prefix)


def _precision(dtype: torch.dtype) -> str:
    """float32 inputs get exact float32 products; tl.dot's default on a GPU rounds them to tf32."""
    return "ieee" if dtype == torch.float32 else "tf32"
