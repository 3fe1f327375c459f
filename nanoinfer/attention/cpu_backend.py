"""The ``cpu`` attention backend, a fast path: the torch backend with decode attention and the KV-cache write
in C (cpu_backend.c).

Decode attention is the one place where the torch path wastes most on a CPU: it copies every sequence's blocks
into a padded tensor before SDPA reads them; the C kernel reads the blocks in place. It is compiled with the
system C compiler the first time it is needed (fast/cpu_build.py); without one, ``auto`` falls back to the torch
backend. Prefill and chunked prefill keep the torch paths (their cost is in the matrix products, not here).
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import torch

from nanoinfer.attention.base import AttentionMetadata
from nanoinfer.attention.torch_backend import TorchAttentionBackend
from nanoinfer.fast.cpu_build import build_and_load, float32_cpu

SOURCE = Path(__file__).with_name("cpu_backend.c")


@lru_cache(maxsize=1)
def load_kernel() -> ctypes.CDLL | None:
    lib = build_and_load(SOURCE, "the CPU attention kernel")
    if lib is not None:
        lib.paged_decode_attention.restype = None
        lib.paged_decode_attention.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_int] * 6 + [ctypes.c_float]
        lib.store_kv.restype = ctypes.c_long
        lib.store_kv.argtypes = [ctypes.c_void_p, ctypes.c_long] * 2 + [ctypes.c_void_p] * 3 + [ctypes.c_long] * 3
    return lib


def kernel_available() -> bool:
    return load_kernel() is not None


def check_decode_inputs(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                        block_tables: torch.Tensor, seq_lens: torch.Tensor) -> None:
    """Refuse what the kernel would read out of bounds with: dtypes, devices, shapes, context lengths."""
    for name, t, dtype in (("q", q, torch.float32), ("k_cache", k_cache, torch.float32),
                           ("v_cache", v_cache, torch.float32), ("block_tables", block_tables, torch.int32),
                           ("seq_lens", seq_lens, torch.int32)):
        if t.device.type != "cpu" or t.dtype != dtype:
            raise TypeError(f"{name} must be a {dtype} CPU tensor, got {t.dtype} on {t.device}")
    num_blocks, block_size, kv_heads, head_dim = k_cache.shape
    seqs, heads, q_dim = q.shape
    if heads % kv_heads or q_dim != head_dim or v_cache.shape != k_cache.shape:
        raise ValueError(f"q {tuple(q.shape)} does not fit caches {tuple(k_cache.shape)} / {tuple(v_cache.shape)}")
    if block_tables.dim() != 2 or block_tables.shape[0] != seqs or seq_lens.shape != (seqs,):
        raise ValueError(f"block_tables {tuple(block_tables.shape)} and seq_lens {tuple(seq_lens.shape)} must have "
                         f"one row per query ({seqs})")
    if seqs and not (1 <= int(seq_lens.min()) and int(seq_lens.max()) <= block_tables.shape[1] * block_size):
        raise ValueError(f"seq_lens must be in [1, {block_tables.shape[1] * block_size}] (the block tables' width)")
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("the KV cache views must be contiguous")


def paged_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           block_tables: torch.Tensor, seq_lens: torch.Tensor, scale: float,
                           check: bool = True) -> torch.Tensor:
    """q: [seqs, heads, head_dim] float32; caches [num_blocks, block_size, kv_heads, head_dim]; block_tables
    [seqs, max_blocks] int32; seq_lens [seqs] int32. ``check=False``: ``check_decode_inputs`` ran on this step."""
    lib = load_kernel()
    if lib is None:
        raise RuntimeError("the CPU attention kernel is not available (no C compiler?)")
    if check:
        check_decode_inputs(q, k_cache, v_cache, block_tables, seq_lens)
    num_blocks, block_size, kv_heads, head_dim = k_cache.shape
    seqs, heads, _ = q.shape
    q, block_tables, seq_lens = q.contiguous(), block_tables.contiguous(), seq_lens.contiguous()
    out = torch.empty_like(q)
    lib.paged_decode_attention(q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), block_tables.data_ptr(),
                               seq_lens.data_ptr(), out.data_ptr(), seqs, heads, kv_heads, head_dim, block_size,
                               block_tables.shape[1], scale)
    return out


def _rows_of(t: torch.Tensor, row: int) -> bool:
    """True when each token's heads lie side by side (``row`` floats), whatever the token stride."""
    return t.dim() == 3 and t.shape[1] * t.shape[2] == row and t.stride(2) == 1 and t.stride(1) == t.shape[2]


def store_kv_cache(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                   slots: torch.Tensor) -> bool:
    """Copy k and v ([tokens, kv_heads, head_dim] float32) into the caches' slots in one C call.
    False (nothing written) when the layout is not one the C loop takes; raises on a slot out of range."""
    lib = load_kernel()
    row = k_cache.shape[-2] * k_cache.shape[-1]
    num_slots = k_cache.numel() // row
    if (lib is None or not float32_cpu(k, v, k_cache, v_cache) or slots.dtype != torch.int64
            or slots.device.type != "cpu" or not slots.is_contiguous() or k.shape != v.shape
            or slots.shape != k.shape[:1] or not (_rows_of(k, row) and _rows_of(v, row))
            or not (k_cache.is_contiguous() and v_cache.is_contiguous()) or v_cache.shape != k_cache.shape):
        return False
    bad = lib.store_kv(k.data_ptr(), k.stride(0), v.data_ptr(), v.stride(0), k_cache.data_ptr(), v_cache.data_ptr(),
                       slots.data_ptr(), k.shape[0], row, num_slots)
    if bad >= 0:
        raise IndexError(f"slot {int(slots[bad])} of token {bad} is outside the KV cache (0 to {num_slots - 1})")
    return True


class CpuAttentionBackend(TorchAttentionBackend):
    def __init__(self) -> None:
        super().__init__()
        self.name = "cpu"

    def store_kv(self, k, v, k_cache, v_cache, meta: AttentionMetadata) -> None:
        if not store_kv_cache(k, v, k_cache, v_cache, meta.slot_mapping):
            super().store_kv(k, v, k_cache, v_cache, meta)

    def decode(self, q, k_cache, v_cache, meta: AttentionMetadata, scale: float) -> torch.Tensor:
        if q.dtype != torch.float32:  # the kernel is float32 only
            return super().decode(q, k_cache, v_cache, meta, scale)
        # Every layer of a step sees the same tables and lengths (and caches of one shape): check once.
        first_layer = "cpu_kernel_checked" not in meta.scratch
        meta.scratch["cpu_kernel_checked"] = True
        return paged_decode_attention(q, k_cache, v_cache, meta.block_tables, meta.seq_lens, scale, check=first_layer)
