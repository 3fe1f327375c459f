"""Attention backends: one protocol (base.py), the plain-PyTorch reference (torch_backend.py), the
flash-attn integration (flash_backend.py), and two fast paths, a C kernel for CPUs (cpu_backend.py) and
Triton kernels for GPUs (triton_backend.py, store_triton.py); backends.py makes the one a knob names.

  torch       the float32 reference; runs anywhere
  naive       the reference with the score matrix written out (Exercise 3.1), for comparison
  cpu         the reference with decode attention and the KV write in C (the CPU default)
  triton      Triton kernels (GPU; on a CPU they run in Triton's interpreter, for tests)
  flash_attn  the flash-attn package (GPU, when installed)
"""
