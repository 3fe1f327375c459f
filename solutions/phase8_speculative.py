"""Phase 8 — speculative decoding: the reference answer to Exercise 8.1."""

from __future__ import annotations

# The engine's own reference code for the exercise it runs at a hook (nanoinfer/workbook/registry.py).
from nanoinfer.speculative.rejection import rejection_sample  # noqa: F401  Exercise 8.1
