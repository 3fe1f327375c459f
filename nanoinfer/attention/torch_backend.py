"""Reference attention in plain PyTorch over the paged KV cache: exact in float32, runs anywhere.

Three paths, chosen per step from the metadata:
  decode         one query per sequence: gather each sequence's blocks, attend. Sequences are sorted by
                 length and split into a few buckets, each padded only to its own longest context.
  fresh prefill  no sequence has cached tokens: causal attention over this step's own keys per sequence.
  general        chunked prefill or prefix-cache hits: gather the context, pad queries, explicit mask.
The ``naive`` backend always takes the general path, with the score matrix written out (naive_attention).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nanoinfer.attention.base import AttentionBackend, AttentionMetadata
from nanoinfer.workbook.registry import learner_code


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                    scale: float) -> torch.Tensor:
    """softmax(q k^T * scale) v with the whole [B, H, Lq, Lk] score matrix in memory, the matrix that
    FlashAttention never materialises (Exercise 3.1). q: [B, H, Lq, D]; k, v: [B, Hkv, Lk, D], query head h
    using KV head h // (H // Hkv); mask: [B, 1, Lq, Lk], True where a query may attend."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(scale).masked_fill_(~mask, float("-inf"))
    return torch.matmul(torch.softmax(scores.float(), dim=-1).to(q.dtype), v)


def sdpa_attention(q, k, v, mask, scale):
    """The same through PyTorch's fused kernel (naive_attention's arguments)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=True)


def gather_context(cache: torch.Tensor, block_ids: torch.Tensor, num_seqs: int, length: int) -> torch.Tensor:
    """The first ``length`` cached tokens of each sequence as [num_seqs, kv_heads, length, head_dim].
    ``block_ids`` lists each sequence's blocks, row after row. index_select copies whole blocks and is
    several times faster than advanced indexing (``cache[tables]``)."""
    return cache.index_select(0, block_ids).view(num_seqs, -1, *cache.shape[2:])[:, :length].transpose(1, 2)


class TorchAttentionBackend(AttentionBackend):
    def __init__(self, naive: bool = False) -> None:
        self.name = "naive" if naive else "torch"
        self.naive = naive
        self.core = learner_code("3.1", naive_attention) if naive else sdpa_attention

    def store_kv(self, k, v, k_cache, v_cache, meta: AttentionMetadata) -> None:
        slots = meta.slot_mapping
        k_cache.view(-1, *k.shape[1:]).index_copy_(0, slots, k)
        v_cache.view(-1, *v.shape[1:]).index_copy_(0, slots, v)

    def prefill(self, q, k, v, k_cache, v_cache, meta: AttentionMetadata, scale: float) -> torch.Tensor:
        if meta.no_prefix and not self.naive:
            return self._fresh_prefill(q, k, v, meta, scale)
        return self._general(q, k_cache, v_cache, meta, scale)

    def decode(self, q, k_cache, v_cache, meta: AttentionMetadata, scale: float) -> torch.Tensor:
        if self.naive:
            return self._general(q, k_cache, v_cache, meta, scale)
        buckets = meta.scratch.get("decode_buckets") or meta.scratch.setdefault("decode_buckets", _buckets(meta))
        H, D = q.shape[1], q.shape[2]
        kv_heads = k_cache.shape[2]
        out = torch.empty_like(q)
        for seqs, block_ids, mask, length in buckets:
            b = len(seqs)
            k = gather_context(k_cache, block_ids, b, length)
            v = gather_context(v_cache, block_ids, b, length)
            # The query heads that share a KV head see the same keys under the same mask: treat them as
            # that head's H/kv_heads queries, which gives the kernel fewer, larger problems.
            o = sdpa_attention(q[seqs].view(b, kv_heads, H // kv_heads, D), k, v, mask, scale)
            out[seqs] = o.reshape(b, H, D)
        return out

    @staticmethod
    def _fresh_prefill(q, k, v, meta: AttentionMetadata, scale: float) -> torch.Tensor:
        """Each sequence attends causally to its own new tokens: nothing to gather, and one call per
        sequence lets the kernel skip the masked upper triangle and any padding."""
        out = torch.empty_like(q)
        start = 0
        for n in meta.query_lens_cpu:
            qs, ks, vs = (t[start : start + n].transpose(0, 1).unsqueeze(0) for t in (q, k, v))
            o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale, enable_gqa=True)
            out[start : start + n] = o[0].transpose(0, 1)
            start += n
        return out

    def _general(self, q, k_cache, v_cache, meta: AttentionMetadata, scale: float) -> torch.Tensor:
        layout = meta.scratch.get("general") or meta.scratch.setdefault("general", _PaddedLayout(meta))
        B, Lq, Lk = meta.num_seqs, meta.max_query_len, meta.max_seq_len
        k = gather_context(k_cache, layout.block_ids, B, Lk)
        v = gather_context(v_cache, layout.block_ids, B, Lk)
        qp = q.new_zeros(B, Lq, *q.shape[1:])
        qp[layout.row, layout.col] = q
        out = self.core(qp.transpose(1, 2), k, v, layout.mask, scale).transpose(1, 2)  # [B, Lq, H, D]
        return out[layout.row, layout.col]


def _buckets(meta: AttentionMetadata, per_bucket: int = 16):
    """Decode sequences sorted by context length, in groups of ~``per_bucket``; each group is padded to
    its own longest context only (with mixed lengths, one padded batch wasted about half its reads)."""
    device = meta.seq_lens.device
    lens = meta.seq_lens_cpu
    order = sorted(range(len(lens)), key=lens.__getitem__)
    num = max(1, round(len(order) / per_bucket))
    size = -(-len(order) // num)
    buckets = []
    for start in range(0, len(order), size):
        idx = order[start : start + size]
        length = lens[idx[-1]]
        num_blocks = -(-length // meta.block_size)
        seqs = torch.tensor(idx, device=device)
        block_ids = meta.block_tables[seqs, :num_blocks].reshape(-1).long()
        seq_lens = meta.seq_lens[seqs].long()
        mask = (torch.arange(length, device=device)[None, :] < seq_lens[:, None])[:, None, None, :]
        buckets.append((seqs, block_ids, mask, length))
    return buckets


class _PaddedLayout:
    """Index tensors and the mask for the general path, computed once per step and shared by all layers."""

    def __init__(self, meta: AttentionMetadata) -> None:
        device = meta.seq_lens.device
        B, Lq, Lk = meta.num_seqs, meta.max_query_len, meta.max_seq_len
        num_blocks = -(-Lk // meta.block_size)
        self.block_ids = meta.block_tables[:, :num_blocks].reshape(-1).long()
        q_lens = (meta.query_start_loc[1:] - meta.query_start_loc[:-1]).long()
        seq_lens = meta.seq_lens.long()
        # Which (sequence, offset) each packed query token goes to in the padded [B, Lq] layout.
        self.row = torch.repeat_interleave(torch.arange(B, device=device), q_lens)
        self.col = torch.arange(self.row.shape[0], device=device) - meta.query_start_loc[:-1].long()[self.row]
        # Query i of a sequence sits at position seq_len - q_len + i and sees keys at or before it.
        q_pos = (seq_lens - q_lens)[:, None] + torch.arange(Lq, device=device)[None, :]
        k_pos = torch.arange(Lk, device=device)
        mask = (k_pos[None, None, :] <= q_pos[:, :, None]) & (k_pos[None, None, :] < seq_lens[:, None, None])
        self.mask = mask.unsqueeze(1)  # [B, 1, Lq, Lk]
