"""What every attention backend is given and what it must do.

Each step, the ModelRunner describes the batch once (``AttentionMetadata``); every layer then writes its
new keys and values into their cache slots (``store_kv``) and attends each query to its sequence's whole
context, read through the sequence's block table (``prefill`` or ``decode``). Because the write comes
first, prefix blocks that another sequence fills in this same step are already readable.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

import torch


@dataclass
class AttentionMetadata:
    """One step's batch, as every attention layer sees it."""

    is_decode: bool  # every sequence feeds exactly one token
    slot_mapping: torch.Tensor  # [tokens] int64: flat cache slot (block_id * block_size + offset) per new token
    query_start_loc: torch.Tensor  # [seqs + 1] int32: where each sequence's new tokens start in the batch
    seq_lens: torch.Tensor  # [seqs] int32: context length after this step (cached + new tokens)
    block_tables: torch.Tensor  # [seqs, max_blocks] int32: each sequence's physical blocks, padded with 0
    max_query_len: int
    max_seq_len: int
    block_size: int
    query_lens_cpu: list[int] = field(default_factory=list)  # host copies, for backends that loop over sequences
    seq_lens_cpu: list[int] = field(default_factory=list)
    scratch: dict = field(default_factory=dict)  # what a backend computes once per step for every layer

    @property
    def num_seqs(self) -> int:
        return self.seq_lens.shape[0]

    @property
    def no_prefix(self) -> bool:
        """No sequence has earlier tokens in the cache: attention needs only this step's k and v."""
        return self.query_lens_cpu == self.seq_lens_cpu


class AttentionBackend:
    """The protocol. q: [tokens, heads, head_dim]; k, v: [tokens, kv_heads, head_dim]; each cache:
    [num_blocks, block_size, kv_heads, head_dim]. Results have q's shape."""

    name: str
    supports_cuda_graphs = False  # decode reads every length from device tensors, so a replay fits any batch

    def store_kv(self, k, v, k_cache, v_cache, meta: AttentionMetadata) -> None:
        raise NotImplementedError

    def prefill(self, q, k, v, k_cache, v_cache, meta: AttentionMetadata, scale: float) -> torch.Tensor:
        """Several new tokens per sequence, after any cached ones (chunked prefill, prefix-cache hits)."""
        raise NotImplementedError

    def decode(self, q, k_cache, v_cache, meta: AttentionMetadata, scale: float) -> torch.Tensor:
        """One new token per sequence; its k and v are already in the cache."""
        raise NotImplementedError

    def forward(self, q, k, v, k_cache, v_cache, meta: AttentionMetadata, scale: float) -> torch.Tensor:
        if meta.is_decode:
            return self.decode(q, k_cache, v_cache, meta, scale)
        return self.prefill(q, k, v, k_cache, v_cache, meta, scale)

    def capturing(self, batch_size: int, max_seq_len: int, kv_heads: int):
        """A context for capturing a decode graph of ``batch_size`` rows (fixing launch shapes that would
        otherwise follow the lengths)."""
        return nullcontext()
