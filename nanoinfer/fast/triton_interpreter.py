"""Triton's interpreter on a CPU (``TRITON_INTERPRET=1``), and a fix for it applied when it is in use.

Triton has no CPU backend: on a CPU its kernels run in its interpreter (NumPy), which is chosen when a
kernel is defined, at its module's import. ``use_interpreter_on_cpu`` turns it on before the first one.

Triton 3.6's interpreter turns a loop bound into an int with int(array), which NumPy >= 2.4 refuses: every kernel
loop whose bound is read at run time fails there (triton-lang/triton#9171, fixed upstream by #9172).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

KERNEL_MODULES = ("nanoinfer.attention.store_triton", "nanoinfer.attention.triton_backend",
                  "nanoinfer.fast.qk_prologue_triton", "nanoinfer.fast.sampler_triton")


def _fix_interpreter_loop_bounds() -> None:
    from triton.runtime import interpreter

    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "fixes_loop_bounds", False) or not _int_of_array_fails():
        return

    def patch(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patch.fixes_loop_bounds = True
    interpreter._patch_lang_tensor = patch


def _int_of_array_fails() -> bool:
    try:
        int(np.zeros(1))
        return False
    except TypeError:
        return True


def interpreter_problem(device: torch.device) -> str | None:
    """Why Triton's kernels cannot run on ``device`` in this process (EngineConfig names the knob), or None.
    The switch is process-wide: made only where no GPU could need compiled kernels (slow: for tests)."""
    if device.type != "cpu" or os.environ.get("TRITON_INTERPRET") == "1":
        return None
    if torch.cuda.is_available():
        return ("on a CPU Triton's kernels run in its interpreter, and on a machine with a GPU nanoinfer does not "
                "switch the whole process to it: start Python with TRITON_INTERPRET=1, or use the GPU")
    compiled = [name for name in KERNEL_MODULES if name in sys.modules and any(
        type(value).__name__ == "JITFunction" for value in vars(sys.modules[name]).values())]
    if compiled:
        return (f"on a CPU Triton's kernels run in its interpreter, but {compiled[0]} was imported without it: "
                "start a new Python process, or set TRITON_INTERPRET=1 before importing it")
    return None


def use_interpreter_on_cpu(device: torch.device) -> None:
    """Before a Triton kernel module is imported: on a CPU (EngineConfig checked that it may), the interpreter."""
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        os.environ["TRITON_INTERPRET"] = "1"
        _fix_interpreter_loop_bounds()


if os.environ.get("TRITON_INTERPRET") == "1":
    _fix_interpreter_loop_bounds()
