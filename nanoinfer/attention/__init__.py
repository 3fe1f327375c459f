"""Attention backends: one protocol (base.py), the plain-PyTorch reference (torch_backend.py), the
flash-attn integration (flash_backend.py), and two fast paths, a C kernel for CPUs (cpu_backend.py) and
Triton kernels for GPUs (triton_backend.py).

  torch       the float32 reference; runs anywhere
  naive       the reference with the score matrix written out (Exercise 3.1), for comparison
  cpu         the reference with decode attention and the KV write in C (the CPU default)
  triton      Triton kernels (GPU; on a CPU they run in Triton's interpreter, for tests)
  flash_attn  the flash-attn package (GPU, when installed)
"""

from __future__ import annotations

import importlib.util

import torch

from nanoinfer.attention.base import AttentionBackend


def make_attention_backend(name: str, device: torch.device, block_size: int) -> AttentionBackend:
    """The backend called ``name`` (EngineConfig has checked it against the device); ``auto`` picks the
    fastest one available: on a CPU the C kernel when it builds; on a GPU flash_attn when it is installed
    and the blocks suit its paged kernels (multiples of 256 tokens), else triton."""
    if name == "auto" and device.type == "cpu":
        from nanoinfer.attention.cpu_backend import kernel_available

        name = "cpu" if kernel_available() else "torch"
    elif name == "auto":
        flash = block_size % 256 == 0 and importlib.util.find_spec("flash_attn") is not None
        name = "flash_attn" if flash else "triton" if importlib.util.find_spec("triton") else "torch"
    if name == "cpu":
        from nanoinfer.attention.cpu_backend import CpuAttentionBackend, kernel_available

        if not kernel_available():
            raise RuntimeError("attention_backend='cpu' needs a C compiler with OpenMP (cc) to build its kernel; "
                               "use 'torch' instead")
        return CpuAttentionBackend()
    if name in ("torch", "naive"):
        from nanoinfer.attention.torch_backend import TorchAttentionBackend

        return TorchAttentionBackend(naive=name == "naive")
    if name == "triton":
        from nanoinfer.fast.triton_interpreter import use_interpreter_on_cpu

        use_interpreter_on_cpu(device)
        from nanoinfer.attention.triton_backend import TritonAttentionBackend

        return TritonAttentionBackend()
    from nanoinfer.attention.flash_backend import FlashAttentionBackend

    return FlashAttentionBackend()

