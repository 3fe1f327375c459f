"""Phase 8 — serving: Exercise 8.3, requests that arrive while the engine runs (the load generator's own code)."""

from __future__ import annotations

# The engine's own reference code: the in-process load generator runs these (nanoinfer/serving/loadgen.py).
from nanoinfer.serving.loadgen import PERCENTILES, arrival_times, simulate_arrivals  # noqa: F401  Exercise 8.3
