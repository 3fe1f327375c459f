"""Which backend the ``attention_backend`` knob names, and what ``auto`` picks."""

from __future__ import annotations

import importlib.util

import torch

from nanoinfer.attention.base import AttentionBackend


def make_attention_backend(name: str, device: torch.device, block_size: int,
                           dtype: torch.dtype = torch.bfloat16) -> AttentionBackend:
    """The backend called ``name`` (EngineConfig has checked it against the device); ``auto`` picks the
    fastest one available: on a CPU the C kernel when it builds; on a GPU flash_attn when it is installed
    and suits the blocks (multiples of 256 tokens) and the dtype (16-bit), else triton."""
    if name == "auto" and device.type == "cpu":
        from nanoinfer.attention.cpu_backend import kernel_available

        name = "cpu" if kernel_available() else "torch"
    elif name == "auto":
        flash = block_size % 256 == 0 and dtype.itemsize == 2 and importlib.util.find_spec("flash_attn") is not None
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

