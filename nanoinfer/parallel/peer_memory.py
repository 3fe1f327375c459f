"""The peer-memory all-reduce (GPUs): small tensors summed through memory that every GPU of the group can
read, instead of through an NCCL ring. Chosen by the ``all_reduce`` knob; comm.py routes to it."""

from __future__ import annotations

import math
import warnings
from contextlib import suppress

import torch
import torch.distributed as dist

from nanoinfer.layers.linear import RowParallelLinear
from nanoinfer.parallel import comm
from nanoinfer.parallel.comm import tp_rank, tp_size, use_peer_all_reduce

_peer_tried_in_this_process = False
_failed_peer_buffers: list = []  # see disable_peer_all_reduce


class PeerMemoryAllReduce:
    """PyTorch's symmetric memory over NVLink: each rank's part is in a shared buffer (a row-parallel layer
    writes it there directly, see ``output_slot``; other tensors are copied in and out), then a two-shot
    kernel sums a slice per rank and gathers the slices. A decode step's all-reduces are a few MB at most
    and NCCL spends most of their time on latency, not bandwidth. Larger tensors (prefill) and other dtypes
    still go through NCCL. Unlike NCCL, its kernels cannot be aborted: if a rank dies, the others' GPUs wait
    inside it, so the engine polls its step's completion and the workers' watchdog (``ParallelModelRunner``)."""

    def __init__(self, device: torch.device, dtype: torch.dtype, max_bytes: int = 8 << 20) -> None:
        import torch.distributed._symmetric_memory as symm_mem

        self.group_name = dist.group.WORLD.group_name
        # One buffer for tensors copied in and out, two that row-parallel layers multiply into (no copies).
        self.buffer, *self.slots = (symm_mem.empty(max_bytes // dtype.itemsize, dtype=dtype, device=device)
                                    for _ in range(3))
        self._symm_mem = symm_mem
        self.in_place_calls = 0  # sums of tensors already in a slot (the tests check that this path runs)

    def rendezvous(self) -> None:
        """Exchange the buffers' handles (every rank at once)."""
        for buffer in (self.buffer, *self.slots):
            self._symm_mem.rendezvous(buffer, self.group_name)

    def accepts(self, x: torch.Tensor) -> bool:
        return (x.is_cuda and x.dtype == self.buffer.dtype and 0 < x.numel() <= self.buffer.numel()
                and (x.numel() * x.element_size()) % 16 == 0 and x.is_contiguous())

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
        part = self.buffer[: x.numel()].copy_(x.view(-1))
        torch.ops.symm_mem.two_shot_all_reduce_(part, "sum", self.group_name)
        return x.view(-1).copy_(part).view(x.shape)


def _all_ranks_agree(ok: bool, device: torch.device) -> bool:
    flag = torch.tensor([1 if ok else 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def enable_peer_all_reduce(device: torch.device, dtype: torch.dtype, choice: str = "auto") -> str:
    """Use PeerMemoryAllReduce for small all-reduces if every rank can set it up and it sums correctly (checked
    once, here), else stay with NCCL; returns the path taken. Every rank must call this: the ranks agree after
    each stage (allocate, exchange handles, a probe sum), so that no rank waits in a stage another one left.
    ``choice``: the ``all_reduce`` knob, auto (peer memory where it works), nccl, or for comparison peer-copy
    (row-parallel outputs copied in and out), peer-oneshot (those summed one-shot: 1 barrier, each reads all)."""
    global _peer_tried_in_this_process
    use_peer_all_reduce(None)
    version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    if choice == "nccl" or dtype not in (torch.bfloat16, torch.float16) or version < (2, 11):
        return "nccl"  # (older symmetric-memory APIs differ)
    # A second engine in the same caller process (a notebook cell run twice): PyTorch's symmetric memory then
    # waited 120 s in its rendezvous and failed (seen twice on H200 x2, torch 2.11), so rank 0 says no at once and
    # every rank stays with NCCL. The ranks agree on that before any of them allocates: a worker must not allocate
    # symmetric memory that rank 0 never will (an allocation may wait for every rank, and so may freeing it).
    if not _all_ranks_agree(not _peer_tried_in_this_process, device):
        if tp_rank() == 0:  # (the workers are new processes: the caller's notebook is the one to restart)
            warnings.warn("this process already tried to set up the peer-memory all-reduce for an earlier "
                          "engine, and PyTorch cannot set it up twice: this engine's all-reduces go through NCCL "
                          "(slower decode); start a new Python process (restart the kernel) for the faster path")
        return "nccl"
    candidate = None
    with suppress(Exception):
        candidate = PeerMemoryAllReduce(device, dtype)
    if not _all_ranks_agree(candidate is not None, device):
        return "nccl"
    _peer_tried_in_this_process = True  # from the first rendezvous on, whatever its outcome
    exchanged = False
    with suppress(Exception):
        candidate.rendezvous()
        exchanged = True
    if not _all_ranks_agree(exchanged, device):
        return "nccl"
    # A known sum through the copy path and through each slot, summed in place (or one-shot).
    probes = [torch.full((4096,), float(tp_rank() + 1), dtype=dtype, device=device)]
    probes += [candidate.output_slot(slot, (4096,), dtype).fill_(tp_rank() + 1) for slot in (0, 1)]
    one_shot = choice == "peer-oneshot"
    try:
        sums = [candidate(probe, one_shot) for probe in probes]
        ok = all(bool((total == tp_size() * (tp_size() + 1) / 2).all()) for total in sums)
        ok = ok and candidate.in_place_calls == 2
    except Exception:  # (an operator this torch lacks fails on every rank alike, before any kernel runs)
        ok = False
    if not _all_ranks_agree(ok, device):
        return "nccl"
    # every rank must take the same path for the same call: in-place sums only if all ranks agree
    in_place, one_shot = _all_ranks_agree(choice != "peer-copy", device), _all_ranks_agree(one_shot, device)
    use_peer_all_reduce(candidate, in_place, one_shot)
    return "peer"


def disable_peer_all_reduce(after_failure: bool = False) -> None:
    """Back to NCCL alone. After a rank died this GPU may be stuck in a peer-memory kernel, and
    unmapping the shared buffer would wait for it forever: then the buffer is kept until the process ends."""
    if after_failure and comm._peer_all_reduce is not None:
        _failed_peer_buffers.append(comm._peer_all_reduce)
    use_peer_all_reduce(None)


def peer_buffer_kept() -> bool:
    """True once a rank died with the peer-memory all-reduce on (this GPU may be stuck in its kernel)."""
    return bool(_failed_peer_buffers)


def alternate_output_slots(model: torch.nn.Module) -> None:
    """Give the row-parallel layers, in the order they run (o_proj, down_proj, o_proj, ...), the two
    shared buffers in turn, counted alike on every rank (see ``comm.all_reduce_output``)."""
    for i, layer in enumerate([m for m in model.modules() if isinstance(m, RowParallelLinear)]):
        layer.output_slot = i % 2
