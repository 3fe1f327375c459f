"""Tensor-parallel state and the collectives the parallel layers call, with byte and time counters.

With ``tensor_parallel_size=1`` (the default) every collective returns its input at once: the parallel
layers then cost nothing extra.
"""

from __future__ import annotations

import math
import os
import time
import warnings
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

    def volume(self) -> tuple[int, int, int, int]:
        """Calls and bytes so far: (all-reduce calls, bytes, all-gather calls, bytes)."""
        return self.all_reduce_calls, self.all_reduce_bytes, self.all_gather_calls, self.all_gather_bytes

    def add_volume(self, volume: tuple[int, int, int, int]) -> None:
        """Count collectives that ran without Python seeing them (a CUDA graph's replay)."""
        self.all_reduce_calls += volume[0]
        self.all_reduce_bytes += volume[1]
        self.all_gather_calls += volume[2]
        self.all_gather_bytes += volume[3]


_tp_rank = 0
_tp_size = 1
comm_stats = CommStats()
_peer_all_reduce = None  # a PeerMemoryAllReduce when the GPUs can read each other's memory
_sum_in_place = True  # row-parallel layers multiply into the peer-memory buffers (all_reduce_output)
_one_shot = False  # NANOINFER_ALL_REDUCE=peer-oneshot: those buffers are summed by a one-shot kernel
_peer_tried_in_this_process = False


