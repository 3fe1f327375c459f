"""Tensor-parallel state and the collectives the parallel layers call, with byte and time counters.

With ``tensor_parallel_size=1`` (the default) every collective returns its input at once: the parallel
layers then cost nothing extra. On GPUs small all-reduces may go through peer memory (peer_memory.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class CommStats:
    """What this rank sent through collectives since the last reset; with ``timed``, times include a GPU sync."""

    all_reduce_calls: int = 0
    all_reduce_bytes: int = 0
    all_gather_calls: int = 0
    all_gather_bytes: int = 0
    seconds: float = 0.0
    timed: bool = False

    def reset(self) -> None:
        self.__init__(timed=self.timed)

    def volume(self) -> tuple[int, int, int, int]:
        """Calls and bytes so far: (all-reduce calls, bytes, all-gather calls, bytes)."""
        return self.all_reduce_calls, self.all_reduce_bytes, self.all_gather_calls, self.all_gather_bytes

    def add_volume(self, volume: tuple[int, int, int, int]) -> None:
        """Count collectives that ran without Python seeing them (a CUDA graph's replay)."""
        self.all_reduce_calls, self.all_reduce_bytes, self.all_gather_calls, self.all_gather_bytes = (
            mine + more for mine, more in zip(self.volume(), volume))


_tp_rank, _tp_size = 0, 1
comm_stats = CommStats()
_peer_all_reduce = None  # a PeerMemoryAllReduce when the GPUs can read each other's memory
_sum_in_place = True  # row-parallel layers multiply into the peer-memory buffers (all_reduce_output)
_one_shot = False  # all_reduce="peer-oneshot": those buffers are summed by a one-shot kernel


def use_peer_all_reduce(peer, sum_in_place: bool = True, one_shot: bool = False) -> None:
    """Send small all-reduces through ``peer`` (a PeerMemoryAllReduce), or through NCCL again (None)."""
    global _peer_all_reduce, _sum_in_place, _one_shot
    _peer_all_reduce, _sum_in_place, _one_shot = peer, sum_in_place, one_shot


def peer_all_reduce_enabled() -> bool:
    return _peer_all_reduce is not None


def all_reduce_path() -> str:
    """How this process's all-reduces travel now (recorded beside benchmark results)."""
    if _tp_size == 1:
        return "none (one rank)"
    if _peer_all_reduce is None:
        return "NCCL/gloo"
    how = "row-parallel outputs summed in place" if _sum_in_place else "copied in and out"
    kernel = "one-shot for row-parallel outputs" if _one_shot else "two-shot"
    return f"peer memory ({kernel}; {how}) for small tensors, NCCL for the rest"


def tp_rank() -> int:
    return _tp_rank


def tp_size() -> int:
    return _tp_size


def set_tensor_parallel(rank: int, size: int) -> None:
    """Record this process's place in the tensor-parallel group (the process group is made by the caller)."""
    global _tp_rank, _tp_size
    _tp_rank, _tp_size = rank, size


def _timed(fn, x: torch.Tensor):
    """``fn()``, timed into comm_stats when measure_communication is on; returns what it returns."""
    if not comm_stats.timed or (x.is_cuda and torch.cuda.is_current_stream_capturing()):
        return fn()  # (no synchronising inside a CUDA-graph capture; replays bypass Python anyway)
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    t0 = time.perf_counter()
    result = fn()
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    comm_stats.seconds += time.perf_counter() - t0
    return result


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    """Sum ``x`` over the ranks, in place (returns ``x``) except on the one-shot peer path (a new tensor)."""
    if _tp_size == 1:
        return x
    comm_stats.all_reduce_calls += 1
    comm_stats.all_reduce_bytes += x.numel() * x.element_size()
    if _peer_all_reduce is not None and _peer_all_reduce.accepts(x):
        return _timed(lambda: _peer_all_reduce(x, _one_shot), x)
    _timed(lambda: dist.all_reduce(x), x)
    return x


def all_reduce_output(slot: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor | None:
    """Where a row-parallel layer may write its partial sums for ``all_reduce`` to add up in place, with no copy
    into and out of the peer-memory buffer: a view of shared buffer ``slot``, or None (compute into a fresh
    tensor) when the peer path is off or the tensor too big. Consecutive row-parallel layers use the two slots
    in turn: a result stays valid until the next-but-one such layer runs, by which time the model consumed it."""
    if _tp_size == 1 or _peer_all_reduce is None or not _sum_in_place:
        return None
    return _peer_all_reduce.output_slot(slot, shape, dtype)


def _all_gather(x: torch.Tensor) -> list[torch.Tensor]:
    parts = [torch.empty_like(x) for _ in range(_tp_size)]
    comm_stats.all_gather_calls += 1
    comm_stats.all_gather_bytes += x.numel() * x.element_size() * _tp_size
    _timed(lambda: dist.all_gather(parts, x.contiguous()), x)
    return parts


def all_gather_last_dim(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``x`` along the last dimension (used for the vocabulary-sharded logits)."""
    return x if _tp_size == 1 else torch.cat(_all_gather(x), dim=-1)


def all_gather_stacked(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` stacked along a new first dimension (used for the sampled shards' winners)."""
    return x.unsqueeze(0) if _tp_size == 1 else torch.stack(_all_gather(x))


def broadcast_from_rank0(x: torch.Tensor) -> torch.Tensor:
    """Give every rank rank 0's ``x`` (in place; used for the previous step's sampled tokens)."""
    if _tp_size > 1:
        _timed(lambda: dist.broadcast(x, src=0), x)
    return x
