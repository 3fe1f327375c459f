"""Float32 matrix products on the CPU with weights packed once, at load time, by oneDNN.

``F.linear(x, w)`` hands the GEMM library the weight as stored, [out, in], and the library copies it into its
tiled layout on every call: a decode step (a few rows times every weight) repeats that copy for every weight
while the weights stream from memory. oneDNN can copy once (``_reorder_linear_weight``) and multiply by that.

Measured on this project's 2-core Xeon, SmolLM2-135M's 30 layers (weights read from DRAM, not cache):
8 rows 35 -> 27 ms, 12 rows 45 -> 31 ms, 32 rows 49 -> 43 ms; its LM head at 12 rows 16 -> 7 ms.
At 1-3 rows the plain call is faster there (a matrix-vector kernel; not on every CPU: on an AMD EPYC the packed
copy won at 1 row too); from ~512 rows (prefill) the copy is amortised and both are equal. Those calls use the
original weight, kept beside the packed copy: twice the weight memory (``pack_cpu_weights=False`` for a model
that barely fits). The copy is made once: a weight changed in place afterwards would disagree with it.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

MIN_ROWS, MAX_ROWS = 4, 512  # outside this range, F.linear on the original weight is as fast or faster


def packing_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def pack_weight(weight: torch.Tensor) -> torch.Tensor | None:
    """oneDNN's packed copy of a float32 [out, in] CPU weight, or None where packing does not apply."""
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or not packing_available():
        return None
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 32)  # 32: the row count it tunes for


def packed_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                  packed: torch.Tensor) -> torch.Tensor:
    """``F.linear`` that multiplies by ``packed`` (``pack_weight(weight)``) when there are enough rows."""
    if x.dim() != 2 or not MIN_ROWS <= x.shape[0] <= MAX_ROWS:
        return F.linear(x, weight, bias)
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def pack_model_weights(model: torch.nn.Module) -> int:
    """Point every layer that multiplies with ``F.linear`` (linears, LM head) at its packed weight; how many."""
    count = 0
    for module in model.modules():
        packed = pack_weight(module.weight) if getattr(module, "op", None) is F.linear else None
        if packed is not None:
            module.op = partial(packed_linear, packed=packed)
            count += 1
    return count