class PeerMemoryAllReduce:
    """All-reduce of small tensors through memory that every GPU of the group can read (PyTorch's
    symmetric memory over NVLink): each rank's part is in a shared buffer (a row-parallel layer writes
    it there directly, see ``output_slot``; other tensors are copied in and out), then a two-shot kernel
    sums a slice per rank and gathers the slices, with no NCCL ring in between. A decode step's
    all-reduces are a few MB at most and NCCL spends most of their time on latency, not bandwidth.
    Larger tensors (prefill) and other dtypes still go through NCCL.

    Unlike NCCL, its kernels cannot be aborted: if a rank dies, the others' GPUs wait inside it. The
    engine therefore polls its step's completion and the workers' watchdog (``ModelRunner.wait``)."""

    def __init__(self, device: torch.device, dtype: torch.dtype, max_bytes: int = 8 << 20) -> None:
        import torch.distributed._symmetric_memory as symm_mem

        self.group_name = dist.group.WORLD.group_name
        # One buffer for tensors that are copied in and out, and two that row-parallel layers multiply
        # straight into (``output_slot``), which saves both copies.
        self.buffer, *self.slots = (symm_mem.empty(max_bytes // dtype.itemsize, dtype=dtype, device=device)
                                    for _ in range(3))
        self._symm_mem = symm_mem
        self.in_place_calls = 0  # sums of tensors already in a slot (the tests check that this path runs)

    def rendezvous(self) -> None:
        """Exchange the buffers' handles (every rank at once)."""
        for buffer in (self.buffer, *self.slots):
            self._symm_mem.rendezvous(buffer, self.group_name)

    def accepts(self, x: torch.Tensor) -> bool:
        nbytes = x.numel() * x.element_size()
        return (x.is_cuda and x.dtype == self.buffer.dtype and 0 < x.numel() <= self.buffer.numel()
                and nbytes % 16 == 0 and x.is_contiguous())

    def output_slot(self, slot: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor | None:
        """A tensor of ``shape`` at the start of shared buffer ``slot`` (0 or 1), or None if it does not fit."""
        buffer = self.slots[slot]
        numel = math.prod(shape)
        if dtype != buffer.dtype or not 0 < numel <= buffer.numel() or (numel * buffer.element_size()) % 16:
            return None
        return buffer[:numel].view(shape)

    def __call__(self, x: torch.Tensor, one_shot: bool = False) -> torch.Tensor:
        """The sum: ``x`` itself, or with ``one_shot`` a new tensor when ``x`` is in a slot."""
        for slot in self.slots:
            if x.data_ptr() == slot.data_ptr():  # already in shared memory: sum it where it is
                self.in_place_calls += 1
                if one_shot:  # every rank reads every slot whole: the sum goes to a new tensor
                    total = torch.ops.symm_mem.one_shot_all_reduce(slot[: x.numel()], "sum", self.group_name)
                    return total.view(x.shape)
                torch.ops.symm_mem.two_shot_all_reduce_(slot[: x.numel()], "sum", self.group_name)
                return x
        part = self.buffer[: x.numel()]
        part.copy_(x.view(-1))
        torch.ops.symm_mem.two_shot_all_reduce_(part, "sum", self.group_name)
        return x.view(-1).copy_(part).view(x.shape)


def _all_ranks_agree(ok: bool, device: torch.device) -> bool:
    flag = torch.tensor([1 if ok else 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def enable_peer_all_reduce(device: torch.device, dtype: torch.dtype) -> str:
    """Use PeerMemoryAllReduce for small all-reduces if every rank can set it up and it sums correctly
    (checked once, here); otherwise stay with NCCL. Every rank must call this. The ranks agree after each
    stage (allocate, exchange handles, a probe sum), so that no rank waits in a stage another one left.
    Returns the choice."""
    global _peer_all_reduce, _peer_tried_in_this_process, _sum_in_place, _one_shot
    _peer_all_reduce = None
    # peer, nccl, peer-copy (peer memory, but row-parallel outputs copied in and out) or peer-oneshot
    # (the outputs summed by a one-shot kernel: one barrier instead of two, each rank reads all): the
    # last two for comparison
    choice = os.environ.get("NANOINFER_ALL_REDUCE", "peer")
    version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    if choice == "nccl" or dtype not in (torch.bfloat16, torch.float16) or version < (2, 11):
        return "nccl"  # (older symmetric-memory APIs differ)
    # A second engine in the same caller process (a notebook cell run twice): PyTorch's symmetric memory
    # then waited 120 s in its rendezvous and failed (seen twice on H200 x2, torch 2.11), so rank 0 says
    # no at once and every rank stays with NCCL. The ranks agree on that before any of them allocates:
    # a worker must not allocate symmetric memory that rank 0 never will (an allocation may wait for
    # every rank, and so may freeing it).
    if not _all_ranks_agree(not _peer_tried_in_this_process, device):
        if _tp_rank == 0:  # (the workers are new processes: the caller's notebook is the one to restart)
            warnings.warn("this process already tried to set up the peer-memory all-reduce for an earlier "
                          "engine, and PyTorch cannot set it up twice: this engine's all-reduces go through NCCL "
                          "(slower decode); start a new Python process (restart the kernel) for the faster path")
        return "nccl"
    candidate = None
    try:
        candidate = PeerMemoryAllReduce(device, dtype)
    except Exception:
        pass
    if not _all_ranks_agree(candidate is not None, device):
        return "nccl"
    _peer_tried_in_this_process = True  # from the first rendezvous on, whatever its outcome
    try:
        candidate.rendezvous()
        exchanged = True
    except Exception:
        exchanged = False
    if not _all_ranks_agree(exchanged, device):
        return "nccl"
    # A known sum through the copy path and through each slot, summed in place (or one-shot).
    probes = [torch.full((4096,), float(_tp_rank + 1), dtype=dtype, device=device)]
    probes += [candidate.output_slot(slot, (4096,), dtype).fill_(_tp_rank + 1) for slot in (0, 1)]
    one_shot = choice == "peer-oneshot"
    try:
        sums = [candidate(probe, one_shot) for probe in probes]
        ok = all(bool((total == _tp_size * (_tp_size + 1) / 2).all()) for total in sums)
        ok = ok and candidate.in_place_calls == 2
    except Exception:  # (an operator this torch lacks fails on every rank alike, before any kernel runs)
        ok = False
    if _all_ranks_agree(ok, device):
        _peer_all_reduce = candidate
        # every rank must take the same path for the same call: in-place sums only if all ranks agree
        _sum_in_place = _all_ranks_agree(choice != "peer-copy", device)
        _one_shot = _all_ranks_agree(one_shot, device)
    return "peer" if _peer_all_reduce is not None else "nccl"


def all_reduce_path() -> str:
    """How this process's all-reduces travel now (recorded beside benchmark results)."""
    if _tp_size == 1:
        return "none (one rank)"
    if _peer_all_reduce is None:
        return "NCCL/gloo"
    how = "row-parallel outputs summed in place" if _sum_in_place else "copied in and out"
    kernel = "one-shot for row-parallel outputs" if _one_shot else "two-shot"
    return f"peer memory ({kernel}; {how}) for small tensors, NCCL for the rest"


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
    """Sum ``x`` over the tensor-parallel ranks; returns the sum: ``x`` itself, summed in place, except
    on the one-shot peer path (NANOINFER_ALL_REDUCE=peer-oneshot), which returns a new tensor."""
    if _tp_size == 1:
        return x
    comm_stats.all_reduce_calls += 1
    comm_stats.all_reduce_bytes += x.numel() * x.element_size()
    if _peer_all_reduce is not None and _peer_all_reduce.accepts(x):
        return _timed(lambda: _peer_all_reduce(x, _one_shot), x)
    _timed(lambda: dist.all_reduce(x), x)
    return x


def all_reduce_output(slot: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor | None:
    """Where a row-parallel layer may write its partial sums so that ``all_reduce`` adds them up in place,
    without copying them into and out of the peer-memory buffer: a view of shared buffer ``slot``, or None
    (then compute into a fresh tensor) when the peer path is off or the tensor is too big. Consecutive
    row-parallel layers use the two slots in turn: a result stays valid until the next-but-one such layer
    runs, by which time the model has consumed it."""
    if _tp_size == 1 or _peer_all_reduce is None or not _sum_in_place:
        return None
    return _peer_all_reduce.output_slot(slot, shape, dtype)


def all_gather_last_dim(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``x`` along the last dimension (used for the vocabulary-sharded logits)."""
    if _tp_size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(_tp_size)]
    comm_stats.all_gather_calls += 1
    comm_stats.all_gather_bytes += x.numel() * x.element_size() * _tp_size
    _timed(lambda: dist.all_gather(parts, x.contiguous()), x)
    return torch.cat(parts, dim=-1)


def all_gather_stacked(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` stacked along a new first dimension (used for the sampled shards' winners)."""
    if _tp_size == 1:
        return x.unsqueeze(0)
    parts = [torch.empty_like(x) for _ in range(_tp_size)]
    comm_stats.all_gather_calls += 1
    comm_stats.all_gather_bytes += x.numel() * x.element_size() * _tp_size
    _timed(lambda: dist.all_gather(parts, x.contiguous()), x)
    return torch.stack(parts)


def broadcast_from_rank0(x: torch.Tensor) -> torch.Tensor:
    """Give every rank rank 0's ``x`` (in place; used for the previous step's sampled tokens)."""
    if _tp_size == 1:
        return x
    _timed(lambda: dist.broadcast(x, src=0), x)
    return x
