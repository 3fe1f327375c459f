"""Tensor-parallel state and the collectives the parallel layers call, with byte and time counters.

With ``tensor_parallel_size=1`` (the default) every collective returns its input at once: the parallel
layers then cost nothing extra.
"""

from __future__ import annotations

import os
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
_peer_all_reduce = None  # a PeerMemoryAllReduce when the GPUs can read each other's memory


class PeerMemoryAllReduce:
    """All-reduce of small tensors through memory that every GPU of the group can read (PyTorch's
    symmetric memory over NVLink): each rank copies its part into a shared buffer, then a two-shot
    kernel sums a slice per rank and gathers the slices, with no NCCL ring in between. A decode step's
    all-reduces are a few MB at most and NCCL spends most of their time on latency, not bandwidth.
    Larger tensors (prefill) and other dtypes still go through NCCL.

    Unlike NCCL, its kernels cannot be aborted: if a rank dies, the others' GPUs wait inside it. The
    engine therefore polls its step's completion and the workers' watchdog (``ModelRunner.wait``)."""

    def __init__(self, device: torch.device, dtype: torch.dtype, max_bytes: int = 8 << 20) -> None:
        import torch.distributed._symmetric_memory as symm_mem

        self.group_name = dist.group.WORLD.group_name
        self.buffer = symm_mem.empty(max_bytes // dtype.itemsize, dtype=dtype, device=device)
        self._symm_mem = symm_mem

    def rendezvous(self) -> None:
        """Exchange the buffers' handles (every rank at once)."""
        self._symm_mem.rendezvous(self.buffer, self.group_name)

    def accepts(self, x: torch.Tensor) -> bool:
        nbytes = x.numel() * x.element_size()
        return (x.is_cuda and x.dtype == self.buffer.dtype and 0 < x.numel() <= self.buffer.numel()
                and nbytes % 16 == 0 and x.is_contiguous())

    def __call__(self, x: torch.Tensor) -> None:
        part = self.buffer[: x.numel()]
        part.copy_(x.view(-1))
        torch.ops.symm_mem.two_shot_all_reduce_(part, "sum", self.group_name)
        x.view(-1).copy_(part)


def _all_ranks_agree(ok: bool, device: torch.device) -> bool:
    flag = torch.tensor([1 if ok else 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def enable_peer_all_reduce(device: torch.device, dtype: torch.dtype) -> str:
    """Use PeerMemoryAllReduce for small all-reduces if every rank can set it up and it sums correctly
    (checked once, here); otherwise stay with NCCL. Every rank must call this. The ranks agree after each
    stage (allocate, exchange handles, a probe sum), so that no rank waits in a stage another one left.
    Returns the choice."""
    global _peer_all_reduce
    _peer_all_reduce = None
    choice = os.environ.get("NANOINFER_ALL_REDUCE", "peer")  # peer or nccl
    version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    if choice == "nccl" or dtype not in (torch.bfloat16, torch.float16) or version < (2, 11):
        return "nccl"  # (older symmetric-memory APIs differ)
    candidate = None
    try:
        candidate = PeerMemoryAllReduce(device, dtype)
    except Exception:
        pass
    if not _all_ranks_agree(candidate is not None, device):
        return "nccl"
    try:
        candidate.rendezvous()
        exchanged = True
    except Exception:
        exchanged = False
    if not _all_ranks_agree(exchanged, device):
        return "nccl"
    probe = torch.full((4096,), float(_tp_rank + 1), dtype=dtype, device=device)
    try:
        candidate(probe)
        ok = bool((probe == _tp_size * (_tp_size + 1) / 2).all())
    except Exception:  # (an operator this torch lacks fails on every rank alike, before any kernel runs)
        ok = False
    if _all_ranks_agree(ok, device):
        _peer_all_reduce = candidate
    return "peer" if _peer_all_reduce is not None else "nccl"


def all_reduce_path() -> str:
    """How this process's all-reduces travel now (recorded beside benchmark results)."""
    if _tp_size == 1:
        return "none (one rank)"
    if _peer_all_reduce is None:
        return "NCCL/gloo"
    return "peer memory (two-shot) for small tensors, NCCL for the rest"


_failed_peer_buffers: list = []


def disable_peer_all_reduce(after_failure: bool = False) -> None:
    """Back to NCCL alone. After a rank died this GPU may be stuck in a peer-memory kernel, and
    unmapping the shared buffer would wait for it forever: then the buffer is kept until the process ends."""
    global _peer_all_reduce
    if after_failure and _peer_all_reduce is not None:
        _failed_peer_buffers.append(_peer_all_reduce)
    _peer_all_reduce = None


def peer_all_reduce_enabled() -> bool:
    return _peer_all_reduce is not None


def peer_buffer_kept() -> bool:
    """True once a rank died with the peer-memory all-reduce on (this GPU may be stuck in its kernel)."""
    return bool(_failed_peer_buffers)


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
    if _peer_all_reduce is not None and _peer_all_reduce.accepts(x):
        _timed(lambda: _peer_all_reduce(x), x)
    else:
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
