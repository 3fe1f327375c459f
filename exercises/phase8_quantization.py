"""Phase 8 — int8 weight-only quantization. Your code for Exercise 8.2.

Check your work with ``make check EX=8.2`` (or ``python -m nanoinfer.check 8.2``).
Selected, your ``quantize_per_channel`` quantizes the real model's linear layers when an engine is built with
``quantization="int8"`` (nanoinfer/quantization.py calls it on every weight, each rank on its shard).
"""

from __future__ import annotations

import torch  # noqa: F401


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exercise 8.2: symmetric per-output-channel int8 quantization of a weight [out_features, in_features].

    Return ``(q, scale)``: ``q`` int8 of the weight's shape with values in [-127, 127] (symmetric: no zero
    point, and -128 unused), ``scale`` float32 [out_features], one per row, such that ``q * scale[:, None]``
    approximates the weight. Each row's scale is the row's largest magnitude divided by 127, so that this
    element maps to +-127 and rounding to the nearest integer errs by at most ``scale / 2`` per element.
    An all-zero row must give q = 0 and a finite, positive scale (no division by zero). Work in float32
    whatever the weight's dtype (bfloat16 weights included).
    """
    raise NotImplementedError("Exercise 8.2: write quantize_per_channel(weight)")


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Exercise 8.2: the float32 weight that ``(q, scale)`` stands for: each row of q times its scale."""
    raise NotImplementedError("Exercise 8.2: write dequantize(q, scale)")
