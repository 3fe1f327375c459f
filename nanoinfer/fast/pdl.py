"""Programmatic dependent launch (PDL, Hopper and later) for the short Triton kernels of a decode step.

A kernel normally starts only when the one before it in the stream has finished and flushed its writes: between
two kernels of a few microseconds the GPU idles while the next one is launched and its first loads travel. A kernel
launched with PDL may start as soon as every program of the kernel before it has signalled
(``gdc_launch_dependents``). It must then call ``gdc_wait`` before it reads anything that kernel wrote, and before
it writes anything: ``gdc_wait`` returns when the kernel before has completed and its memory is visible. Work that
needs no result of the kernel before (the weights of a matmul, a step's positions, the older cached keys and
values) goes ahead of the wait.

Those early loads of step inputs rely on one more rule: a kernel signals only after its own wait. A kernel that
starts early then finds every kernel before the one it waits for complete, so only that one may still be writing.
A kernel that signalled before its wait, or a library kernel launched with PDL that does, would break them.

Every kernel that takes ``launch_options`` follows that rule: it waits before its first dependent load or store and
signals right after. CUDA graphs record the launch attribute, so replays keep the overlap: an H200 replayed
qwen3-0.6b's batch-1 decode graph (about 200 kernels) in 0.66 ms with it and 0.85 without (h200_skinny_sweep.json).
"""

from __future__ import annotations

from functools import cache

import torch

ENABLED = True  # scripts/skinny_sweep.py turns it off to measure what it gains


def launch_options(device: torch.device) -> dict:
    """Keyword arguments for a Triton launch on ``device``: ``launch_pdl`` where the card has PDL (an NVIDIA card of
    compute capability 9.0 or more), else none. A kernel's ``USE_PDL`` constexpr is ``bool(launch_options(...))``."""
    if not ENABLED or device.type != "cuda" or torch.version.hip or not _has_pdl(
            device.index if device.index is not None else torch.cuda.current_device()):
        return {}
    return {"launch_pdl": True}


@cache
def _has_pdl(index: int) -> bool:
    return torch.cuda.get_device_capability(index)[0] >= 9
