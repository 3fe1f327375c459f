"""Attention over the paged KV cache: the layer, the per-step metadata, and the backend choice.

Every layer first writes the new tokens' keys and values into their cache slots, then attends each
query to its sequence's whole context, read through the sequence's block table. Because the write
comes first, prefix blocks that another sequence fills in this same step are already readable.

Backends (``attention_backend``):
  torch      - plain PyTorch over the block tables; the float32 reference
  cpu        - the torch backend with decode attention in C, reading the blocks in place (CPU default)
  naive      - the same, but materialising the full score matrix (Exercise 3.1), for comparison
  triton     - the project's Triton kernels (GPU)
  flash_attn - the flash-attn package (GPU, when installed)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class AttentionMetadata:
    """Describes one step's batch to every attention layer (built once per step by the ModelRunner)."""

    is_decode: bool  # every sequence feeds exactly one token
    slot_mapping: torch.Tensor  # [tokens] int64: flat cache slot (block_id * block_size + offset) per new token
    query_start_loc: torch.Tensor  # [seqs + 1] int32: where each sequence's new tokens start in the batch
    seq_lens: torch.Tensor  # [seqs] int32: context length after this step (cached + new tokens)
    block_tables: torch.Tensor  # [seqs, max_blocks] int32: each sequence's physical blocks, padded with 0
    max_query_len: int
    max_seq_len: int
    block_size: int
    # CPU copies of the lengths, for backends that loop over sequences
    query_lens_cpu: list[int] = field(default_factory=list)
    seq_lens_cpu: list[int] = field(default_factory=list)
    scratch: dict = field(default_factory=dict)  # what is computed once per step and reused by every layer

    @property
    def num_seqs(self) -> int:
        return self.seq_lens.shape[0]

    @property
    def no_prefix(self) -> bool:
        """True when no sequence has earlier tokens in the cache: attention needs only this step's k, v."""
        return self.query_lens_cpu == self.seq_lens_cpu


class Attention(nn.Module):
    """Paged attention for one layer. The ModelRunner sets ``k_cache``/``v_cache`` (views of the big KV
    tensor, [num_blocks, block_size, kv_heads, head_dim]) and ``backend`` before the first step."""

    def __init__(self, num_heads: int, head_dim: int, scale: float, num_kv_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.num_kv_heads = num_heads, head_dim, num_kv_heads
        self.scale = scale
        self.k_cache: torch.Tensor | None = None
        self.v_cache: torch.Tensor | None = None
        self.backend = None

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata,
                kv_stored: bool = False) -> torch.Tensor:
        """q: [tokens, heads, head_dim]; k, v: [tokens, kv_heads, head_dim] -> [tokens, heads, head_dim].
        ``kv_stored``: k and v are already in their cache slots (a fused kernel wrote them)."""
        if not kv_stored:
            self.backend.store_kv(k, v, self.k_cache, self.v_cache, meta)
        return self.backend.forward(q, k, v, self.k_cache, self.v_cache, meta, self.scale)


def make_attention_backend(name: str, device: torch.device, block_size: int | None = None):
    """Instantiate a backend by name; ``auto`` picks the fastest one available on ``device`` (flash-attn
    only when the block size suits its paged kernels)."""
    if name == "auto":
        name = _best_cpu_backend() if device.type != "cuda" else _best_gpu_backend(block_size)
    if name == "cpu" and device.type == "cpu":
        from nanoinfer.layers.attention_cpu import CpuAttentionBackend, kernel_available

        if not kernel_available():
            raise RuntimeError("attention_backend='cpu' needs a C compiler with OpenMP (cc) to build its kernel; "
                               "use 'torch' instead")
        return CpuAttentionBackend()
    if name in ("torch", "naive"):
        from nanoinfer.layers.attention_torch import TorchAttentionBackend

        return TorchAttentionBackend(naive=name == "naive")
    if name == "triton" and (device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"):
        from nanoinfer.layers.attention_triton import TritonAttentionBackend

        return TritonAttentionBackend()
    if device.type != "cuda":
        interpreter = " (or TRITON_INTERPRET=1, to run its kernels in Triton's interpreter)" if name == "triton" else ""
        raise ValueError(f"attention_backend={name!r} needs a CUDA device{interpreter}; "
                         "on a CPU use 'cpu', 'torch' or 'naive'")
    if name == "cpu":
        raise ValueError("attention_backend='cpu' runs on a CPU only; on a GPU use 'triton', 'flash_attn' or 'torch'")
    if name == "flash_attn":
        from nanoinfer.layers.attention_flash import FlashAttentionBackend

        return FlashAttentionBackend(block_size)
    raise ValueError(f"unknown attention_backend {name!r}")


def _best_cpu_backend() -> str:
    from nanoinfer.layers.attention_cpu import kernel_available

    return "cpu" if kernel_available() else "torch"


def _best_gpu_backend(block_size: int | None) -> str:
    try:
        import flash_attn  # noqa: F401

        if block_size is None or block_size % 256 == 0:
            return "flash_attn"
    except ImportError:
        pass
    try:
        import triton  # noqa: F401

        return "triton"
    except ImportError:
        return "torch"
