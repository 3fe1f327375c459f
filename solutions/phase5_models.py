"""Phase 5 — model implementation: the small ops every decoder layer runs, and GGUF's rotary layout.

All three run inside the engine: their reference is the engine's own code (nanoinfer/workbook/registry.py
names the hooks)."""

from nanoinfer.layers.layernorm import rms_norm  # noqa: F401  Exercise 5.1
from nanoinfer.layers.rotary_embedding import apply_rotary  # noqa: F401  Exercise 5.2
from nanoinfer.tools.convert import unpermute_qk  # noqa: F401  Exercise 5.5
