"""A fix for Triton's CPU interpreter (``TRITON_INTERPRET=1``), applied on import when it is needed.

Triton 3.6's interpreter turns a loop bound into an int with int(array), which NumPy >= 2.4 refuses for
its one-element arrays, so every kernel loop whose bound is read at run time fails there
(triton-lang/triton#9171, fixed upstream by #9172). Compiled GPU kernels are not concerned.
"""

from __future__ import annotations

import os

import numpy as np


def _fix_interpreter_loop_bounds() -> None:
    from triton.runtime import interpreter

    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "fixes_loop_bounds", False):
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


if os.environ.get("TRITON_INTERPRET") == "1" and _int_of_array_fails():
    _fix_interpreter_loop_bounds()
