"""Phase 7 — benchmarking and profiling: the engine's own code is the reference for all three exercises."""

from __future__ import annotations

import pandas as pd  # noqa: F401

from nanoinfer.tools.bench import pick_settings, run_suite  # noqa: F401  Exercises 7.1 and 7.3
from nanoinfer.tools.profiling import classify_profile  # noqa: F401  Exercise 7.2
