"""Phase 8 — int8 weight-only quantization: per-channel quantize and dequantize (8.2, the engine's own code)."""

from __future__ import annotations

# The engine's own reference code for the exercise it runs at a hook (nanoinfer/workbook/registry.py).
from nanoinfer.quantization import dequantize, quantize_per_channel  # noqa: F401  Exercise 8.2
