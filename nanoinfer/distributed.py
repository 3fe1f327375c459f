"""Tensor-parallel state and the collectives the parallel layers call, with byte and time counters.

With ``tensor_parallel_size=1`` (the default) every collective returns its input at once: the parallel
layers then cost nothing extra.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class CommStats:
    """What this rank sent through collectives since the last reset (the "communication vs computation"
    experiment reads these). Times are wall-clock around the call; on a GPU they include a synchronize
    only when ``timed`` is on, so normal runs stay asynchronous."""

    all_reduce_calls: int = 0
    all_reduce_bytes: int = 0
    all_gather_calls: int = 0
    all_gather_bytes: int = 0
    seconds: float = 0.0
    timed: bool = False

    def reset(self) -> None:
        timed = self.timed
        self.__init__()
        self.timed = timed


_tp_rank = 0
_tp_size = 1
comm_stats = CommStats()


def tp_rank() -> int:
    return _tp_rank


def tp_size() -> int:
    return _tp_size


def set_tensor_parallel(rank: int, size: int) -> None:
    """Record this process's place in the tensor-parallel group (the process group is made by the caller)."""
    global _tp_rank, _tp_size
    _tp_rank, _tp_size = rank, size


def _timed(fn, x: torch.Tensor) -> None:
    if not comm_stats.timed or (x.is_cuda and torch.cuda.is_current_stream_capturing()):
        fn()  # (no synchronising inside a CUDA-graph capture; replays bypass Python anyway)
        return
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    t0 = time.perf_counter()
    fn()
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    comm_stats.seconds += time.perf_counter() - t0


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    """Sum ``x`` over the tensor-parallel ranks, in place."""
    if _tp_size == 1:
        return x
    comm_stats.all_reduce_calls += 1
    comm_stats.all_reduce_bytes += x.numel() * x.element_size()
    _timed(lambda: dist.all_reduce(x), x)
    return x


def all_gather_last_dim(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``x`` along the last dimension (used for the vocabulary-sharded logits)."""
    if _tp_size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(_tp_size)]
    comm_stats.all_gather_calls += 1
    comm_stats.all_gather_bytes += x.numel() * x.element_size() * _tp_size
    _timed(lambda: dist.all_gather(parts, x.contiguous()), x)
    return torch.cat(parts, dim=-1)


def broadcast_from_rank0(x: torch.Tensor) -> torch.Tensor:
    """Give every rank rank 0's ``x`` (in place; used for the previous step's sampled tokens)."""
    if _tp_size == 1:
        return x
    _timed(lambda: dist.broadcast(x, src=0), x)
    return x
